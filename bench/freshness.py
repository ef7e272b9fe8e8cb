"""Bronze's per-batch floor and freshness, as a user running the stream as a service sees it.

    .venv/bin/python bench/freshness.py [--seconds 60] [--trigger "2 seconds"] [--warmup 0]
        [--rates 200 2000] [--fast-forward 0] [--keep-event-log DIR]

One run, one process for the stream (a real local broker, Delta on local disk):
0. --warmup S: the generator at the first rate for S seconds first, not measured (a service's JVM
   is warm; Spark's and Delta's paths keep being JIT-compiled for minutes after a start);
1. the bronze query starts (processing-time trigger, startingOffsets latest) on empty tables;
2. single records, one at a time, each waited for: the duration of a 1-record batch (the first
   two are warm-up and not counted);
3. the generator (jobs/generate_events.py, a separate process, --timestamps now) at 200 and
   then 2,000 events/s for --seconds each: the per-batch duration distribution of each phase,
   and freshness per record = the end of its batch's trigger (the checkpoint commit included)
   - its Kafka timestamp, p50 / p95;
4. where the seconds go: per phase, the median of each part of a batch (the query's own
   durationMs: offsets, planning, WAL, addBatch = the foreachBatch writer, commit; and inside
   the writer: routing + stats job, each MERGE, the lag lookup, the ledger row), and the Spark
   jobs per batch with their median durations from the event log;
5. --fast-forward N: N tiny batches (10 records each) through the writer on static data into
   one day's partitions, then the median batch time of the first 100 vs the last 100 (goal:
   within 1.2x).

Progress lines go to stderr; a JSON summary to stdout (and --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener

from shopstream import config as cfg
from shopstream import status
from shopstream.generator import FxTable, Params, generate
from shopstream.ingest import BronzeBatchWriter
from shopstream.kafka_local import LocalKafka
from shopstream.producer import publish
from shopstream.spark import build_session
from shopstream.stores.delta import DeltaStore
from shopstream.stream import StreamOptions, start_bronze, stop_gracefully

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {"orders": "orders", "clicks": "clicks"}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Progress(StreamingQueryListener):
    """Every progress event of the query: batch id, input rows, start, durations."""

    def __init__(self) -> None:
        self.batches: dict[int, dict] = {}
        self.cond = threading.Condition()

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        p = event.progress
        if "addBatch" not in dict(p.durationMs):   # a trigger without data
            return
        start = datetime.fromisoformat(p.timestamp.replace("Z", "+00:00")).timestamp()
        d = dict(p.durationMs)
        with self.cond:
            self.batches[p.batchId] = {"rows": p.numInputRows, "start": start,
                                       "end": start + d.get("triggerExecution", 0) / 1000, "durations": d}
            self.cond.notify_all()

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass

    def wait_rows(self, writer: BronzeBatchWriter, total: int, timeout_s: float) -> None:
        """Until the writer has seen `total` records and the progress of each of its batches has
        arrived. (Counts come from the writer: a foreachBatch query's numInputRows counts the
        source once per action on the batch, so it is not the record count.)"""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                seen = sum(sum(r.input_records.values()) for r in writer.results)
                if seen >= total and all(r.batch_id in self.batches for r in writer.results):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the stream read {seen} of {total} records in {timeout_s:.0f}s")
                self.cond.wait(min(left, 0.5))


def _generator(kafka, rate: int, seconds: int, seed: int) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "jobs" / "generate_events.py"), "--bootstrap-servers",
           kafka.bootstrap_servers, "--events", str(rate * seconds), "--rate", str(rate),
           "--timestamps", "now", "--seed", str(seed), "--start-date", "2026-11-01"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})


def _sent(proc: subprocess.Popen) -> tuple[int, float]:
    _out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"generator failed: {err[-2000:]}")
    for line in reversed(err.splitlines()):
        m = re.match(r"sent ([\d,]+) records in [\d.]+s \(([\d,]+)/s\), all acknowledged", line)
        if m:
            return int(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))
    raise RuntimeError(f"no 'sent N records' line from the generator: {err[-500:]}")


def _job_breakdown(event_dir: Path, windows: list[tuple[float, float]]) -> dict:
    """Spark jobs (from the event log) whose submission falls in one of the batch windows:
    per call site, jobs per batch and the median job duration."""
    starts, ends = {}, {}
    for f in (f for f in event_dir.rglob("*") if f.is_file()):
        with open(f) as fh:
            for line in fh:
                if '"SparkListenerJobStart"' in line:
                    e = json.loads(line)
                    props = e.get("Properties") or {}
                    site = props.get("spark.job.description") or props.get("callSite.short") or "?"
                    # Delta names its state reconstructions "Compute snapshot for version: N"
                    site = "delta: compute snapshot (state reconstruction)" if "Compute snapshot" in site \
                        else site.split(": ")[-1]
                    starts[e["Job ID"]] = (e["Submission Time"] / 1000, site)
                elif '"SparkListenerJobEnd"' in line:
                    e = json.loads(line)
                    ends[e["Job ID"]] = e["Completion Time"] / 1000
    per_site: dict[str, list[float]] = defaultdict(list)
    total_ms: list[float] = []
    for lo, hi in windows:
        in_batch = [(j, s) for j, (t, s) in starts.items() if lo <= t <= hi and j in ends]
        total_ms.append(sum((ends[j] - starts[j][0]) * 1000 for j, _ in in_batch))
        for j, s in in_batch:
            per_site[s].append((ends[j] - starts[j][0]) * 1000)
    n = max(1, len(windows))
    return {"jobs_per_batch": round(sum(len(v) for v in per_site.values()) / n, 1),
            "job_ms_per_batch_median": round(statistics.median(total_ms), 0) if total_ms else None,
            "by_call_site": {s: {"per_batch": round(len(v) / n, 2), "median_ms": round(statistics.median(v), 0)}
                             for s, v in sorted(per_site.items(), key=lambda kv: -sum(kv[1]))[:12]}}


def _slowest_parts(batches: dict, writer: BronzeBatchWriter) -> dict:
    """Median of each part of a batch (as in the phase's median_ms) over its slowest 10 % of
    batches (at least one), with their record counts."""
    if not batches:
        return {}
    by_time = sorted(batches, key=lambda i: batches[i]["end"] - batches[i]["start"], reverse=True)
    slow = set(by_time[:max(1, len(by_time) // 10)])
    parts: dict[str, list[float]] = defaultdict(list)
    for i in slow:
        parts["batch_s"].append(round(batches[i]["end"] - batches[i]["start"], 2))
        for k, v in batches[i]["durations"].items():
            parts[f"query.{k}"].append(v)
    for r in writer.results:
        if r.batch_id in slow:
            parts["records"].append(sum(r.input_records.values()))
            for k, v in r.timings_ms.items():
                parts[f"writer.{k}"].append(v)
    return {k: statistics.median(v) for k, v in sorted(parts.items())}


class StoreEvents(logging.Handler):
    """When the writer's side work compacted a table and when a write lost its commit to a
    concurrent one (the store runs it again): (time.time(), kind) from the shopstream logs."""

    KINDS = {"compacted": "compactions", "commit lost to a concurrent transaction": "commit_conflicts"}

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for needle, kind in self.KINDS.items():
            if needle in text:
                self.events.append((record.created, kind))

    def between(self, start: float, end: float) -> dict[str, int]:
        return {kind: sum(1 for t, k in self.events if k == kind and start <= t <= end)
                for kind in self.KINDS.values()}


STORE_EVENTS = StoreEvents()


def _store_events(store: DeltaStore, batches: dict) -> dict:
    """Within the phase: the bronze tables' OPTIMIZE commits (the side work's compactions, or
    Delta's auto compaction inside a write, whichever the code makes) from their history, and
    the writes that lost their commit to a concurrent one (from the logs)."""
    start = min((b["start"] for b in batches.values()), default=0)
    end = max((b["end"] for b in batches.values()), default=0)
    optimizes = {}
    for t in ("bronze_orders", "bronze_clicks", "bronze_quarantine", "bronze_batches"):
        times = [r.ts for r in store.spark.sql(f"DESCRIBE HISTORY delta.`{store.path(t)}`")
                 .where("operation = 'OPTIMIZE'").select(F.unix_millis("timestamp").alias("ts")).collect()]
        optimizes[t] = sum(1 for ms in times if start <= ms / 1000 <= end)
    return {"optimize_commits": optimizes,
            "commit_conflicts": STORE_EVENTS.between(start, end)["commit_conflicts"]}


def _near_2000(batches: dict, rows: dict) -> dict:
    near = [b["end"] - b["start"] for i, b in batches.items() if 1800 <= rows.get(i, 0) <= 2200]
    return {"batches": len(near), "median": round(statistics.median(near), 2) if near else None,
            "p95": round(pct(near, 0.95), 2) if near else None}


def _phase(name: str, ids: list[int], progress: Progress, writer: BronzeBatchWriter, store: DeltaStore) -> dict:
    batches = {i: progress.batches[i] for i in ids}
    rows = {r.batch_id: sum(r.input_records.values()) for r in writer.results if r.batch_id in batches}
    durations = [b["end"] - b["start"] for b in batches.values()]
    fresh = []
    if ids:
        ends = {i: b["end"] for i, b in batches.items()}
        for t in ("bronze_orders", "bronze_clicks", "bronze_quarantine"):
            for row in (store.read(t).where(F.col("batch_id").isin(ids))
                        .select("batch_id", (F.unix_micros("kafka_timestamp") / 1e6).alias("ts")).collect()):
                fresh.append(ends[row.batch_id] - row.ts)
    parts: dict[str, list[float]] = defaultdict(list)
    for b in batches.values():
        for k, v in b["durations"].items():
            parts[f"query.{k}"].append(v)
    for r in writer.results:
        if r.batch_id in batches:
            for k, v in r.timings_ms.items():
                parts[f"writer.{k}"].append(v)
    out = {"phase": name, "batches": len(ids), "records": sum(rows.values()),
           "records_per_batch_median": statistics.median(rows.values()) if ids else 0,
           "batch_s": {"median": round(statistics.median(durations), 2) if durations else None,
                       "p95": round(pct(durations, 0.95), 2), "max": round(max(durations, default=0), 2)},
           # the goal's own batch size: batches of 1,800-2,200 records, whatever the phase (a slow
           # batch makes the next one larger, so a phase's p95 is also its largest batches')
           "batch_s_2000_records": _near_2000(batches, rows),
           "freshness_s": {"p50": round(pct(fresh, 0.5), 2), "p95": round(pct(fresh, 0.95), 2),
                           "records": len(fresh)},
           "median_ms": {k: statistics.median(v) for k, v in sorted(parts.items())},
           # compactions by the side work, and MERGEs run again after losing their commit to one
           "store_events": _store_events(store, batches),
           # what makes the p95: the same parts over the slowest tenth of the batches
           "slowest_tenth_median_ms": _slowest_parts(batches, writer),
           # filled in after the session stops (the event log is complete then)
           "windows": [(b["start"], b["end"]) for b in batches.values()]}
    say(f"{name}: {out['batches']} batches, {out['records']} records (median {out['records_per_batch_median']}/batch); "
        f"batch s median {out['batch_s']['median']} p95 {out['batch_s']['p95']}; "
        f"freshness s p50 {out['freshness_s']['p50']} p95 {out['freshness_s']['p95']}; {out['store_events']}")
    return out


def stream_phases(spark, conf, args, work: Path) -> dict:
    kafka = LocalKafka(work / "kafka", partitions=3, heap="512m", conf=conf).start()
    say(f"broker up on {kafka.bootstrap_servers}")
    progress = Progress()
    spark.streams.addListener(progress)
    store = DeltaStore(spark, work / "wh")
    try:
        kafka.create_topics(list(TOPICS.values()))
        opts = StreamOptions(bootstrap_servers=kafka.bootstrap_servers, topics=TOPICS, checkpoint=work / "cp",
                             trigger=args.trigger, starting_offsets="latest", max_offsets_per_trigger=500_000,
                             **({"interpreted_below_records": args.interpreted_below_records}
                                if args.interpreted_below_records is not None else {}))
        query, writer = start_bronze(spark, store, opts,   # the lag lookup, as jobs/bronze_stream.py does
                                     lambda: status.broker_latest_offsets(kafka.bootstrap_servers, list(TOPICS.values())))
        try:
            deadline = time.monotonic() + 120
            while query.lastProgress is None:   # the first (empty) trigger fixes "latest"
                if time.monotonic() > deadline or not query.isActive:
                    raise RuntimeError(f"the query made no first trigger: {query.exception()}")
                query.awaitTermination(0.2)
            total = 0
            if args.warmup:
                # a service has been running: the JVM's JIT has compiled Spark's and Delta's paths by
                # then (a route + stats loop took ~680 ms in its first 30 s, ~400 ms after 3 min)
                say(f"warm-up: generator at {args.rates[0]} events/s for {args.warmup}s (not counted)")
                sent, _ = _sent(_generator(kafka, args.rates[0], args.warmup, seed=1))
                total += sent
                progress.wait_rows(writer, total, 600)
            records, _ = generate(Params(start_date=date(2026, 11, 1), days=1, sessions=None, events=50, seed=3),
                                  FxTable(conf.path("paths.fx_rates")))
            records = [r for r in records if r.topic == "clicks"]
            single = []
            say(f"single records: {args.singles} (2 warm-up)")
            for i in range(args.singles):
                before = set(progress.batches)
                r = records[i]
                publish([type(r)(r.topic, r.key, r.value, int(time.time() * 1000))], kafka.bootstrap_servers,
                        TOPICS, progress=lambda _line: None)
                total += 1
                progress.wait_rows(writer, total, 120)
                new = [b for b in progress.batches if b not in before]
                if i >= 2:
                    single.extend(new)
            out = {"single": _phase("1-record batches", single, progress, writer, store)}
            for rate in args.rates:
                before = set(progress.batches)
                say(f"generator at {rate} events/s for {args.seconds}s")
                sent, actual = _sent(_generator(kafka, rate, args.seconds, seed=rate))
                total += sent
                progress.wait_rows(writer, total, 600)
                ids = sorted(b for b in progress.batches if b not in before)
                out[f"rate_{rate}"] = _phase(f"{rate} events/s", ids, progress, writer, store)
                out[f"rate_{rate}"]["generator_events_per_s"] = actual
        finally:
            stop_gracefully(query)
            writer.close()
            writer.checkpoint_lock.release()
        return out
    finally:
        spark.streams.removeListener(progress)
        kafka.stop()


def fast_forward(spark, conf, n: int, work: Path) -> dict:
    """n batches of 10 records each straight through the writer (static, Kafka-shaped rows).

    The records are routed once up front and each batch is a slice of that routed table, as in
    the stream, where the routing plan is built once and each micro-batch arrives routed; the
    writer's per-batch work (stats, MERGEs, ledger) is what is timed."""
    records, _ = generate(Params(start_date=date(2026, 11, 1), days=1, sessions=None, events=n * 10, seed=11),
                          FxTable(conf.path("paths.fx_rates")))
    store = DeltaStore(spark, work / "wh-ff")
    writer = BronzeBatchWriter(store, TOPICS, 65536, "ff", "run")
    writer.ensure_tables()
    now = datetime.fromtimestamp(time.time())
    # one partition, offsets numbered across both topics: batch b is offsets [10b, 10b + 10)
    rows = [(r.key, r.value, r.topic, 0, i, now, 0) for i, r in enumerate(records)]
    schema = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, timestampType int"
    say(f"fast-forward: routing {len(rows):,} records once")
    routed = writer.prepare(spark.createDataFrame(rows, schema)).localCheckpoint()
    durations = []
    t0 = time.monotonic()
    for b in range(n):
        df = routed.where(F.col("kafka_offset").between(b * 10, b * 10 + 9))
        start = time.monotonic()
        writer(df, b)
        durations.append(time.monotonic() - start)
        if (b + 1) % 100 == 0:
            say(f"fast-forward: {b + 1}/{n} batches, last 100 median {statistics.median(durations[-100:]):.3f}s, "
                f"{time.monotonic() - t0:.0f}s so far")
    writer.close()   # the last batch's side work (warming, a compaction) has finished
    first, last = statistics.median(durations[:100]), statistics.median(durations[-100:])
    tables = ("bronze_orders", "bronze_clicks", "bronze_quarantine", "bronze_batches")
    files = {t: store.read(t).inputFiles().__len__() for t in tables}
    # the side work's compactions run beside the following batches: their cost shows in the mean and p95
    compactions = {t: spark.sql(f"DESCRIBE HISTORY delta.`{store.path(t)}`").where("operation = 'OPTIMIZE'").count()
                   for t in tables}
    mean_first, mean_last = statistics.fmean(durations[:100]), statistics.fmean(durations[-100:])
    out = {"batches": n, "first_100_median_s": round(first, 3), "last_100_median_s": round(last, 3),
           "ratio": round(last / first, 2),
           "first_100_mean_s": round(mean_first, 3), "last_100_mean_s": round(mean_last, 3),
           "mean_ratio": round(mean_last / mean_first, 2),
           "first_100_p95_s": round(pct(durations[:100], 0.95), 3), "last_100_p95_s": round(pct(durations[-100:], 0.95), 3),
           "files_at_end": files, "compactions": compactions,
           "commit_conflicts": STORE_EVENTS.between(0, time.time())["commit_conflicts"]}
    say(f"fast-forward: first 100 median {first:.3f}s, last 100 median {last:.3f}s, ratio {last / first:.2f} "
        f"(goal <= 1.2); means {mean_first:.3f}s -> {mean_last:.3f}s (ratio {mean_last / mean_first:.2f}); "
        f"files at the end {files}; compactions {compactions}; "
        f"commit conflicts {out['commit_conflicts']}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=60, help="seconds of generator traffic per rate")
    p.add_argument("--rates", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--singles", type=int, default=7, help="single-record batches (the first 2 are warm-up)")
    p.add_argument("--trigger", default="2 seconds")
    p.add_argument("--warmup", type=int, default=0,
                   help="seconds of generator traffic (at the first rate) before anything is measured")
    p.add_argument("--fast-forward", type=int, default=0, help="also run this many tiny batches (>= 200)")
    p.add_argument("--skip-stream", action="store_true", help="only the fast-forward part")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep-event-log", type=Path, default=None, help="copy the Spark event log here")
    p.add_argument("--interpreted-below-records", type=int, default=None,
                   help="the stream's bronze.interpreted_below_records (default: the code's, 0)")
    p.add_argument("--driver-java-options", default=None,
                   help="spark.driver.extraJavaOptions for this run's driver JVM (e.g. JIT settings)")
    args = p.parse_args(argv)
    shop_log = logging.getLogger("shopstream")
    shop_log.addHandler(STORE_EVENTS)
    if shop_log.getEffectiveLevel() > logging.INFO:
        shop_log.setLevel(logging.INFO)
    conf = cfg.load("local")
    work = Path(tempfile.mkdtemp(prefix="shopstream-freshness-"))
    event_dir = work / "events"
    event_dir.mkdir()
    spark = build_session(conf, app_name="bench-freshness",
                          extra_conf={"spark.eventLog.enabled": "true", "spark.eventLog.dir": event_dir.as_uri(),
                                      "spark.eventLog.rolling.enabled": "false",
                                      "spark.eventLog.compress": "false"}
                          | ({"spark.driver.extraJavaOptions": args.driver_java_options}
                             if args.driver_java_options else {}))
    out = {"trigger": args.trigger, "cores": os.cpu_count(), "warmup_s": args.warmup,
           "driver_java_options": args.driver_java_options}
    if not args.skip_stream:
        out.update(stream_phases(spark, conf, args, work))
    if args.fast_forward:
        out["fast_forward"] = fast_forward(spark, conf, args.fast_forward, work)
    spark.stop()
    for phase in out.values():
        if isinstance(phase, dict) and "windows" in phase:
            phase["spark_jobs"] = _job_breakdown(event_dir, phase.pop("windows"))
            say(f"{phase['phase']}: Spark jobs per batch {phase['spark_jobs']['jobs_per_batch']}, "
                f"job time per batch (median) {phase['spark_jobs']['job_ms_per_batch_median']} ms")
    if args.keep_event_log:
        shutil.copytree(event_dir, args.keep_event_log, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)   # broker data, tables, event log: read by now
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
