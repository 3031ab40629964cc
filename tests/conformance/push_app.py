"""A real ironflow-py push endpoint for the push conformance tests (not a test module): the SDK's
`ironflow.serve` ASGI app under uvicorn, serving functions named `{PUSH_PREFIX}-...`.

    PUSH_PREFIX=p PUSH_LOG=requests.jsonl PUSH_EFFECTS=effects.jsonl IRONFLOW_SIGNING_KEY=k \\
        python -m uvicorn push_app:app --app-dir tests/conformance --host 127.0.0.1 --port N

Every answered request appends one JSON line to PUSH_LOG (`{"method", "status", "signed", "t"}`) and every step body
one line to PUSH_EFFECTS (`{"what", "run", "attempt"}`), so a test counts requests and side effects from
outside the process. `build(prefix)` is also imported by the tests to register the same functions.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from ironflow.serve import serve
from ironflow.worker import Function, function

FAST_RETRY = {"initial_delay": 0.1, "backoff_factor": 1.0, "max_delay": 0.1}


def _append(path: str | None, line: dict[str, Any]) -> None:
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def body(ctx: Any, what: str, value: Any) -> Callable[[], Any]:
    """A step body that records its side effect and returns `value`."""
    def run() -> Any:
        _append(os.environ.get("PUSH_EFFECTS"), {"what": what, "run": ctx.run.id, "attempt": ctx.run.attempt})
        return value
    return run


def build(p: str) -> list[Function]:
    # A step, a durable sleep, a wait for an event, an invoke, an invoke_async, a step; reads a secret.
    @function(id=f"{p}-flow", triggers=[{"event": f"{p}.flow"}], secrets=["PUSH_TOKEN"],
              retry={"max_attempts": 3, **FAST_RETRY})
    async def flow(ctx: Any) -> Any:
        a = await ctx.step.run("a", body(ctx, "a", ctx.event.data["n"] + 1))
        await ctx.step.sleep("nap", "1s")
        approval = await ctx.step.wait_for_event("approval", event=f"{p}.approved", match="data.order",
                                                 timeout="1m")
        child = await ctx.step.invoke(f"{p}-child", {"x": a}, timeout="30s")
        spawned = await ctx.step.invoke_async(f"{p}-child", {"x": 100})
        b = await ctx.step.run("b", body(ctx, "b", child["doubled"] + 1))
        return {"a": a, "b": b, "approved_by": approval.data["by"], "child": child,
                "spawned": spawned.run_id, "token": ctx.secrets.get("PUSH_TOKEN"),
                "secret_names": sorted(ctx.secrets)}

    @function(id=f"{p}-child")
    async def child(ctx: Any) -> Any:
        return {"doubled": ctx.event.data["x"] * 2}

    # One step; many fast retries (the breaker tests burn attempts against a dead endpoint).
    @function(id=f"{p}-simple", triggers=[{"event": f"{p}.simple"}], retry={"max_attempts": 20, **FAST_RETRY})
    async def simple(ctx: Any) -> Any:
        n = await ctx.step.run("only", body(ctx, "only", ctx.event.data.get("n", 0)))
        return {"n": n}

    # Two attempts, then the run fails.
    @function(id=f"{p}-twice", triggers=[{"event": f"{p}.twice"}], retry={"max_attempts": 2, **FAST_RETRY})
    async def twice(ctx: Any) -> Any:
        return await ctx.step.run("only", body(ctx, "only", "ran"))

    # A step, a short durable sleep, a step: two requests 0.3 s apart (the breaker tests' witness).
    @function(id=f"{p}-nap", triggers=[{"event": f"{p}.nap"}], retry={"max_attempts": 3, **FAST_RETRY})
    async def nap(ctx: Any) -> Any:
        first = await ctx.step.run("before", body(ctx, "before", 1))
        await ctx.step.sleep("nap", "300ms")
        return {"sum": first + await ctx.step.run("after", body(ctx, "after", 2))}

    return [flow, child, simple, twice, nap]


def _app() -> Any:
    inner = serve(build(os.environ.get("PUSH_PREFIX", "push")))
    log = os.environ.get("PUSH_LOG")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        signed = any(k.lower() == b"x-ironflow-signature" for k, _ in scope.get("headers", []))

        async def counted_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                _append(log, {"method": scope["method"], "status": message["status"], "signed": signed,
                              "t": time.time()})
            await send(message)

        await inner(scope, receive, counted_send)

    return app


app = _app()
