"""Helpers for the pull-worker conformance tests: real worker processes (worker_app.py), side-effect files,
gates, and polling the server's observable run state with a deadline (never fixed sleeps as synchronisation).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ifconf
from ifconf import Server

APP = Path(__file__).resolve().parent / "worker_app.py"
#: Lease TTL of the worker-test servers (`--lease-ttl-secs`). Workers heartbeat every second.
LEASE_TTL_S = 3
POLL_INTERVAL_S = 0.05
DEFAULT_DEADLINE_S = 20.0
TERMINAL = ifconf.TERMINAL_REST


class WorkerProc:
    """One `worker_app.py` process (a real ironflow-py `Worker`)."""

    def __init__(self, kit: WorkerKit, scenarios: Iterable[str], name: str, transport: str) -> None:
        self.kit = kit
        self.transport = transport
        self.scenarios = list(scenarios)
        self.worker_id = f"{kit.prefix}-{name}"
        self.log_path = kit.dir / f"{self.worker_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env["IRONFLOW_NO_DISCOVERY"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        args = [
            sys.executable, str(APP),
            "--server", self.kit.server.url, "--key", self.kit.server.api_key,
            "--prefix", self.kit.prefix, "--worker-id", self.worker_id,
            "--effects", str(self.kit.effects_path), "--gates", str(self.kit.gates),
            "--transport", self.transport, *self.scenarios,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.kit.dir, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.kit.procs.append(self)
        self.wait_registered()
        return self

    def wait_registered(self, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        """Until GET /api/v1/workers lists this worker (the SDK registers its functions first)."""
        def listed() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} exited with {self.proc.returncode}\n{self.logs()}")
            r = self.kit.server.request("GET", "/api/v1/workers")
            assert r.status == 200, r
            return any(w.get("id") == self.worker_id for w in r.json().get("workers", []))
        self.kit.until(listed, f"worker {self.worker_id} registered", deadline_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no final flush, no report."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self, limit: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log for {self.worker_id})"
        return f"--- worker {self.worker_id} log (last {limit} chars) ---\n{text[-limit:]}"


class WorkerKit:
    """Per-test state: a unique prefix (function ids `{prefix}-x`, events `{prefix}.x`), a side-effect
    file, a gate directory, and every worker process the test started (all SIGKILLed at teardown)."""

    def __init__(self, server: Server, tmp: Path, transport: str = "pull") -> None:
        self.server = server
        #: How this kit's workers take jobs: "pull" (REST `Worker`) or "stream" (`StreamingWorker`).
        self.transport = transport
        self.prefix = "w" + uuid.uuid4().hex[:10]
        self.dir = tmp
        self.effects_path = tmp / "effects.jsonl"
        self.gates = tmp / "gates"
        self.gates.mkdir(parents=True, exist_ok=True)
        self.procs: list[WorkerProc] = []

    # processes -----------------------------------------------------------------------------------

    def worker(self, *scenarios: str, name: str | None = None) -> WorkerProc:
        return WorkerProc(self, scenarios, name or f"wk{len(self.procs) + 1}", self.transport).start()

    def close(self) -> None:
        for p in self.procs:
            p.kill()

    def diagnostics(self) -> str:
        return "\n".join([*(p.logs() for p in self.procs), self.server.logs(3000)])

    # polling with a deadline ----------------------------------------------------------------------

    def until(self, predicate: Callable[[], Any], what: str, deadline_s: float = DEFAULT_DEADLINE_S,
              state: Callable[[], Any] | None = None) -> Any:
        """Polls `predicate` until it returns something truthy; fails with `state()` and logs on timeout."""
        end = time.monotonic() + deadline_s
        while True:
            got = predicate()
            if got:
                return got
            if time.monotonic() > end:
                last = state() if state is not None else None
                raise AssertionError(f"timed out after {deadline_s}s waiting for {what}; last state: {last!r}\n"
                                     f"{self.diagnostics()}")
            time.sleep(POLL_INTERVAL_S)

    # server state ---------------------------------------------------------------------------------

    def fid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def event(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def emit(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """REST emit of `{prefix}.{name}`; returns {event_id, run_ids}."""
        return ifconf.emit_rest(self.server, self.event(name), data or {})

    def start_run(self, name: str, data: dict[str, Any] | None = None) -> str:
        out = self.emit(name, data)
        assert len(out["run_ids"]) == 1, f"expected exactly one run for {self.event(name)}: {out}"
        return out["run_ids"][0]

    def run(self, rid: str) -> dict[str, Any]:
        r = self.server.request("GET", f"/api/v1/runs/{rid}")
        assert r.status == 200, r
        return r.json()

    def steps(self, rid: str) -> list[dict[str, Any]]:
        r = self.server.request("GET", f"/api/v1/runs/{rid}/steps")
        assert r.status == 200, r
        body = r.json()
        assert isinstance(body.get("steps"), list), body
        return body["steps"]

    def history(self, rid: str) -> list[dict[str, Any]]:
        r = self.server.request("GET", f"/api/v1/runs/{rid}/history")
        assert r.status == 200, r
        body = r.json()
        assert isinstance(body.get("entries"), list), body
        return body["entries"]

    def kinds(self, rid: str) -> list[str]:
        return [e["kind"] for e in self.history(rid)]

    def runs_of(self, fn: str) -> list[dict[str, Any]]:
        r = self.server.request("GET", "/api/v1/runs", params={"function_id": self.fid(fn), "limit": 100})
        assert r.status == 200, r
        return r.json()["runs"]

    def wait_status(self, rid: str, *statuses: str, deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, Any]:
        """Until the run has one of `statuses`; fails early if it ends in another terminal status."""
        def check() -> dict[str, Any] | None:
            run = self.run(rid)
            if run["status"] in statuses:
                return run
            if run["status"] in TERMINAL:
                raise AssertionError(f"run {rid} ended {run['status']}, expected {statuses}: {run}\n"
                                     f"steps: {self.steps(rid)}\n{self.diagnostics()}")
            return None
        return self.until(check, f"run {rid} status in {statuses}", deadline_s, state=lambda: self.run(rid))

    def wait_step(self, rid: str, name: str, status: str = "completed",
                  deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            return next((s for s in self.steps(rid) if s["name"] == name and s["status"] == status), None)
        return self.until(check, f"step {name!r} of run {rid} {status}", deadline_s, state=lambda: self.steps(rid))

    # side effects and gates -----------------------------------------------------------------------

    def effects(self, run: str | None = None) -> list[dict[str, Any]]:
        try:
            text = self.effects_path.read_text()
        except FileNotFoundError:
            return []
        # Only newline-terminated lines: a line being appended right now is read on the next call.
        out = [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]
        return [e for e in out if run is None or e["run"] == run]

    def whats(self, run: str | None = None) -> list[str]:
        return [e["what"] for e in self.effects(run)]

    def wait_effect(self, what: str, run: str | None = None, deadline_s: float = DEFAULT_DEADLINE_S) -> dict:
        return self.until(lambda: next((e for e in self.effects(run) if e["what"] == what), None),
                          f"side effect {what!r}", deadline_s, state=lambda: self.whats(run))

    def open_gate(self, name: str) -> None:
        (self.gates / name).write_text("open")


def step_by_name(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in steps:
        assert s["name"] not in out, f"step {s['name']!r} appears twice: {steps}"
        out[s["name"]] = s
    return out


def error_code(run: dict[str, Any]) -> str | None:
    err = run.get("error")
    if isinstance(err, dict):
        return err.get("code")
    return None
