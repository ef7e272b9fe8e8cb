"""The Airflow DAG, loaded by Airflow itself (its own virtualenv, .venv-airflow)."""

import json
import os
import subprocess

import pytest

from shopstream import config as cfg

AIRFLOW_PY = cfg.PROJECT_ROOT / ".venv-airflow" / "bin" / "python"

PROBE = r'''
import datetime, json, sys
from airflow.models import DagBag
from airflow.timetables.base import TimeRestriction
bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
dag = bag.dags.get("shopstream_daily")
if dag is not None:
    try:
        from airflow.sdk.execution_time import macros
    except ImportError:
        import airflow.macros as macros
    env = dag.get_template_env()
    first = dag.timetable.next_dagrun_info(last_automated_data_interval=None,
                                           restriction=TimeRestriction(dag.start_date, None, True))
    second = dag.timetable.next_dagrun_info(last_automated_data_interval=first.data_interval,
                                            restriction=TimeRestriction(dag.start_date, None, True))
    out.update(
        catchup=dag.catchup, max_active_runs=dag.max_active_runs, timetable=type(dag.timetable).__name__,
        first_run={"logical_date": first.logical_date.isoformat(), "run_after": first.run_after.isoformat()},
        second_logical_date=second.logical_date.isoformat(),
        tasks={t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                           "command": env.from_string(t.bash_command).render(
                               ds="2026-11-05", macros=macros,
                               data_interval_end=datetime.datetime(2026, 11, 6, tzinfo=datetime.timezone.utc))}
               for t in dag.tasks})
print("PROBE" + json.dumps(out))
'''


def _probe(tmp_path_factory, **extra_env):
    if not AIRFLOW_PY.exists():
        pytest.skip("Airflow's virtualenv is not installed (scripts/setup.sh with SHOPSTREAM_AIRFLOW=1)")
    home = tmp_path_factory.mktemp("airflow-home")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               SHOPSTREAM_HOME="/opt/shopstream", SHOPSTREAM_ENV="prod", SHOPSTREAM_LATE_DAYS="2", **extra_env)
    result = subprocess.run([str(AIRFLOW_PY), "-c", PROBE, str(cfg.PROJECT_ROOT / "airflow" / "dags")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("PROBE", 1)[1])


@pytest.fixture(scope="module")
def dag_info(tmp_path_factory):
    return _probe(tmp_path_factory)


def test_service_mode_waits_for_the_running_stream_instead_of_starting_one(tmp_path_factory):
    info = _probe(tmp_path_factory, SHOPSTREAM_BRONZE_MODE="service", SHOPSTREAM_BRONZE_WAIT_SECONDS="900")
    assert info["import_errors"] == {}
    tasks = info["tasks"]
    assert set(tasks) == {"bronze_wait", "fx_rates", "silver", "gold", "maintain"}
    assert tasks["silver"]["upstream"] == ["bronze_wait", "fx_rates"]
    cmd = tasks["bronze_wait"]["command"]
    assert cmd == ("/opt/shopstream/spark-submit.sh --master 'local[*]' --env prod bronze_wait "
                   "--until '2026-11-06T00:00:00+00:00' --timeout-seconds 900")
    assert not any("bronze_stream" in t["command"] for t in tasks.values())   # never a second query


def test_an_unknown_bronze_mode_is_an_import_error(tmp_path_factory):
    info = _probe(tmp_path_factory, SHOPSTREAM_BRONZE_MODE="both")
    assert any("SHOPSTREAM_BRONZE_MODE" in e for e in info["import_errors"].values())


def test_dag_imports_into_the_dagbag_without_errors(dag_info):
    assert dag_info["import_errors"] == {}
    assert dag_info["dags"] == ["shopstream_daily"]


def test_tasks_dependencies_retries(dag_info):
    tasks = dag_info["tasks"]
    assert set(tasks) == {"bronze_catch_up", "fx_rates", "silver", "gold", "maintain"}
    assert tasks["bronze_catch_up"]["upstream"] == [] == tasks["fx_rates"]["upstream"]
    assert tasks["silver"]["upstream"] == ["bronze_catch_up", "fx_rates"]
    assert tasks["gold"]["upstream"] == ["silver"]
    assert tasks["maintain"]["upstream"] == ["gold"] and tasks["maintain"]["command"].endswith(" maintain")
    assert all(t["retries"] >= 1 for t in tasks.values())


def test_daily_schedule_with_catchup_processes_the_finished_day_and_late_days(dag_info):
    assert dag_info["catchup"] is True and dag_info["max_active_runs"] == 1
    assert dag_info["timetable"] == "CronDataIntervalTimetable"
    assert dag_info["first_run"] == {"logical_date": "2026-11-01T00:00:00+00:00",
                                     "run_after": "2026-11-02T00:00:00+00:00"}   # after the day ends
    assert dag_info["second_logical_date"] == "2026-11-02T00:00:00+00:00"
    cmd = dag_info["tasks"]
    assert cmd["silver"]["command"] == ("/opt/shopstream/spark-submit.sh --master 'local[*]' --env prod "
                                        "silver --start 2026-11-03 --end 2026-11-05")
    assert cmd["gold"]["command"].endswith("gold --start 2026-11-03 --end 2026-11-05")
    assert cmd["bronze_catch_up"]["command"].endswith("bronze_stream --trigger available-now")
