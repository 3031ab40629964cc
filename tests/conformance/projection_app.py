"""A real ironflow-py projection runner process for the projection conformance tests (not a test module).

    python projection_app.py --server URL --key KEY --prefix P --effects FILE [--delay-ms N] SCENARIO...

Scenarios (each one projection named `{P}-{scenario}`):
- `counters`: managed, partitioned by stream (`$entity_id`), follows `{P}.order`; each partition's
  state counts its events and lists their ids, so a test can see an event applied twice.
- `ledger`: managed, one global partition, follows `{P}.entry`; the state lists the ids in order.
- `tally`: managed, partitioned by `data.customer`, follows `{P}.sale`; each partition counts its
  events and sums `data.amount` (state of constant size: the runner benchmark uses it).
- `gated`: managed, follows `{P}.job`; an event with `data.poison` fails its handler until the
  file `fixed` exists next to --effects (the test creates it: "the bug is fixed").
- `external`: external, follows `{P}.order`; each handled event appends one JSON line
  `{"id", "seq", "pid"}` to --effects (O_APPEND, survives SIGKILL).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ironflow.projection import create_projection
from ironflow.worker import Worker

EFFECTS: Path
DELAY_S = 0.0


def _slow() -> None:
    if DELAY_S:
        time.sleep(DELAY_S)


def count(state: dict[str, Any], event: Any, ctx: Any) -> dict[str, Any]:
    _slow()
    ids = list(state.get("ids", []))
    ids.append(event.id)
    return {"count": int(state.get("count", 0)) + 1, "ids": ids, "partition": event.metadata.get("__partition")}


def ledger(state: dict[str, Any], event: Any, ctx: Any) -> dict[str, Any]:
    _slow()
    return {"ids": [*state.get("ids", []), event.id], "last_seq": event.seq}


def tally(state: dict[str, Any], event: Any, ctx: Any) -> dict[str, Any]:
    _slow()
    return {"count": int(state.get("count", 0)) + 1,
            "amount": float(state.get("amount", 0)) + float(event.data.get("amount", 0))}


def gated(state: dict[str, Any], event: Any, ctx: Any) -> dict[str, Any]:
    if isinstance(event.data, dict) and event.data.get("poison") and not (EFFECTS.parent / "fixed").exists():
        raise RuntimeError(f"cannot handle {event.id} yet")
    return {"ids": [*state.get("ids", []), event.id]}


def external(event: Any, ctx: Any) -> None:
    _slow()
    fd = os.open(EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({"id": event.id, "seq": event.seq, "pid": os.getpid()}) + "\n").encode())
    finally:
        os.close(fd)


def build(prefix: str) -> dict[str, Any]:
    return {
        "counters": create_projection(
            name=f"{prefix}-counters", events=[f"{prefix}.order"], handler=count,
            initial_state=lambda: {"count": 0, "ids": []}, partition_key="$entity_id", batch_size=50,
        ),
        "ledger": create_projection(
            name=f"{prefix}-ledger", events=[f"{prefix}.entry"], handler=ledger,
            initial_state=lambda: {"ids": []},
        ),
        "tally": create_projection(
            name=f"{prefix}-tally", events=[f"{prefix}.sale"], handler=tally,
            initial_state=lambda: {"count": 0, "amount": 0.0}, partition_key="customer",
        ),
        "gated": create_projection(
            name=f"{prefix}-gated", events=[f"{prefix}.job"], handler=gated,
            initial_state=lambda: {"ids": []},
        ),
        "external": create_projection(
            name=f"{prefix}-external", events=[f"{prefix}.order"], handler=external, mode="external",
        ),
    }


def main() -> None:
    global EFFECTS, DELAY_S
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--effects", required=True)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("scenarios", nargs="+")
    args = ap.parse_args()
    EFFECTS, DELAY_S = Path(args.effects), args.delay_ms / 1000
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    catalog = build(args.prefix)
    worker = Worker(functions=[], projections=[catalog[s] for s in args.scenarios], server_url=args.server,
                    api_key=args.key, reconnect_delay=0.3, drain_timeout=2)
    worker.run()


if __name__ == "__main__":
    main()
