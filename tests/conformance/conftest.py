"""Fixtures and policy hooks for the Ironflow conformance suite.

* `server`: one real `ironflow serve` per backend (sqlite, postgres) for the whole session; every test that
  uses it runs once per backend. Teardown sends SIGTERM and requires exit code 0 within 10 s.
* `lease_server` (short lease TTL, pull-worker tests) and `secrets_server` (IRONFLOW_MASTER_KEY set) are
  further session servers per backend, started only when a selected test needs them.
* Postgres is mandatory: an unreachable IRONFLOW_TEST_DATABASE_URL fails the postgres tests (never skips).
* `nats_url`: a real `nats-server -js` for the session (KV on NATS, live fan-out over NATS).
* Any skipped test turns the session's exit status into a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ifconf
import workerkit
from ifconf import BACKENDS, Server

_skipped: list[str] = []

# The tests' own psql sessions look into the servers' default schema first, as an operator's would
# after `SET search_path TO ironflow` (the README's advice); the servers never see this variable.
os.environ["PGOPTIONS"] = "-c search_path=ironflow"


# ── policy: a skip is a failure ──────────────────────────────────────────────────────────────────


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    if _skipped:
        terminalreporter.section("conformance policy", sep="=", red=True, bold=True)
        terminalreporter.line(
            f"{len(_skipped)} test(s) were skipped; the conformance suite treats any skip as a failure:", red=True
        )
        for nodeid in _skipped:
            terminalreporter.line(f"  SKIPPED {nodeid}", red=True)


# ── fixtures ─────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    url = ifconf.admin_url()
    reason = ifconf.check_postgres_reachable(url)
    if reason is not None:
        pytest.fail(
            f"Postgres backend tests cannot run: {url} is unreachable ({reason}). "
            "Start Postgres or set IRONFLOW_TEST_DATABASE_URL to an admin URL.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres_admin")
    return request.param


def _serve(backend: str, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    srv, db = ifconf.start_server(backend, extra_args, extra_env)
    try:
        yield srv
        code, took = srv.stop()
        if code != 0:
            pytest.fail(
                f"graceful shutdown failed on {backend}: after SIGTERM the server "
                + (f"was still running after {ifconf.STOP_TIMEOUT_S}s and was killed" if code is None
                   else f"exited with code {code} after {took:.1f}s (expected 0)")
                + f"\n{srv.logs()}",
                pytrace=False,
            )
    finally:
        ifconf.cleanup(srv, db)


@pytest.fixture(scope="session")
def server(backend: str) -> Iterator[Server]:
    yield from _serve(backend)


@pytest.fixture(scope="session")
def lease_server(backend: str) -> Iterator[Server]:
    """A second server per backend for the pull-worker tests, with a short lease TTL (stale-claim threshold)."""
    yield from _serve(backend, ("--lease-ttl-secs", str(workerkit.LEASE_TTL_S)))


@pytest.fixture(scope="session")
def secrets_server(backend: str) -> Iterator[Server]:
    """A server per backend started with IRONFLOW_MASTER_KEY, so it can store secrets."""
    yield from _serve(backend, extra_env={"IRONFLOW_MASTER_KEY": ifconf.MASTER_KEY})


@pytest.fixture(scope="session")
def tenancy_server(backend: str) -> Iterator[Server]:
    """A server per backend for the tenancy tests: their policy sets and keys stay off the shared one."""
    yield from _serve(backend, extra_env={"IRONFLOW_MASTER_KEY": ifconf.MASTER_KEY})


@pytest.fixture
def wk(lease_server: Server, tmp_path) -> Iterator[workerkit.WorkerKit]:  # noqa: ANN001
    """Per-test worker kit on the short-lease server; every worker process it started is SIGKILLed after."""
    kit = workerkit.WorkerKit(lease_server, tmp_path)
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def rpc(server: Server):  # noqa: ANN201
    client = server.rpc()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rest(server: Server):  # noqa: ANN201
    return server.rest()


@pytest.fixture
def uid() -> str:
    return ifconf.uid()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = ifconf.free_port()
    store = Path(tempfile.mkdtemp(prefix="ironflow-conf-nats-"))
    log = open(store / "nats.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:  # startup readiness polling only
            if proc.poll() is not None:
                pytest.fail(f"nats-server exited with {proc.returncode}: {(store / 'nats.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nats-server did not accept connections within 10 s")
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(store, ignore_errors=True)
