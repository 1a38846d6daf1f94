"""infra/ cannot run here: check that every YAML file parses and that images, ports, CLI
flags and environment variable names agree with the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
CODE_DIRS = ("dataversion", "pipelines", "feature_repo")
METRICS_PORT = 9464
RUNNER_IMAGE = "dataversion:0.1.0"


def load_all(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yml", ".yaml"))


def env_names_in_code() -> set[str]:
    names: set[str] = set()
    for d in CODE_DIRS:
        for p in (ROOT / d).rglob("*.py"):
            names |= set(re.findall(r"\b((?:DATAVERSION|AWS)_[A-Z0-9_]+)\b", p.read_text()))
    return names


def walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def containers(doc: dict) -> list[dict]:
    return [c for n in walk(doc) if isinstance(n, dict) for c in n.get("containers", []) or []]


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_runner_args(args: list[str]) -> dict:
    """Parse a runner command line with the real click command: unknown flags fail here."""
    from pipelines.cli.runner import parse_duration, runner_command

    assert args[0] == "runner"
    ctx = runner_command.make_context("runner", list(args[1:]))
    p = ctx.params
    for name in ("lease_ttl", "backoff"):
        parse_duration(p[name])
    parse_duration(p["stop_grace"], allow_zero=True)
    if p["cron"]:
        from pipelines.runner import make_trigger

        make_trigger(cron=p["cron"])
    return p


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_every_yaml_file_parses():
    files = yaml_files()
    names = {str(p.relative_to(INFRA)) for p in files}
    assert {"docker-compose.yml", "k8s/runner-cronjob.yaml", "k8s/flink-beam.yaml", "feast/feature_store.yaml"} <= names
    for p in files:
        assert load_all(p), f"{p} is empty"


def test_env_names_are_ones_the_code_reads(compose):
    known = env_names_in_code()
    assert {"DATAVERSION_REPO", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "DATAVERSION_ALLUXIO_WORKERS"} <= known
    used: set[str] = set()
    for p in yaml_files():
        for doc in load_all(p):
            for n in walk(doc):
                if isinstance(n, dict):
                    if isinstance(n.get("environment"), dict):
                        used |= set(n["environment"])
                    used |= {e["name"] for e in n.get("env", []) or [] if isinstance(e, dict) and "name" in e}
    ours = {u for u in used if u.startswith(("DATAVERSION_", "AWS_"))}
    assert ours, "no dataversion/AWS variables found in infra/"
    assert ours <= known, f"infra sets variables the code never reads: {sorted(ours - known)}"


def test_compose_services_ports_and_runner(compose):
    services = compose["services"]
    assert {"minio", "alluxio-master", "alluxio-worker", "feast", "runner", "redis"} <= set(services)

    def host_ports(name: str) -> set[int]:
        return {int(str(p).split(":")[-1]) for p in services[name].get("ports", [])}

    assert 9000 in host_ports("minio")
    assert 6566 in host_ports("feast") and "6566" in services["feast"]["command"]
    assert 28080 in host_ports("alluxio-worker")
    assert "-Dalluxio.worker.http.server.port=28080" in services["alluxio-worker"]["environment"]["ALLUXIO_JAVA_OPTS"]
    assert "s3://datasets/" in services["alluxio-master"]["environment"]["ALLUXIO_JAVA_OPTS"]
    assert "feature-server:0.67" in services["feast"]["image"]

    runner = services["runner"]
    assert runner["image"] == RUNNER_IMAGE
    env = runner["environment"]
    for name in ("DATAVERSION_REPO", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DATAVERSION_ALLUXIO_WORKERS"):
        assert env.get(name), name
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["DATAVERSION_REPO"].startswith("s3://datasets/")  # the bucket Alluxio caches
    assert env["DATAVERSION_ALLUXIO_WORKERS"].split(",")[0] == "alluxio-worker"
    params = check_runner_args(runner["command"])
    assert params["metrics_port"] == METRICS_PORT and METRICS_PORT in host_ports("runner")
    # MinIO credentials agree between the server and its clients.
    minio_env = services["minio"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio_env["MINIO_ROOT_USER"], minio_env["MINIO_ROOT_PASSWORD"])


def test_cronjob_forbids_overlap_and_runs_one_slot():
    (job,) = load_all(INFRA / "k8s" / "runner-cronjob.yaml")
    spec = job["spec"]
    assert job["kind"] == "CronJob" and spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    (c,) = containers(job)
    assert c["image"] == RUNNER_IMAGE
    params = check_runner_args(c["args"])
    assert params["once"] and params["cron"] == spec["schedule"]  # the slot is the CronJob's
    assert params["metrics_port"] == METRICS_PORT and c["ports"][0]["containerPort"] == METRICS_PORT
    assert {"DATAVERSION_REPO", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env_of(c))
    from pipelines.cli.runner import parse_duration

    grace = spec["jobTemplate"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > parse_duration(params["stop_grace"])


def test_flink_beam_manifest_is_consistent():
    docs = load_all(INFRA / "k8s" / "flink-beam.yaml")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Deployment", "flink-jobmanager"), ("Deployment", "flink-taskmanager"), ("Deployment", "beam-job-server"),
            ("Service", "beam-job-server"), ("Service", "flink-jobmanager")} <= kinds
    images = {c["image"] for d in docs for c in containers(d)}
    import apache_beam

    beam_version = apache_beam.__version__
    job_server = next(i for i in images if "job_server" in i)
    assert job_server.endswith(":" + beam_version), "the job server must match the installed Beam SDK"
    flink_minor = re.search(r"beam_flink(\d+\.\d+)_job_server", job_server).group(1)
    assert any(i.startswith(f"flink:{flink_minor}") for i in images), "Flink and its job server disagree"
    (pool,) = [c for d in docs for c in containers(d) if "--worker_pool" in c.get("args", [])]
    assert pool["ports"][0]["containerPort"] == 50000
    text = (INFRA / "k8s" / "flink-beam.yaml").read_text()
    assert "--environment_config=localhost:50000" in text and "--job_endpoint=beam-job-server:8099" in text
    js = next(c for d in docs for c in containers(d) if "job_server" in c["image"])
    assert "--flink-master=flink-jobmanager:8081" in js["args"]


def test_feast_production_config():
    (cfg,) = load_all(INFRA / "feast" / "feature_store.yaml")
    assert cfg["registry"]["registry_type"] == "sql"
    assert cfg["online_store"]["type"] == "redis"
    assert cfg["offline_store"]["type"] == "file"  # DuckDB ignores s3_endpoint_override
    assert "s3_endpoint_override" in (INFRA / "feast" / "feature_store.yaml").read_text()
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert cfg["online_store"]["connection_string"].split(":")[0] in compose["services"]  # redis
    assert "@postgres:" in cfg["registry"]["path"] and "postgres" in compose["services"]


def test_dockerfile_installs_the_runner_extras():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"pip install .*\.\[[^\]]*runner", text) and 'ENTRYPOINT ["dataversion"]' in text
