"""Shared harness for the Ironflow conformance suite.

Starts real `ironflow serve` processes (SQLite or Postgres backend), and offers small helpers for raw HTTP,
the official SDK clients (`ironflow.IronflowClient` for REST, `ironflow.rpc.IronflowRPC` for ConnectRPC),
unique names and timestamps. Nothing here reimplements the SDK; raw HTTP is used only for the wire shapes
the SDK does not produce itself (REST emit, Connect-JSON, malformed bodies, missing auth).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ironflow import IronflowClient, IronflowError
from ironflow.rpc import IronflowRPC
from ironflow.rpc.v1 import (
    ExecutionMode,
    RegisterFunctionRequest,
    RegisterFunctionResponse,
    Trigger,
    TriggerRequest,
    TriggerResponse,
)
from protobuf.wkt import Struct, Value

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("sqlite", "postgres")
DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 15.0
SERVICE = "/ironflow.v1.IronflowService"
TERMINAL_REST = {"completed", "failed", "cancelled"}
#: IRONFLOW_MASTER_KEY of the `secrets_server` fixture (32 bytes as 64 hex characters; test-only).
MASTER_KEY = "5f1c0e3a9b7d24c68e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"


# ── small utilities ──────────────────────────────────────────────────────────────────────────────


def uid() -> str:
    """A short unique token usable in function ids and as a NATS-style subject token."""
    return "t" + uuid.uuid4().hex[:12]


def ironflow_bin() -> str:
    path = os.environ.get("IRONFLOW_BIN") or str(REPO_ROOT / "target" / "debug" / "ironflow")
    if os.sep not in path:
        found = shutil.which(path)
        path = found or path
    return os.path.abspath(path)


def admin_url() -> str:
    return os.environ.get("IRONFLOW_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_ts(value: str) -> dt.datetime:
    """Parses an RFC 3339 timestamp (any fractional precision, 'Z' or offset) to an aware datetime."""
    assert isinstance(value, str) and value, f"expected an RFC 3339 timestamp string, got {value!r}"
    s = value.strip().replace("z", "Z")
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        s = f"{head}.{(digits + '000000')[:6]}{rest}"
    parsed = dt.datetime.fromisoformat(s)
    assert parsed.tzinfo is not None, f"timestamp {value!r} carries no UTC offset"
    return parsed


def fmt_ts(value: dt.datetime) -> str:
    """RFC 3339 / ISO-8601 UTC with microseconds and 'Z'."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def struct(data: dict[str, Any]) -> Struct:
    return Struct.from_python(data)


def value(data: Any) -> Value:
    return Value.from_python(data)


# ── raw HTTP ─────────────────────────────────────────────────────────────────────────────────────


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(
                f"expected a JSON body (HTTP {self.status}, content-type {self.content_type!r}), "
                f"got {self.body[:500]!r}"
            ) from exc

    def __repr__(self) -> str:
        return f"Resp(status={self.status}, content_type={self.content_type!r}, body={self.body[:600]!r})"


def http_request(
    base_url: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> Resp:
    """One plain HTTP/1.1 request, no retries, no redirects. Survives a server that answers early (413)
    and closes before reading the whole body."""
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        hdrs = {"Connection": "close", "Accept-Encoding": "identity"}
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may reject (e.g. 413) before reading everything; its answer is still there
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def assert_json_error(
    resp: Resp,
    status: int | tuple[int, ...],
    *,
    code: str | None = None,
    mentions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Asserts an error answer: given status, JSON object body with a non-empty message/error, optional code,
    and (case-insensitively) at least one of `mentions` in the message."""
    statuses = (status,) if isinstance(status, int) else status
    assert resp.status in statuses, f"expected HTTP {statuses}, got {resp!r}"
    assert resp.content_type.split(";")[0].strip().lower() == "application/json", (
        f"error body must be application/json, got {resp!r}"
    )
    body = resp.json()
    assert isinstance(body, dict), f"error body must be a JSON object, got {body!r}"
    message = body.get("message") or body.get("error")
    assert isinstance(message, str) and message.strip(), f"error body names no problem: {body!r}"
    if code is not None:
        assert body.get("code") == code, f"expected code {code!r}, got {body!r}"
    if mentions:
        text = json.dumps(body).lower()
        assert any(m.lower() in text for m in mentions), f"error should mention one of {mentions}: {body!r}"
    return body


def fails(status: int, call: Callable[..., Any], *args: Any, **kwargs: Any) -> IronflowError:
    """Runs an SDK call that must fail with HTTP `status`; returns the SDK's error."""
    try:
        got = call(*args, **kwargs)
    except IronflowError as err:
        assert err.status_code == status, (
            f"expected HTTP {status}, got {err.status_code}: {err} (code {err.code!r})")
        assert str(err).strip(), "the error carries no message"
        return err
    raise AssertionError(f"expected HTTP {status}, but the call succeeded with {got!r}")


def parallel(n: int, call: Callable[[int], Any]) -> list[Any]:
    """Runs call(i) for i in 0..n on n threads released together; returns each result or exception."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait(timeout=10)
        try:
            return call(i)
        except Exception as exc:  # noqa: BLE001
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


# ── server process ───────────────────────────────────────────────────────────────────────────────


def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("psql") is None:
        raise RuntimeError("the `psql` CLI is required for the Postgres backend tests but is not on PATH")
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    return subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class PostgresDatabase:
    """A throw-away database on the admin server: CREATE on create(), DROP ... WITH (FORCE) on drop()."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        self.name = "ironflow_conf_" + uuid.uuid4().hex[:12]
        self.url = with_database(admin, self.name)

    def create(self) -> None:
        r = psql(self.admin, f'CREATE DATABASE "{self.name}"')
        if r.returncode != 0:
            raise RuntimeError(
                f"could not create Postgres database {self.name} via {self.admin} "
                f"(set IRONFLOW_TEST_DATABASE_URL): {r.stderr.strip()}"
            )

    def drop(self) -> None:
        r = psql(self.admin, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if r.returncode != 0:
            raise RuntimeError(f"could not drop Postgres database {self.name}: {r.stderr.strip()}")


def check_postgres_reachable(admin: str) -> str | None:
    """None when reachable, else the reason."""
    try:
        r = psql(admin, "SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    return None if r.returncode == 0 else (r.stderr.strip() or f"psql exited {r.returncode}")


@dataclass
class Server:
    """One `ironflow serve` process. `workdir` is its cwd (SQLite lives in <workdir>/.ironflow/ironflow.db)."""

    backend: str
    workdir: Path
    db_url: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    api_key: str = ""
    starts: int = 0
    extra_args: list[str] = field(default_factory=list)  # appended to `ironflow serve` (e.g. --lease-ttl-secs)
    extra_env: dict[str, str] = field(default_factory=dict)  # set for the process (e.g. IRONFLOW_MASTER_KEY)
    _logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key_file(self) -> Path:
        return self.workdir / "key"

    # lifecycle ------------------------------------------------------------------------------------

    def start(self, port: int | None = None) -> None:
        """Starts the process; `port` reuses a known port (a restart that clients must find again)."""
        binary = ironflow_bin()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"server binary {binary} does not exist or is not executable (set IRONFLOW_BIN)")
        self.port = port or free_port()
        self.starts += 1
        args = [
            binary,
            "serve",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--bootstrap-key-file",
            str(self.key_file),
        ]
        if self.db_url:
            args += ["--db", self.db_url]
        args += self.extra_args
        # PGOPTIONS is the tests' own psql setting (conftest.py), not the server's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_") and k != "PGOPTIONS"}
        env.update(self.extra_env)
        out = self.workdir / f"server-{self.starts}.stdout.log"
        err = self.workdir / f"server-{self.starts}.stderr.log"
        self._logs = [out, err]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=fo, stderr=fe, env=env)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"ironflow serve ({self.backend}) exited with {code} before ready\n{self.logs()}")
            try:
                r = http_request(self.url, "GET", "/ready", timeout=2)
                last = repr(r)
                if r.status == 200 and self.key_file.exists() and self.key_file.read_text().strip():
                    self.api_key = self.key_file.read_text().strip()
                    if not self.api_key.startswith("ifkey_"):
                        raise RuntimeError(f"bootstrap key file holds {self.api_key[:12]!r}..., not an ifkey_ key")
                    return
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            time.sleep(0.1)  # startup readiness polling only
        self.kill()
        raise RuntimeError(
            f"ironflow serve ({self.backend}) not ready within {READY_TIMEOUT_S}s "
            f"(last /ready: {last}; key file exists: {self.key_file.exists()})\n{self.logs()}"
        )

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, wait up to STOP_TIMEOUT_S. Returns (exit code or None if it had to be killed, seconds)."""
        if self.proc is None:
            return 0, 0.0
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            return proc.returncode, 0.0
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None, time.monotonic() - t0
        return proc.returncode, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def logs(self, limit: int = 6000) -> str:
        chunks = []
        for p in self._logs:
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            chunks.append(f"--- {p.name} (last {limit} chars) ---\n{text[-limit:]}")
        return "\n".join(chunks)

    # clients --------------------------------------------------------------------------------------

    def rpc(self, api_key: str | None | bool = True, environment: str | None = None) -> IronflowRPC:
        key = self.api_key if api_key is True else (None if api_key is False else api_key)
        return IronflowRPC(server_url=self.url, api_key=key, timeout=HTTP_TIMEOUT_S, environment=environment)

    def rest(self, api_key: str | None | bool = True) -> IronflowClient:
        key = self.api_key if api_key is True else (None if api_key is False else api_key)
        return IronflowClient(server_url=self.url, api_key=key, timeout=HTTP_TIMEOUT_S, max_attempts=1)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool | str = True,
        content_type: str | None = "application/json",
    ) -> Resp:
        hdrs: dict[str, str] = {}
        if content_type and (json_body is not None or raw is not None):
            hdrs["Content-Type"] = content_type
        if auth is True:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        elif isinstance(auth, str):
            hdrs["Authorization"] = f"Bearer {auth}"
        hdrs.update(headers or {})
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            path = f"{path}?{urllib.parse.urlencode(clean)}"
        body = raw if raw is not None else (None if json_body is None else json.dumps(json_body).encode())
        return http_request(self.url, method, path, body=body, headers=hdrs)

    def connect_json(self, method: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Resp:
        """Connect unary call with the JSON codec, the way the pull worker sends it (no protocol header, no gzip)."""
        return self.request("POST", f"{SERVICE}/{method}", json_body=body, headers=headers)


def start_server(
    backend: str,
    extra_args: list[str] | tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> tuple[Server, PostgresDatabase | None]:
    workdir = Path(tempfile.mkdtemp(prefix=f"ironflow-conf-{backend}-"))
    db = None
    if backend == "postgres":
        db = PostgresDatabase(admin_url())
        db.create()
    server = Server(
        backend=backend, workdir=workdir, db_url=db.url if db else None,
        extra_args=list(extra_args), extra_env=dict(extra_env or {}),
    )
    try:
        server.start()
    except BaseException:
        server.kill()
        if db is not None:
            db.drop()
        raise
    return server, db


def cleanup(server: Server, db: PostgresDatabase | None) -> None:
    server.kill()
    try:
        if db is not None:
            db.drop()
    finally:
        shutil.rmtree(server.workdir, ignore_errors=True)


# ── domain helpers (all traffic goes through the SDK unless the name says otherwise) ─────────────────


def register(
    rpc: IronflowRPC,
    fid: str,
    triggers: list[tuple[str, str] | str],
    **fields: Any,
) -> RegisterFunctionResponse:
    trig = [Trigger(event=t) if isinstance(t, str) else Trigger(event=t[0], expression=t[1]) for t in triggers]
    fields.setdefault("name", fid)
    fields.setdefault("preferred_mode", ExecutionMode.PULL)
    if "metadata" in fields and isinstance(fields["metadata"], dict):
        fields["metadata"] = struct(fields["metadata"])
    return rpc.functions.register(RegisterFunctionRequest(id=fid, triggers=trig, **fields))


def emit_rpc(rpc: IronflowRPC, event: str, data: dict[str, Any] | None = None, **fields: Any) -> TriggerResponse:
    if data is not None:
        fields["data"] = struct(data)
    return rpc.events.emit(TriggerRequest(event=event, **fields))


def emit_rest(server: Server, name: str, data: Any = None, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "data": {} if data is None else data, **fields}
    r = server.request("POST", "/api/v1/events", json_body=body)
    assert r.status == 200, f"POST /api/v1/events {body!r} -> {r!r}"
    out = r.json()
    assert isinstance(out.get("event_id"), str) and out["event_id"], out
    assert isinstance(out.get("run_ids"), list), out
    return out


def emit_connect_json(server: Server, event: str, data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, **fields}
    if data is not None:
        body["data"] = data
    r = server.connect_json("Emit", body)
    assert r.status == 200, f"Connect-JSON Emit {body!r} -> {r!r}"
    out = r.json()
    assert isinstance(out.get("eventId"), str) and out["eventId"], out
    return {"event_id": out["eventId"], "run_ids": list(out.get("runIds", []))}


def emit(transport: str, server: Server, rpc: IronflowRPC, event: str, data: dict[str, Any]) -> tuple[str, list[str]]:
    """Emit through one of the three supported transports; returns (event_id, run_ids)."""
    if transport == "rpc":
        r = emit_rpc(rpc, event, data)
        return r.event_id, list(r.run_ids)
    if transport == "rpc-trigger":
        r = rpc.runs.trigger(TriggerRequest(event=event, data=struct(data)))
        return r.event_id, list(r.run_ids)
    if transport == "rest":
        r = emit_rest(server, event, data)
        return r["event_id"], list(r["run_ids"])
    if transport == "connect-json":
        r = emit_connect_json(server, event, data)
        return r["event_id"], list(r["run_ids"])
    raise ValueError(transport)


def list_all_events(rest: IronflowClient, *, limit: int = 100, max_pages: int = 200, **filters: Any) -> list[dict]:
    """Walks GET /api/v1/events by next_cursor until has_next is false."""
    events: list[dict] = []
    cursor = None
    for _ in range(max_pages):
        page = rest.events_list(limit=limit, cursor=cursor, **filters)
        assert isinstance(page.get("events"), list), page
        events.extend(page["events"])
        if not page["has_next"]:
            return events
        cursor = page.get("next_cursor")
        assert cursor, f"has_next is true but next_cursor is missing: {page!r}"
    raise AssertionError(f"pagination did not end after {max_pages} pages")
