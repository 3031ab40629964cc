"""Push mode: the server POSTs each run to the function's endpoint — a real ironflow-py `serve` ASGI app
under uvicorn (tests/conformance/push_app.py) — signed with IRONFLOW_SIGNING_KEY, and keeps a circuit
breaker per (function, endpoint) in the database.

Functions are registered with the SDK's own push registration body. Requests and step side effects are
counted from files the endpoint appends to; server state is read through the REST API (runs, steps,
`/api/v1/circuit-breakers` via `IronflowClient`). Waiting is polling with a deadline; no test sleeps to
show that nothing happens: "no requests while a breaker is open" is shown by a witness run that the
dispatcher can only finish after it has looked at the held run (see `assert_held`).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ironflow.worker._function import registration_body

import ifconf
import push_app
from ifconf import Server

SIGNING_KEY = "push-conformance-signing-key-0123456789"
#: Long enough that no breaker half-opens during a test: only a reset closes it.
BREAKER_OPEN_SECS = 600
SERVER_ARGS = ("--breaker-open-secs", str(BREAKER_OPEN_SECS), "--push-timeout-secs", "10")
SERVER_ENV = {"IRONFLOW_SIGNING_KEY": SIGNING_KEY, "IRONFLOW_MASTER_KEY": ifconf.MASTER_KEY}
DEADLINE_S = 30.0
APP_DIR = Path(__file__).resolve().parent


def until(predicate: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S,
          state: Callable[[], Any] | None = None) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; "
                                 f"last state: {state() if state else None!r}")
        time.sleep(0.05)


def read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


class Endpoint:
    """`python -m uvicorn push_app:app` on a fixed port: a real ironflow-py push endpoint."""

    def __init__(self, workdir: Path, prefix: str, port: int, signing_key: str) -> None:
        self.workdir, self.prefix, self.port, self.signing_key = workdir, prefix, port, signing_key
        self.log = workdir / f"{prefix}-requests.jsonl"
        self.effects = workdir / f"{prefix}-effects.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/ironflow"

    def start(self) -> Endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env.update({"IRONFLOW_NO_DISCOVERY": "1", "IRONFLOW_SIGNING_KEY": self.signing_key,
                    "PUSH_PREFIX": self.prefix, "PUSH_LOG": str(self.log), "PUSH_EFFECTS": str(self.effects),
                    "PYTHONUNBUFFERED": "1"})
        out = open(self.workdir / f"{self.prefix}-uvicorn.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "push_app:app", "--app-dir", str(APP_DIR),
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"uvicorn exited\n{self.logs()}"
            try:
                # serve answers anything but POST with 405: the app is up.
                return ifconf.http_request(f"http://127.0.0.1:{self.port}", "GET", "/", timeout=2).status == 405
            except (OSError, http.client.HTTPException):
                return False

        until(ready, f"uvicorn on port {self.port}", 20)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        try:
            return (self.workdir / f"{self.prefix}-uvicorn.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def requests(self) -> list[dict[str, Any]]:
        """The POSTs it answered (the readiness probe's GET is left out)."""
        return [r for r in read_lines(self.log) if r["method"] == "POST"]

    def whats(self, run: str | None = None) -> list[str]:
        return [e["what"] for e in read_lines(self.effects) if run is None or e["run"] == run]


class DeadEndpoint:
    """Stands on a killed endpoint's port: accepts each connection and closes it unanswered (a transport
    failure for the server), counting connections so a test sees whether requests still arrive."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.count = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.count += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    def close(self) -> None:
        """Stops listening (shutdown wakes the blocked accept, so the port is free afterwards)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the dead endpoint's accept loop did not stop"


class PushKit:
    """One test's push functions (unique prefix), its endpoint processes and helpers over one server."""

    def __init__(self, server: Server, workdir: Path, prefix: str | None = None) -> None:
        self.server = server
        self.dir = workdir
        self.prefix = prefix or ifconf.uid()
        self.port = ifconf.free_port()
        self.endpoints: list[Endpoint] = []
        self.dead: list[DeadEndpoint] = []

    def endpoint(self, signing_key: str = SIGNING_KEY) -> Endpoint:
        ep = Endpoint(self.dir, self.prefix, self.port, signing_key).start()
        self.endpoints.append(ep)
        return ep

    def kill_endpoint(self) -> DeadEndpoint:
        for ep in self.endpoints:
            ep.kill()
        dead = DeadEndpoint(self.port)
        self.dead.append(dead)
        return dead

    def close(self) -> None:
        for ep in self.endpoints:
            ep.kill()
        for d in self.dead:
            d.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/ironflow"

    def fid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def register(self, server: Server | None = None) -> None:
        """Registers every push_app function as push at this kit's endpoint, with the SDK's own body."""
        for fn in push_app.build(self.prefix):
            r = (server or self.server).connect_json(
                "RegisterFunction", registration_body(fn, mode="push", endpoint_url=self.url))
            assert r.status == 200, r

    def start_run(self, name: str, data: dict[str, Any], server: Server | None = None) -> str:
        out = ifconf.emit_rest(server or self.server, f"{self.prefix}.{name}", data)
        assert len(out["run_ids"]) == 1, out
        return out["run_ids"][0]

    def run(self, rid: str, server: Server | None = None) -> dict[str, Any]:
        r = (server or self.server).request("GET", f"/api/v1/runs/{rid}")
        assert r.status == 200, r
        return r.json()

    def steps(self, rid: str) -> list[dict[str, Any]]:
        r = self.server.request("GET", f"/api/v1/runs/{rid}/steps")
        assert r.status == 200, r
        return r.json()["steps"]

    def kinds(self, rid: str) -> list[str]:
        r = self.server.request("GET", f"/api/v1/runs/{rid}/history")
        assert r.status == 200, r
        return [e["kind"] for e in r.json()["entries"]]

    def wait_status(self, rid: str, status: str, server: Server | None = None) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            run = self.run(rid, server)
            if run["status"] == status:
                return run
            if run["status"] in ifconf.TERMINAL_REST:
                raise AssertionError(f"run {rid} ended {run['status']}, expected {status}: {run}")
            return None
        return until(check, f"run {rid} {status}", state=lambda: self.run(rid, server))

    def key(self, name: str) -> str:
        return f"{self.fid(name)}|{self.url}"

    def breaker(self, name: str, server: Server | None = None) -> dict[str, Any] | None:
        states = (server or self.server).rest().circuit_breakers_list()
        assert isinstance(states, list), states
        return next((b for b in states if b["key"] == self.key(name)), None)

    def wait_breaker(self, name: str, state: str, server: Server | None = None) -> dict[str, Any]:
        return until(lambda: (b := self.breaker(name, server)) is not None and b["state"] == state and b,
                     f"breaker of {self.fid(name)} {state}", state=lambda: self.breaker(name, server))


@pytest.fixture(scope="session")
def push_server(backend: str) -> Iterator[Server]:
    srv, db = ifconf.start_server(backend, SERVER_ARGS, SERVER_ENV)
    try:
        yield srv
        code, _ = srv.stop()
        assert code == 0, f"graceful shutdown failed on {backend}: exit {code}\n{srv.logs()}"
    finally:
        ifconf.cleanup(srv, db)


@pytest.fixture
def pk(push_server: Server, tmp_path: Path) -> Iterator[PushKit]:
    kit = PushKit(push_server, tmp_path)
    try:
        yield kit
    finally:
        kit.close()


def open_breaker(pk: PushKit, server: Server | None = None) -> tuple[str, DeadEndpoint]:
    """Registers, kills the endpoint, starts a run: five failed attempts open the breaker."""
    pk.endpoint()
    pk.register(server)
    dead = pk.kill_endpoint()
    rid = pk.start_run("simple", {"n": 7}, server)
    opened = pk.wait_breaker("simple", "open", server)
    assert opened["consecutive_fails"] == 5, opened
    assert opened["function_id"] == pk.fid("simple") and opened["endpoint"] == pk.url, opened
    assert dead.count == 5, f"expected exactly the 5 failed requests, got {dead.count}"
    # The breaker is recorded before the failed attempt that opened it: wait for that attempt too.
    until(lambda: pk.run(rid, server)["attempt"] == 6, "the fifth failure recorded",
          state=lambda: pk.run(rid, server))
    return rid, dead


def assert_held(pk: PushKit, rid: str, dead: DeadEndpoint, server: Server | None = None) -> None:
    """While the breaker is open nothing is sent, and the run waits (no attempts burnt, not failed).

    The witness is a run of another push function on a healthy endpoint that needs two requests 0.3 s
    apart. The dispatcher's passes are sequential, and once each endpoint has been served it takes due
    functions in id order; the witness's id sorts after the held function's (same prefix plus "w"). So
    its second request is sent in a pass that began after the held run's retry was due (0.1 s) and
    considered the held run first: when the witness has completed, a breaker that let work through
    would already have claimed the held run."""
    witness = PushKit(server or pk.server, pk.dir, prefix=f"{pk.prefix}w")
    try:
        ep = witness.endpoint()
        witness.register(server)
        wid = witness.start_run("nap", {}, server)
        assert witness.wait_status(wid, "completed", server)["output"] == {"sum": 3}
        assert len(ep.requests()) == 2, ep.requests()
    finally:
        witness.close()
    assert dead.count == 5, f"requests went out while the breaker was open: {dead.count}"
    run = pk.run(rid, server)
    assert run["status"] not in ifconf.TERMINAL_REST and run["attempt"] == 6, run


# ── tests ────────────────────────────────────────────────────────────────────────────────────────


def test_push_flow_with_sleep_wait_and_invoke_completes(pk: PushKit) -> None:
    r = pk.server.request("POST", "/api/v1/secrets", json_body={"name": "PUSH_TOKEN", "value": "tok-1"})
    assert r.status in (200, 201, 409), r
    if r.status == 409:
        r = pk.server.request("PUT", "/api/v1/secrets/PUSH_TOKEN", json_body={"value": "tok-1"})
        assert r.status == 200, r
    # Another secret exists; the flow declares only PUSH_TOKEN, so its request carries only that.
    r = pk.server.request("POST", "/api/v1/secrets", json_body={"name": "PUSH_UNDECLARED", "value": "x"})
    assert r.status in (200, 201, 409), r
    ep = pk.endpoint()
    pk.register()
    rid = pk.start_run("flow", {"n": 4, "order": "o-1"})

    until(lambda: any(s["name"] == "approval" and s["status"] == "waiting" for s in pk.steps(rid)),
          "the wait_for_event step", state=lambda: pk.steps(rid))
    ifconf.emit_rest(pk.server, f"{pk.prefix}.approved", {"order": "o-2", "by": "mallory"})
    ifconf.emit_rest(pk.server, f"{pk.prefix}.approved", {"order": "o-1", "by": "ann"})
    run = pk.wait_status(rid, "completed")

    out = run["output"]
    assert {k: out[k] for k in ("a", "b", "approved_by", "child", "token")} == {
        "a": 5, "b": 11, "approved_by": "ann", "child": {"doubled": 10}, "token": "tok-1"}, run
    assert out["secret_names"] == ["PUSH_TOKEN"], out
    assert isinstance(out["spawned"], str) and out["spawned"], out
    assert pk.wait_status(out["spawned"], "completed")["output"] == {"doubled": 200}
    steps = {s["name"]: s for s in pk.steps(rid)}
    assert {"a", "nap", "approval", "b"} <= set(steps), steps
    assert all(s["status"] == "completed" for s in steps.values()), steps
    assert steps["approval"]["output"]["data"] == {"order": "o-1", "by": "ann"}, steps["approval"]
    # Memoized: each step body ran once although the endpoint was called once per resume.
    assert sorted(ep.whats(rid)) == ["a", "b"], ep.whats(rid)
    requests = ep.requests()
    assert len(requests) >= 5 and all(r["status"] == 200 and r["signed"] for r in requests), requests
    kinds = pk.kinds(rid)
    assert kinds.count("run.yielded") >= 4 and kinds[-1] == "run.completed", kinds
    assert pk.breaker("flow") is None or pk.breaker("flow")["state"] == "closed"


def test_wrong_signing_key_is_rejected_and_counted(pk: PushKit) -> None:
    ep = pk.endpoint(signing_key="not-the-server-key")
    pk.register()
    rid = pk.start_run("twice", {})
    run = until(lambda: (r := pk.run(rid))["status"] == "failed" and r, f"run {rid} failed",
                state=lambda: pk.run(rid))
    assert run["error"]["code"] == "PUSH_ENDPOINT_ERROR", run
    assert "401" in run["error"]["message"] and "signature" in run["error"]["message"].lower(), run
    assert run["attempt"] == 2, run
    assert [r["status"] for r in ep.requests()] == [401, 401], ep.requests()
    assert all(r["signed"] for r in ep.requests())
    assert ep.whats() == [], "the endpoint must not run a handler for a badly signed request"
    breaker = pk.breaker("twice")
    assert breaker is not None and breaker["state"] == "closed" and breaker["consecutive_fails"] == 2, breaker
    assert "401" in breaker.get("last_error", ""), breaker


def test_breaker_opens_stops_requests_and_resumes_after_reset(pk: PushKit) -> None:
    rid, dead = open_breaker(pk)
    assert_held(pk, rid, dead)
    assert pk.run(rid)["attempt"] == 6, pk.run(rid)

    dead.close()
    ep = pk.endpoint()
    reset = pk.server.rest().circuit_breakers_reset(pk.key("simple"))
    assert reset["state"] == "closed" and reset["consecutive_fails"] == 0, reset
    run = pk.wait_status(rid, "completed")
    assert run["output"] == {"n": 7} and run["attempt"] == 6, run
    assert ep.whats(rid) == ["only"], ep.whats(rid)
    assert pk.breaker("simple")["state"] == "closed"


def test_breaker_reset_unknown_or_malformed_key(pk: PushKit) -> None:
    r = pk.server.request("POST", "/api/v1/circuit-breakers/no-separator/reset")
    ifconf.assert_json_error(r, 400, mentions=("key",))
    key = f"{pk.fid('nothing')}|http://127.0.0.1:1/x".replace("|", "%7C").replace("/", "%2F").replace(":", "%3A")
    r = pk.server.request("POST", f"/api/v1/circuit-breakers/{key}/reset")
    ifconf.assert_json_error(r, 404, mentions=("circuit breaker",))


def test_push_registration_needs_an_http_endpoint(pk: PushKit) -> None:
    fn = push_app.build(pk.prefix)[2]
    body = registration_body(fn, mode="pull")
    body["preferredMode"] = "EXECUTION_MODE_PUSH"
    ifconf.assert_json_error(pk.server.connect_json("RegisterFunction", body), 400, mentions=("endpoint",))
    body = registration_body(fn, mode="push", endpoint_url="file:///etc/passwd")
    ifconf.assert_json_error(pk.server.connect_json("RegisterFunction", body), 400, mentions=("http",))


def test_breaker_state_survives_a_server_restart(backend: str, tmp_path: Path) -> None:
    srv, db = ifconf.start_server(backend, SERVER_ARGS, SERVER_ENV)
    pk = PushKit(srv, tmp_path)
    try:
        rid, dead = open_breaker(pk)
        port = srv.port
        code, _ = srv.stop()
        assert code == 0, srv.logs()
        srv.start(port)
        after = pk.breaker("simple")
        assert after is not None and after["state"] == "open" and after["consecutive_fails"] == 5, after
        assert_held(pk, rid, dead)

        dead.close()
        pk.endpoint()
        srv.rest().circuit_breakers_reset(pk.key("simple"))
        assert pk.wait_status(rid, "completed")["output"] == {"n": 7}
    finally:
        pk.close()
        ifconf.cleanup(srv, db)


def test_two_servers_on_one_postgres_share_breaker_state(postgres_admin: str, tmp_path: Path) -> None:
    first, db = ifconf.start_server("postgres", SERVER_ARGS, SERVER_ENV)
    second = Server(backend="postgres", workdir=Path(tempfile.mkdtemp(prefix="ironflow-conf-postgres-")),
                    db_url=first.db_url, extra_args=list(SERVER_ARGS), extra_env=dict(SERVER_ENV))
    pk = PushKit(first, tmp_path)
    try:
        # One database, one tenancy: the second node finds it bootstrapped and uses the first boot's key.
        second.key_file.write_text(first.api_key)
        second.start()
        rid, dead = open_breaker(pk)
        seen = pk.wait_breaker("simple", "open", second)
        assert seen["consecutive_fails"] == 5, seen
        # With the first node stopped the second's dispatcher is the only one: it holds the run too.
        port = first.port
        code, _ = first.stop()
        assert code == 0, first.logs()
        assert_held(pk, rid, dead, second)
        first.start(port)

        dead.close()
        pk.endpoint()
        reset = second.rest().circuit_breakers_reset(pk.key("simple"))
        assert reset["state"] == "closed", reset
        assert pk.wait_breaker("simple", "closed", first)["consecutive_fails"] == 0
        assert pk.wait_status(rid, "completed")["output"] == {"n": 7}
    finally:
        pk.close()
        second.kill()
        shutil.rmtree(second.workdir, ignore_errors=True)
        ifconf.cleanup(first, db)
