"""Driver JVM settings against the bronze floor on a cold JVM: bench/freshness.py run with each
setting in turn, alternating (A, B, A, B, ...), in one run of this script.

    .venv/bin/python bench/jvm_settings.py [--rounds 2] [--seconds 30]
        [--a ""] [--b "-XX:TieredStopAtLevel=1"] [-- extra freshness.py args]

Each freshness run is a fresh process (a cold JVM: Spark's and Delta's paths are JIT-compiled
while it runs). Prints, per setting, the median over rounds of: the 1-record batch median, the
batch median / p95 and the freshness p50 / p95 of each rate phase; then B / A for each.
Progress lines go to stderr; a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _say(msg: str) -> None:
    print(f"[jvm-settings] {msg}", file=sys.stderr, flush=True)


def _figures(run: dict) -> dict[str, float]:
    out = {"single batch median s": run["single"]["batch_s"]["median"]}
    for key, phase in run.items():
        if key.startswith("rate_"):
            rate = key.split("_", 1)[1]
            out[f"{rate}/s batch median s"] = phase["batch_s"]["median"]
            out[f"{rate}/s batch p95 s"] = phase["batch_s"]["p95"]
            out[f"{rate}/s freshness p50 s"] = phase["freshness_s"]["p50"]
            out[f"{rate}/s freshness p95 s"] = phase["freshness_s"]["p95"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--a", default="", help="driver JVM options of setting A (default: none)")
    p.add_argument("--b", default="-XX:TieredStopAtLevel=1", help="driver JVM options of setting B")
    p.add_argument("rest", nargs="*", help="more bench/freshness.py arguments (after --)")
    args = p.parse_args(argv)
    settings = {"A": args.a, "B": args.b}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="shopstream-jvm-") as tmp:
        for rnd in range(args.rounds):
            for name, opts in settings.items():
                out = Path(tmp) / f"{name}-{rnd}.json"
                cmd = [sys.executable, str(HERE / "freshness.py"), "--seconds", str(args.seconds),
                       "--out", str(out), *args.rest]
                if opts:   # with "=": argparse would read a value starting with "-" as an option
                    cmd += [f"--driver-java-options={opts}"]
                _say(f"round {rnd + 1}/{args.rounds}, setting {name} ({opts or 'defaults'})")
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                runs[name].append(_figures(json.loads(out.read_text())))
                _say(f"  {runs[name][-1]}")
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    summary = {"settings": settings, "rounds": args.rounds, "runs": runs, "medians": medians,
               "b_over_a": {k: round(medians["B"][k] / medians["A"][k], 3) for k in medians["A"] if medians["A"][k]}}
    for k, ratio in summary["b_over_a"].items():
        _say(f"{k}: A {medians['A'][k]} / B {medians['B'][k]} -> B/A {ratio}")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
