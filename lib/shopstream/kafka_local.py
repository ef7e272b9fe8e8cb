"""A real Apache Kafka broker (KRaft, combined broker+controller, single node) on 127.0.0.1.

Run from Maven Central jars (resolved by shopstream.packages.resolve_kafka) with `java -cp`.
Storage is formatted on first start. Used two ways:

- development: `python -m shopstream.kafka_local start|stop|status` keeps one broker running
  in the background, data under <cache>/kafka/dev, port from conf (kafka.local_broker.port);
- tests: `LocalKafka(...)` as a context manager on free ports in a temporary folder
  (tests/conftest.py wraps it in a session-scoped fixture).

Start-up waits for the broker to answer a metadata request, with a deadline; if Java is
missing, a port is taken, the jars are missing or the process dies, the error says which.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shopstream import config as cfg
from shopstream import packages

START_TIMEOUT_S = 45.0


class BrokerError(RuntimeError):
    """The local broker could not be started or reached."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_cluster_id(draw=lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid form).

    Never one that starts with '-': the storage tool's argument parser reads such an id as an
    option and fails ("argument --cluster-id/-t: expected one argument"); one random id in 64
    does (Kafka's own Uuid.randomUuid redraws those too)."""
    while True:
        text = base64.urlsafe_b64encode(draw()).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _server_properties(data_dir: Path, port: int, controller_port: int, partitions: int) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": str(partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        # Historical loads stamp records with their event_time (days or weeks ago): time-based
        # retention would delete them at once, so the local broker keeps everything.
        "log.retention.ms": "-1",
        "log.message.timestamp.before.max.ms": str(2**63 - 1),
        "log.message.timestamp.after.max.ms": str(2**63 - 1),
        "message.max.bytes": str(4 * 1024 * 1024),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _log4j2_properties(log_file: Path) -> str:
    return (
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = file\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\n"
        "rootLogger.appenderRef.file.ref = file\n"
        "logger.server.name = kafka.server\n"
        "logger.server.level = INFO\n"
    )


@dataclass
class BrokerInfo:
    bootstrap_servers: str
    pid: int
    data_dir: str


class LocalKafka:
    """One single-node KRaft broker on 127.0.0.1 in data_dir."""

    def __init__(self, data_dir: Path, port: int | None = None, controller_port: int | None = None,
                 partitions: int = 3, heap: str = "512m", conf: cfg.Config | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.partitions = partitions
        self.heap = heap
        self.conf = conf
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def _java(self) -> str:
        java = shutil.which("java", path=os.path.join(os.environ.get("JAVA_HOME", ""), "bin")) \
            if os.environ.get("JAVA_HOME") else None
        java = java or shutil.which("java")
        if java is None:
            raise BrokerError("Java is not installed or not on PATH (the Kafka broker needs Java 17+)")
        return java

    def _classpath(self) -> str:
        jars = packages.kafka_jars_dir(self.conf)
        if not any(jars.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"Kafka broker jars are missing in {jars}: run `python -m shopstream.packages resolve-kafka`"
            )
        return str(jars / "*")

    def _format(self, java: str, classpath: str, props: Path) -> None:
        if (self.data_dir / "logs" / "meta.properties").is_file():
            return  # already formatted
        cluster_id = new_cluster_id()
        spec = packages.kafka_broker_spec()
        cmd = [java, "-cp", classpath, f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
               spec["storage_tool"], "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {(result.stderr or result.stdout)[-2000:]}")

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LocalKafka":
        java = self._java()
        classpath = self._classpath()
        for name, port in (("broker", self.port), ("controller", self.controller_port)):
            if port_in_use(port):
                raise BrokerError(f"{name} port {port} on 127.0.0.1 is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(_server_properties(self.data_dir, self.port, self.controller_port, self.partitions))
        (self.data_dir / "log4j2.properties").write_text(_log4j2_properties(self.log_file))
        self._format(java, classpath, props)
        stdout = (self.data_dir / "broker.out").open("ab")
        cmd = [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
               "-cp", classpath, packages.kafka_broker_spec()["main_class"], str(props)]
        self.process = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        (self.data_dir / "broker.pid").write_text(str(self.process.pid))
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"Kafka broker exited with code {self.process.returncode}: "
                                  f"{self._tail()}")
            try:
                meta = admin.list_topics(timeout=2)
                if meta.brokers:
                    return
            except Exception as exc:  # noqa: BLE001 - any client error means "not yet"
                last_error = exc
        self.stop()
        raise BrokerError(f"Kafka broker did not answer within {timeout_s:.0f}s ({last_error}); "
                          f"log: {self._tail()}")

    def _tail(self, chars: int = 2000) -> str:
        text = ""
        for f in (self.data_dir / "broker.out", self.log_file):
            if f.is_file():
                text += f.read_text(errors="replace")[-chars:]
        return text[-chars:] or "(no output)"

    def create_topics(self, topics: list[str], partitions: int | None = None) -> None:
        create_topics(self.bootstrap_servers, topics, partitions or self.partitions)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        (self.data_dir / "broker.pid").unlink(missing_ok=True)

    def __enter__(self) -> "LocalKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def create_topics(bootstrap_servers: str, topics: list[str], partitions: int = 3,
                  timeout_s: float = 30.0) -> None:
    """Create topics if absent and wait until each is known with all its partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if new:
        for topic, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise BrokerError(f"could not create topic {topic}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=5).topics
        if all(t in meta and len(meta[t].partitions) >= 1 and meta[t].error is None for t in topics):
            return
    raise BrokerError(f"topics {topics} did not become available within {timeout_s}s")


# ---------------------------------------------------------------------------------------------
# Development broker: start / stop / status

def _dev_dir(conf: cfg.Config) -> Path:
    return packages.cache_dir(conf) / "kafka" / "dev"


def _dev_state(conf: cfg.Config) -> dict | None:
    state = _dev_dir(conf) / "state.json"
    if not state.is_file():
        return None
    info = json.loads(state.read_text())
    try:
        os.kill(info["pid"], 0)
    except OSError:
        return None
    return info


def dev_start(conf: cfg.Config) -> BrokerInfo:
    info = _dev_state(conf)
    if info:
        return BrokerInfo(info["bootstrap_servers"], info["pid"], info["data_dir"])
    packages.resolve_kafka(conf)
    data_dir = _dev_dir(conf)
    broker = LocalKafka(data_dir, port=int(conf.get("kafka.local_broker.port")),
                        controller_port=int(conf.get("kafka.local_broker.controller_port")),
                        partitions=int(conf.get("kafka.partitions")),
                        heap=str(conf.get("kafka.local_broker.heap", "512m")), conf=conf)
    broker.start()
    broker.create_topics(list(conf.get("kafka.topics").values()))
    pid = broker.process.pid
    broker.process = None  # detach: the broker outlives this command
    (data_dir / "state.json").write_text(json.dumps(
        {"pid": pid, "bootstrap_servers": broker.bootstrap_servers, "data_dir": str(data_dir)}))
    return BrokerInfo(broker.bootstrap_servers, pid, str(data_dir))


def dev_stop(conf: cfg.Config, wipe: bool = False) -> bool:
    info = _dev_state(conf)
    stopped = False
    if info:
        os.killpg(info["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(info["pid"], 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            os.killpg(info["pid"], signal.SIGKILL)
        stopped = True
    (_dev_dir(conf) / "state.json").unlink(missing_ok=True)
    if wipe and _dev_dir(conf).exists():
        shutil.rmtree(_dev_dir(conf))
    return stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shopstream.kafka_local",
                                     description="the local development Kafka broker")
    parser.add_argument("action", choices=["start", "stop", "status", "wipe"],
                        help="wipe = stop and delete the broker's data")
    parser.add_argument("--env", default=None)
    args = parser.parse_args(argv)
    conf = cfg.load(args.env)
    try:
        if args.action == "start":
            info = dev_start(conf)
            print(f"kafka running: bootstrap={info.bootstrap_servers} pid={info.pid} data={info.data_dir}")
        elif args.action in ("stop", "wipe"):
            stopped = dev_stop(conf, wipe=args.action == "wipe")
            print("kafka stopped" if stopped else "kafka was not running")
        else:
            info = _dev_state(conf)
            print(f"kafka running: bootstrap={info['bootstrap_servers']} pid={info['pid']}" if info
                  else "kafka not running")
            return 0 if info else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
