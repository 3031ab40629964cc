"""A real ironflow-py pull worker process for the worker conformance tests (not a test module).

    python worker_app.py --server URL --key KEY --prefix P --worker-id W --effects FILE --gates DIR SCENARIO...

Every scenario defines one or more functions with id `{P}-{name}` triggered by the event `{P}.{name}`
(helpers such as invoke children have no trigger). Step bodies append one JSON line per side effect to
the --effects file (`{"what", "run", "attempt", "tag", "t", "pid"}`), so a test can count how often a
body really ran. A body that must block waits for the file `--gates/<name>` to appear (the test creates
it); the wait happens inside the worker, so the test never sleeps to synchronise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ironflow.worker import Function, InvokeError, NonRetryableError, StreamingWorker, Worker, function

EFFECTS: Path
GATES: Path
FAST_RETRY = {"initial_delay": 0.1, "backoff_factor": 2.0, "max_delay": 1}


def effect(ctx: Any, what: str, **extra: Any) -> None:
    """Records one side effect. O_APPEND + one write() per line: atomic and survives SIGKILL."""
    data = ctx.event.data if isinstance(ctx.event.data, dict) else {}
    line = {"what": what, "run": ctx.run.id, "attempt": ctx.run.attempt, "tag": data.get("tag"),
            "t": time.time(), "pid": os.getpid(), **extra}
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


async def gate(name: str) -> None:
    """Blocks until the test opens the gate (creates GATES/name)."""
    path = GATES / name
    while not path.exists():
        await asyncio.sleep(0.02)


def body(ctx: Any, what: str, value: Any, gate_name: str | None = None) -> Callable[[], Any]:
    """A step body: optionally waits for a gate, records the side effect, returns `value`."""
    async def run() -> Any:
        if gate_name is not None:
            effect(ctx, f"{what}:blocked")
            await gate(gate_name)
        effect(ctx, what)
        return value
    return run


def build(p: str) -> dict[str, list[Function]]:
    """All scenario functions for prefix `p`; each scenario lists the functions a worker must serve for it."""

    def ev(name: str) -> list[dict[str, str]]:
        return [{"event": f"{p}.{name}"}]

    # 1 / 2 — three sequential steps; s3 optionally blocks on a gate (crash test) ------------------------
    @function(id=f"{p}-three", triggers=ev("three"))
    async def three(ctx: Any) -> Any:
        n = ctx.event.data["n"]
        a = await ctx.step.run("s1", body(ctx, "s1", n + 1))
        b = await ctx.step.run("s2", body(ctx, "s2", a * 10))
        c = await ctx.step.run("s3", body(ctx, "s3", b + 7, ctx.event.data.get("gate")))
        return {"a": a, "b": b, "c": c}

    # 3 / 4 — step, durable sleep, wait for an event, step ---------------------------------------------
    @function(id=f"{p}-nap", triggers=ev("nap"))
    async def nap(ctx: Any) -> Any:
        t0 = await ctx.step.run("before", body(ctx, "before", time.time()))
        await ctx.step.sleep("nap", ctx.event.data.get("sleep", 1))
        t1 = await ctx.step.run("after", body(ctx, "after", time.time()))
        reply = None
        if ctx.event.data.get("wait"):
            got = await ctx.step.wait_for_event("reply", event=f"{p}.nap-reply", match="data.id", timeout="60s")
            reply = got.data
            await ctx.step.run("replied", body(ctx, "replied", True))
        return {"slept": t1 - t0, "reply": reply}

    # 5 — wait_for_event with a match and a configurable timeout -----------------------------------------
    @function(id=f"{p}-wait", triggers=ev("wait"))
    async def wait(ctx: Any) -> Any:
        await ctx.step.run("first", body(ctx, "first", 1))
        got = await ctx.step.wait_for_event(
            "reply", event=f"{p}.reply", match="data.id", timeout=ctx.event.data.get("timeout", "60s"))
        await ctx.step.run("after", body(ctx, "after", 2))
        return {"reply": got.data, "reply_name": got.name, "reply_id": got.id}

    # 6 — invoke: a child that succeeds, one that fails; the parent catches or lets the failure escape ----
    @function(id=f"{p}-child")
    async def child(ctx: Any) -> Any:
        y = await ctx.step.run("double", body(ctx, "child", ctx.event.data["x"] * 2))
        return {"y": y}

    @function(id=f"{p}-child-bad")
    async def child_bad(ctx: Any) -> Any:
        await ctx.step.run("try", body(ctx, "child-bad", 1))
        raise NonRetryableError("child boom", code="CHILD_BOOM")

    @function(id=f"{p}-parent", triggers=ev("parent"))
    async def parent(ctx: Any) -> Any:
        out = await ctx.step.invoke(f"{p}-child", {"x": ctx.event.data["x"]})
        started = await ctx.step.invoke_async(f"{p}-child", {"x": 100})
        await ctx.step.run("done", body(ctx, "parent-done", True))
        return {"child": out, "async_run_id": started.run_id}

    @function(id=f"{p}-parent-catch", triggers=ev("parent-catch"))
    async def parent_catch(ctx: Any) -> Any:
        try:
            await ctx.step.invoke(f"{p}-child-bad", {"x": 1})
        except InvokeError as exc:
            effect(ctx, "caught", code=exc.code, cause=exc.cause, child_run_id=exc.child_run_id)
            return {"caught": exc.code, "cause": exc.cause}
        return {"caught": None}

    @function(id=f"{p}-parent-fail", triggers=ev("parent-fail"))
    async def parent_fail(ctx: Any) -> Any:
        await ctx.step.invoke(f"{p}-child-bad", {"x": 1})
        effect(ctx, "unreachable")
        return {"unreachable": True}

    # 7 — retryable failures on attempts 1 and 2, success on 3 ------------------------------------------
    @function(id=f"{p}-flaky", triggers=ev("flaky"), retry={"max_attempts": 3, **FAST_RETRY})
    async def flaky(ctx: Any) -> Any:
        await ctx.step.run("prep", body(ctx, "prep", "ready"))

        async def attempt() -> Any:
            effect(ctx, "flaky")
            if ctx.run.attempt < 3:
                raise RuntimeError(f"transient failure on attempt {ctx.run.attempt}")
            return ctx.run.attempt

        won = await ctx.step.run("flaky", attempt)
        return {"succeeded_on": won}

    # 8 — saga: compensations run newest first on a terminal failure ------------------------------------
    def saga_steps(ctx: Any) -> Any:
        async def run() -> None:
            await ctx.step.run("reserve", body(ctx, "reserve", "R1"))
            ctx.step.compensate("reserve", body(ctx, "undo:reserve", None))
            await ctx.step.run("charge", body(ctx, "charge", "C1"))
            ctx.step.compensate("charge", body(ctx, "undo:charge", None))
            await ctx.step.run("ship", body(ctx, "ship", "S1"))
            ctx.step.compensate("ship", body(ctx, "undo:ship", None))
        return run

    @function(id=f"{p}-saga", triggers=ev("saga"), retry={"max_attempts": 5, **FAST_RETRY})
    async def saga(ctx: Any) -> Any:
        await saga_steps(ctx)()
        raise NonRetryableError("card declined", code="CARD_DECLINED")

    @function(id=f"{p}-saga-exhaust", triggers=ev("saga-exhaust"), retry={"max_attempts": 2, **FAST_RETRY})
    async def saga_exhaust(ctx: Any) -> Any:
        await saga_steps(ctx)()
        effect(ctx, "fail")
        raise RuntimeError(f"still broken on attempt {ctx.run.attempt}")

    # 9 — a long sleep to cancel; a step blocked on a gate to cancel while running ------------------------
    @function(id=f"{p}-long", triggers=ev("long"))
    async def long(ctx: Any) -> Any:
        await ctx.step.run("s1", body(ctx, "s1", 1))
        await ctx.step.sleep("long-nap", 60)
        await ctx.step.run("s2", body(ctx, "s2", 2))
        return {"woke": True}

    @function(id=f"{p}-busy", triggers=ev("busy"))
    async def busy(ctx: Any) -> Any:
        await ctx.step.run("s1", body(ctx, "s1", 1))
        await ctx.step.run("blocked", body(ctx, "blocked", 2, ctx.event.data["gate"]))
        await ctx.step.run("s3", body(ctx, "s3", 3))
        return {"finished": True}

    @function(id=f"{p}-quick", triggers=ev("quick"))
    async def quick(ctx: Any) -> Any:
        return {"quick": await ctx.step.run("q", body(ctx, "quick", ctx.event.data.get("n", 0)))}

    # 10 — concurrency limit 1 per event.data.k ---------------------------------------------------------
    @function(id=f"{p}-serial", triggers=ev("serial"), concurrency={"limit": 1, "key": "event.data.k"})
    async def serial(ctx: Any) -> Any:
        name = ctx.event.data["name"]
        await ctx.step.run("work", body(ctx, f"work:{name}", name, ctx.event.data["gate"]))
        return {"name": name}

    # 11 — secrets injection: one function declares the secret `{p}_A`, the other declares none ----------
    @function(id=f"{p}-secrets", triggers=ev("secrets"), secrets=[f"{p}_A"])
    async def with_secrets(ctx: Any) -> Any:
        return {"secrets": dict(ctx.secrets)}

    @function(id=f"{p}-nosecrets", triggers=ev("nosecrets"))
    async def without_secrets(ctx: Any) -> Any:
        return {"secrets": dict(ctx.secrets)}

    # 12 — run control: a step to pause at (gated), a step that fails for good (to patch), retries
    # that run out under on_exhausted="pause" (until the test opens the gate) -----------------------------
    @function(id=f"{p}-edit", triggers=ev("edit"))
    async def edit(ctx: Any) -> Any:
        a = await ctx.step.run("a", body(ctx, "a", 1))
        b = await ctx.step.run("b", body(ctx, "b", 2, ctx.event.data.get("gate")))
        c = await ctx.step.run("c", body(ctx, "c", a + b, ctx.event.data.get("gate_c")))
        return {"a": a, "b": b, "c": c, "secret": ctx.event.data.get("secret")}

    @function(id=f"{p}-broken", triggers=ev("broken"))
    async def broken(ctx: Any) -> Any:
        async def fetch() -> Any:
            effect(ctx, "fetch")
            raise NonRetryableError("upstream returned garbage", code="BAD_UPSTREAM")

        price = await ctx.step.run("fetch", fetch)
        total = await ctx.step.run("total", body(ctx, "total", price["price"] * 2))
        return {"total": total}

    @function(id=f"{p}-exhaust", triggers=ev("exhaust"),
              retry={"max_attempts": 2, **FAST_RETRY, "on_exhausted": "pause"})
    async def exhaust(ctx: Any) -> Any:
        await ctx.step.run("prep", body(ctx, "prep", "ready"))
        ctx.step.compensate("prep", body(ctx, "undo:prep", None))

        async def call() -> Any:
            effect(ctx, "call")
            if not (GATES / ctx.event.data["gate"]).exists():
                raise RuntimeError(f"still down on attempt {ctx.run.attempt}")
            return "up"

        return {"call": await ctx.step.run("call", call)}

    # 13 — scheduling and flow control: a per-second cron, a debounce per user, a throttle of 2/s, an
    # actor key, a step timeout ------------------------------------------------------------------------
    @function(id=f"{p}-cron", triggers=[{"cron": "* * * * * *"}])
    async def cron(ctx: Any) -> Any:
        tick = ctx.event.data["tick"]
        await ctx.step.run("tick", body(ctx, f"tick:{tick}", tick))
        return {"tick": tick, "source": ctx.event.source, "name": ctx.event.name}

    @function(id=f"{p}-debounce", triggers=ev("debounce"), debounce={"period": 1, "key": "user"})
    async def debounced(ctx: Any) -> Any:
        n = ctx.event.data["n"]
        await ctx.step.run("work", body(ctx, f"debounced:{ctx.event.data['user']}:{n}", n))
        return {"n": n, "user": ctx.event.data["user"]}

    @function(id=f"{p}-debounce-long", triggers=ev("debounce-long"), debounce={"period": 30, "key": "user"})
    async def debounced_long(ctx: Any) -> Any:
        return {"n": ctx.event.data["n"]}

    @function(id=f"{p}-throttle", triggers=ev("throttle"), throttle={"limit": 2, "period": 1})
    async def throttled(ctx: Any) -> Any:
        n = ctx.event.data["n"]
        await ctx.step.run("work", body(ctx, f"throttled:{n}", n))
        return {"n": n}

    @function(id=f"{p}-actor", triggers=ev("actor"), actor_key="user")
    async def actor(ctx: Any) -> Any:
        n = ctx.event.data["n"]

        async def work() -> Any:
            effect(ctx, f"actor:start:{ctx.event.data['user']}:{n}")
            await asyncio.sleep(0.15)  # work that takes a while, so overlapping runs would show
            effect(ctx, f"actor:end:{ctx.event.data['user']}:{n}")
            return n
        await ctx.step.run("work", work)
        return {"n": n}

    @function(id=f"{p}-slowstep", triggers=ev("slowstep"), step_timeout=0.5,
              retry={"max_attempts": 3, **FAST_RETRY})
    async def slow_step(ctx: Any) -> Any:
        async def work() -> Any:
            effect(ctx, "slowstep:start")
            if ctx.run.attempt == 1:
                await asyncio.sleep(30)  # far past the step timeout: the SDK abandons it
            return ctx.run.attempt
        return {"attempt": await ctx.step.run("work", work)}

    # the flow map: a step publishes to a topic (ironflow-py sends X-Ironflow-Run-ID with it) ----------
    @function(id=f"{p}-flowmap", triggers=ev("flowmap"))
    async def flowmap(ctx: Any) -> Any:
        await ctx.step.publish(f"{p}.orders", {"n": 1})
        return {"published": True}

    return {
        "flowmap": [flowmap],
        "cron": [cron],
        "debounce": [debounced, debounced_long],
        "throttle": [throttled],
        "actor": [actor],
        "slowstep": [slow_step],
        "control": [edit, broken, exhaust],
        "three": [three],
        "nap": [nap],
        "wait": [wait],
        "invoke": [parent, parent_catch, parent_fail, child, child_bad],
        "flaky": [flaky],
        "saga": [saga, saga_exhaust],
        "cancel": [long, busy, quick],
        "serial": [serial],
        "secrets": [with_secrets, without_secrets],
    }


def main() -> None:
    global EFFECTS, GATES
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--worker-id", required=True)
    ap.add_argument("--effects", required=True)
    ap.add_argument("--gates", required=True)
    ap.add_argument("--max-jobs", type=int, default=10)
    ap.add_argument("--transport", choices=("pull", "stream"), default="pull",
                    help="pull: the REST long-polling Worker; stream: StreamingWorker on WorkerService/Connect")
    ap.add_argument("scenarios", nargs="+")
    args = ap.parse_args()
    EFFECTS, GATES = Path(args.effects), Path(args.gates)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    catalog = build(args.prefix)
    unknown = [s for s in args.scenarios if s not in catalog]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {sorted(catalog)}")
    functions = [f for s in args.scenarios for f in catalog[s]]
    common: dict[str, Any] = dict(
        functions=functions, server_url=args.server, api_key=args.key, worker_id=args.worker_id,
        max_concurrent_jobs=args.max_jobs,
        heartbeat_interval=1,      # the conformance servers run with a 3 s lease TTL
        checkpoint_interval=0.2,   # steps become durable quickly (the crash test waits for that)
        reconnect_delay=0.3,       # the server-restart test needs a quick reconnect
        drain_timeout=2,
    )
    worker = StreamingWorker(**common) if args.transport == "stream" else Worker(**common, poll_wait=20)
    worker.run()


if __name__ == "__main__":
    main()
