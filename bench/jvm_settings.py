"""Two variants of the bronze floor side by side: bench/freshness.py run with each in turn,
alternating (A, B, B, A, A, B, ...), in one run of this script. A variant is a driver JVM setting
and/or the code of a git revision (its `lib/` first on PYTHONPATH, from a temporary worktree).

    .venv/bin/python bench/jvm_settings.py [--rounds 2] [--seconds 30]
        [--a ""] [--b "-XX:TieredStopAtLevel=1"] [--a-rev REV] [--b-rev REV]
        [--a-args "freshness.py args"] [--b-args "..."] [-- extra freshness.py args of both]

e.g. the code before a change against now, same JVM settings; a stream setting of B's alone:
    .venv/bin/python bench/jvm_settings.py --a-rev HEAD~1 --b "" -- --warmup 120 --rates 700
    .venv/bin/python bench/jvm_settings.py --b "" --b-args "--interpreted-below-records 5000" -- --rates 200 2000

Each freshness run is a fresh process (a cold JVM: Spark's and Delta's paths are JIT-compiled
while it runs). Prints, per setting, the median over rounds of: the 1-record batch median, the
batch median / p95 and the freshness p50 / p95 of each rate phase; then B / A for each.
Progress lines go to stderr; a JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
            near = phase.get("batch_s_2000_records") or {}
            if near.get("batches"):
                out[f"{rate}/s 1,800-2,200-record batches"] = near["batches"]
                out[f"{rate}/s 2,000-record batch median s"] = near["median"]
                out[f"{rate}/s 2,000-record batch p95 s"] = near["p95"]
            events = phase.get("store_events") or {}
            if events:
                out[f"{rate}/s OPTIMIZE commits"] = sum(events["optimize_commits"].values())
                out[f"{rate}/s commit conflicts"] = events["commit_conflicts"]
    return out


def _lib_of(rev: str | None, tmp: Path, name: str) -> str | None:
    """The `lib/` folder of a git revision (a detached worktree under tmp), None: this checkout's."""
    if not rev:
        return None
    tree = tmp / f"rev-{name}"
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    # the code finds its jars (Spark packages, the Kafka broker) under the checkout's .cache
    (tree / ".cache").symlink_to(HERE.parent / ".cache", target_is_directory=True)
    return str(tree / "lib")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--a", default="", help="driver JVM options of setting A (default: none)")
    p.add_argument("--b", default="-XX:TieredStopAtLevel=1", help="driver JVM options of setting B")
    p.add_argument("--a-rev", default=None, help="git revision whose lib/ variant A runs (default: this checkout)")
    p.add_argument("--b-rev", default=None, help="git revision whose lib/ variant B runs (default: this checkout)")
    p.add_argument("--a-args", default="", help="bench/freshness.py arguments of variant A only (one string)")
    p.add_argument("--b-args", default="", help="bench/freshness.py arguments of variant B only (one string)")
    p.add_argument("rest", nargs="*", help="more bench/freshness.py arguments (after --)")
    args = p.parse_args(argv)
    settings = {"A": args.a, "B": args.b}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="shopstream-jvm-") as tmp:
        libs = {"A": _lib_of(args.a_rev, Path(tmp), "A"), "B": _lib_of(args.b_rev, Path(tmp), "B")}
        for rnd in range(args.rounds):
            for name in (["A", "B"] if rnd % 2 == 0 else ["B", "A"]):
                opts = settings[name]
                env = dict(os.environ)
                if libs[name]:
                    env["PYTHONPATH"] = os.pathsep.join([libs[name], *filter(None, [env.get("PYTHONPATH")])])
                out = Path(tmp) / f"{name}-{rnd}.json"
                cmd = [sys.executable, str(HERE / "freshness.py"), "--seconds", str(args.seconds),
                       "--out", str(out), *args.rest, *shlex.split(getattr(args, name.lower() + "_args"))]
                if opts:   # with "=": argparse would read a value starting with "-" as an option
                    cmd += [f"--driver-java-options={opts}"]
                _say(f"round {rnd + 1}/{args.rounds}, variant {name} ({opts or 'JVM defaults'}, "
                     f"code of {getattr(args, name.lower() + '_rev') or 'this checkout'})")
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
                runs[name].append(_figures(json.loads(out.read_text())))
                _say(f"  {runs[name][-1]}")
    medians = {name: {k: statistics.median(r[k] for r in rs if k in r) for k in dict.fromkeys(k for r in rs for k in r)}
               for name, rs in runs.items()}
    summary = {"settings": settings, "revisions": {"A": args.a_rev, "B": args.b_rev}, "rounds": args.rounds, "runs": runs, "medians": medians,
               "b_over_a": {k: round(medians["B"][k] / medians["A"][k], 3) for k in medians["A"]
                            if medians["A"][k] and k in medians["B"]}}
    for k, ratio in summary["b_over_a"].items():
        _say(f"{k}: A {medians['A'][k]} / B {medians['B'][k]} -> B/A {ratio}")
    print(json.dumps(summary, indent=2))
    for name in ("A", "B"):
        if libs[name]:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "prune"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
