"""Through Debian's PgBouncer (1.18) in transaction mode: the conformance smoke — emit, a pull worker's
durable steps, a retry, a sleep, a sync trigger — with the server's pool behind the pooler
(`--db-transaction-pooler`) and LISTEN on a direct connection (`--db-listen-url`).

PgBouncer 1.18 has no prepared-statement support in transaction mode, so this is also the check that
the server runs without named prepared statements. Postgres only (a pooler has nothing to do with SQLite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ifconf
import pytest
import workerkit
from ifconf import Server
from ironflow.rpc.v1 import RunStatus, TriggerSyncRequest
from workerkit import WorkerKit, step_by_name


# PgBouncer refuses the start-up `options` that PGOPTIONS (conftest.py) would send.
_ENV = {k: v for k, v in os.environ.items() if k != "PGOPTIONS"}


def _pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
    if found is None:
        pytest.fail("pgbouncer is required for the pooler suite (Debian: apt-get install pgbouncer)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def pgbouncer(postgres_admin: str) -> Iterator[tuple[str, str]]:
    """A PgBouncer in transaction mode in front of the test Postgres: (its address, its user)."""
    admin = urllib.parse.urlsplit(postgres_admin)
    user = admin.username or "postgres"
    work = Path(tempfile.mkdtemp(prefix="ironflow-conf-pgbouncer-"))
    port = ifconf.free_port()
    (work / "users.txt").write_text(f'"{user}" ""\n')
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={admin.hostname or '127.0.0.1'} port={admin.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {work / 'users.txt'}\nadmin_users = {user}\n"
        "pool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 400\n"
        f"logfile = {work / 'pgbouncer.log'}\npidfile = {work / 'pgbouncer.pid'}\n"
    )
    args = [_pgbouncer_binary()]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; it drops to this user itself.
        shutil.chown(work, "postgres")
        for f in work.iterdir():
            shutil.chown(f, "postgres")
        args += ["-u", "postgres"]
    proc = subprocess.Popen([*args, str(work / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["psql", f"postgres://{user}@127.0.0.1:{port}/pgbouncer", "-X", "-c", "SHOW VERSION"],
                             capture_output=True, env=_ENV).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (work / "pgbouncer.log").read_text() if (work / "pgbouncer.log").exists() else ""
                pytest.fail(f"pgbouncer did not start: {log}", pytrace=False)
            time.sleep(0.1)  # startup readiness polling only
        yield f"127.0.0.1:{port}", user
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def pooled_server(pgbouncer: tuple[str, str], postgres_admin: str) -> Iterator[Server]:
    address, user = pgbouncer
    db = ifconf.PostgresDatabase(postgres_admin)
    db.create()
    # Migrations run as the schema's owner on a direct connection; serve goes through the pooler.
    migrated = subprocess.run([ifconf.ironflow_bin(), "migrate", "--db", db.url], capture_output=True, text=True,
                              env=_ENV)
    assert migrated.returncode == 0, migrated.stderr
    pooled = f"postgres://{user}@{address}/{db.name}"
    workdir = Path(tempfile.mkdtemp(prefix="ironflow-conf-pooled-"))
    server = Server(
        backend="postgres", workdir=workdir, db_url=pooled,
        extra_args=["--db-transaction-pooler", "--db-listen-url", db.url,
                    "--lease-ttl-secs", str(workerkit.LEASE_TTL_S)],
    )
    try:
        server.start()
        yield server
        code, _ = server.stop()
        assert code == 0, f"graceful shutdown behind the pooler failed ({code})\n{server.logs()}"
    finally:
        ifconf.cleanup(server, db)


@pytest.fixture
def pooled_wk(pooled_server: Server, tmp_path: Path) -> Iterator[WorkerKit]:
    kit = WorkerKit(pooled_server, tmp_path)
    try:
        yield kit
    finally:
        kit.close()


def _pooler_clients(pgbouncer: tuple[str, str], database: str) -> int:
    address, user = pgbouncer
    out = subprocess.run(
        ["psql", f"postgres://{user}@{address}/pgbouncer", "-X", "-At", "-F", "|", "-c", "SHOW CLIENTS"],
        capture_output=True, text=True, check=True, env=_ENV,
    ).stdout
    return sum(1 for line in out.splitlines() if f"|{database}|" in line)


def test_steps_retry_and_sleep_run_through_the_pooler(pooled_wk: WorkerKit, pgbouncer: tuple[str, str]) -> None:
    pooled_wk.worker("three", "nap", "flaky")
    three = pooled_wk.start_run("three", {"n": 4})
    nap = pooled_wk.start_run("nap", {"sleep": 1})
    flaky = pooled_wk.start_run("flaky", {})

    assert pooled_wk.wait_status(three, "completed")["output"] == {"a": 5, "b": 50, "c": 57}
    assert [s["name"] for s in pooled_wk.steps(three)] == ["s1", "s2", "s3"]
    napped = pooled_wk.wait_status(nap, "completed")
    assert napped["output"]["slept"] >= 1.0, napped
    assert list(step_by_name(pooled_wk.steps(nap))) == ["before", "nap", "after"]
    retried = pooled_wk.wait_status(flaky, "completed")
    assert retried["attempt"] == 3, retried
    assert pooled_wk.kinds(flaky).count("run.retrying") == 2

    name = urllib.parse.urlsplit(pooled_wk.server.db_url or "").path.lstrip("/")
    assert _pooler_clients(pgbouncer, name) > 0, "the server's connections go through PgBouncer"


def test_trigger_sync_and_many_emits_through_the_pooler(pooled_wk: WorkerKit) -> None:
    pooled_wk.worker("three")
    rpc = pooled_wk.server.rpc()
    try:
        out = rpc.runs.trigger_sync(
            TriggerSyncRequest(event=pooled_wk.event("three"), data=ifconf.struct({"n": 1}), timeout_ms=30_000),
            timeout=40,
        )
    finally:
        rpc.close()
    assert [r.status for r in out.results] == [RunStatus.COMPLETED], out
    assert pooled_wk.run(out.results[0].run_id)["output"] == {"a": 2, "b": 20, "c": 27}

    # Concurrent emits share the pooler's few server connections: none may fail.
    import concurrent.futures

    def emit(i: int) -> dict[str, Any]:
        return pooled_wk.emit("three", {"n": i})

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(emit, range(48)))
    runs = [r["run_ids"][0] for r in results]
    for rid in runs:
        pooled_wk.wait_status(rid, "completed")
