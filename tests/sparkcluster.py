"""A real Spark standalone cluster on loopback for the tests: PySpark's own master and one
worker JVM (`spark-class org.apache.spark.deploy.master.Master` / `...worker.Worker`), on
free ports, stopped after the session; both die with the test run (parent-death signal).

Beam pipelines run on it through `beam-pyspark-runner` (its `PySparkRunner` calls
`SparkSession.builder.getOrCreate()`, so the master comes from `PYSPARK_SUBMIT_ARGS`).
Needs `pyspark` (3.5) and Java 17; the tests skip without them, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import _log_tail, _port_is_free, _set_parent_death_signal, _stop

RUNNER = "beam_pyspark_runner.pyspark_runner.PySparkRunner"
_START_TIMEOUT_S = 90.0
_JAVA_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64",)


@dataclass
class SparkCluster:
    master_url: str  # spark://127.0.0.1:PORT
    spark_home: str
    java_home: str | None

    def env(self, cores: int = 2) -> dict[str, str]:
        """Environment for a driver (this process or a subprocess) using the cluster."""
        env = {
            "SPARK_HOME": self.spark_home,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYSPARK_SUBMIT_ARGS": (
                f"--master {self.master_url} --executor-memory 1g "
                f"--total-executor-cores {cores} --conf spark.ui.enabled=false "
                f"--conf spark.default.parallelism={cores} pyspark-shell"
            ),
        }
        if self.java_home:
            env["JAVA_HOME"] = self.java_home
        return env


def missing() -> str | None:
    """Why no cluster can start here (None: it can)."""
    try:
        import beam_pyspark_runner  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as e:
        return f"pyspark / beam-pyspark-runner not installed ({e})"
    if _java_home() is None and shutil.which("java") is None:
        return "no Java runtime (Spark needs Java 17)"
    return None


def _java_home() -> str | None:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    for cand in _JAVA_CANDIDATES:
        if Path(cand, "bin", "java").exists():
            return cand
    return None


def _free_port() -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if _port_is_free(port):
            return port
    raise RuntimeError("no free loopback port")


def _wait_for_port(proc: subprocess.Popen, port: int, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark process exited ({proc.returncode}):\n{_log_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)  # polling a port that is not up yet; not a synchronization sleep
    raise TimeoutError(
        f"Spark port {port} not up after {_START_TIMEOUT_S:.0f} s:\n{_log_tail(log)}"
    )


def _wait_for_worker(log: Path, proc: subprocess.Popen, deadline: float) -> None:
    """The worker is usable once it says it registered with the master."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Spark worker exited ({proc.returncode}):\n{_log_tail(log)}")
        if "Successfully registered with master" in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"Spark worker not registered after {_START_TIMEOUT_S:.0f} s:\n{_log_tail(log)}"
    )


def start_cluster(workdir: Path, cores: int = 2, memory: str = "2g"):
    """Start a master and one worker; returns (cluster, [processes]) (stop them with _stop)."""
    import pyspark

    spark_home = str(Path(pyspark.__file__).parent)
    java_home = _java_home()
    env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    if java_home:
        env["JAVA_HOME"] = java_home
        env["PATH"] = f"{java_home}/bin:{env.get('PATH', '')}"
    env["SPARK_LOG_DIR"] = str(workdir)
    env["SPARK_WORKER_DIR"] = str(workdir / "work")
    spark_class = str(Path(spark_home, "bin", "spark-class"))
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    master_log = workdir / "master.log"
    worker_log = workdir / "worker.log"
    deadline = time.monotonic() + _START_TIMEOUT_S
    try:
        with open(master_log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.master.Master",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--webui-port",
                        str(ui),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    preexec_fn=_set_parent_death_signal,
                )
            )
        _wait_for_port(procs[0], port, master_log, deadline)
        master_url = f"spark://127.0.0.1:{port}"
        (workdir / "work").mkdir(exist_ok=True)
        with open(worker_log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        master_url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        str(cores),
                        "--memory",
                        memory,
                        "--webui-port",
                        str(worker_ui),
                        "--work-dir",
                        str(workdir / "work"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    preexec_fn=_set_parent_death_signal,
                )
            )
        _wait_for_worker(worker_log, procs[1], deadline)
    except BaseException:
        for p in reversed(procs):
            _stop(p)
        raise
    return SparkCluster(master_url, spark_home, java_home), procs


def stop_spark_session() -> None:
    """Stop this process's SparkSession (its executors leave the cluster)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()
