"""The browser tests' worker: a real ironflow-py pull worker (not a test module).

    python worker.py --server URL --key KEY --gates DIR

Functions (all triggered by `e2e.<name>`):
- e2e-checkout: reserve, charge (waits for the file DIR/<data.gate> when data.gate is set), ship
  (waits for DIR/<data.gate_ship>). The test pauses a run held at the first gate; ironflow-py
  batches checkpoints, so the second gate makes charge's checkpoint the boundary the server sees.
- e2e-broken: fetch fails for good (NonRetryableError); the test patches its output and resumes.
- e2e-many: data.steps steps in a row (the 500-step run page figure).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from ironflow.worker import NonRetryableError, Worker, function

GATES: Path


async def gate(name: str | None) -> None:
    while name is not None and not (GATES / name).exists():
        await asyncio.sleep(0.02)


@function(id="e2e-checkout", triggers=[{"event": "e2e.checkout"}])
async def checkout(ctx: Any) -> Any:
    async def reserve() -> Any:
        return {"reserved": True}

    async def charge() -> Any:
        await gate(ctx.event.data.get("gate"))
        return {"charged": 42}

    async def ship() -> Any:
        await gate(ctx.event.data.get("gate_ship"))
        return {"shipped": True}

    r = await ctx.step.run("reserve", reserve)
    c = await ctx.step.run("charge", charge)
    s = await ctx.step.run("ship", ship)
    return {**r, **c, **s}


@function(id="e2e-broken", triggers=[{"event": "e2e.broken"}], retry={"max_attempts": 1})
async def broken(ctx: Any) -> Any:
    async def fetch() -> Any:
        raise NonRetryableError("upstream returned garbage", code="BAD_UPSTREAM")

    price = await ctx.step.run("fetch", fetch)

    async def total() -> Any:
        return price["price"] * 2

    return {"total": await ctx.step.run("total", total)}


@function(id="e2e-many", triggers=[{"event": "e2e.many"}])
async def many(ctx: Any) -> Any:
    n = int(ctx.event.data.get("steps", 500))
    for i in range(n):
        async def one(i: int = i) -> Any:
            return i
        await ctx.step.run(f"step-{i:03d}", one)
    return {"steps": n}


def main() -> None:
    global GATES
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--gates", required=True)
    args = ap.parse_args()
    GATES = Path(args.gates)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    Worker(functions=[checkout, broken, many], server_url=args.server, api_key=args.key,
           worker_id="e2e-worker", max_concurrent_jobs=4, heartbeat_interval=1,
           checkpoint_interval=0.2, poll_wait=20).run()


if __name__ == "__main__":
    main()
