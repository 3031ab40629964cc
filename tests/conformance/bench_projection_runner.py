"""Benchmark (not a test): a managed projection through ironflow-py 0.53.0's own runner.

    IRONFLOW_BIN=target/release/ironflow tests/conformance/.venv/bin/python \
        tests/conformance/bench_projection_runner.py --backend sqlite|postgres [--events 10000]

Emits N events (8 REST clients), then starts a real runner process (projection_app.py, scenario
`tally`: per-customer counts and sums) and prints the catch-up time from the runner's start, and
events/s from its first saved event to the last. It checks the folded state adds up to N.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ifconf

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--customers", type=int, default=20,
                    help="partitions, emitted round-robin (1: every run of events is one partition)")
    args = ap.parse_args()
    server, db = ifconf.start_server(args.backend)
    prefix = f"b{uuid.uuid4().hex[:8]}"
    name = f"{prefix}-tally"
    try:
        def emit(i: int) -> int:
            r = server.request("POST", "/api/v1/events", json_body={
                "name": f"{prefix}.sale", "data": {"customer": f"c{i % args.customers}", "amount": 1}})
            assert r.status == 200, r
            return int(r.json()["seq"])

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            last = max(pool.map(emit, range(args.events)))
        emit_secs = time.monotonic() - started

        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONFLOW_")}
        env["IRONFLOW_NO_DISCOVERY"] = "1"
        tmp = Path(tempfile.mkdtemp(prefix="bench-runner-"))
        log = open(tmp / "runner.log", "wb")  # noqa: SIM115 - closed below
        t0 = time.monotonic()
        runner = subprocess.Popen(
            [sys.executable, str(HERE / "projection_app.py"), "--server", server.url, "--key", server.api_key,
             "--prefix", prefix, "--effects", str(tmp / "effects"), "tally"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        first_move = None
        try:
            while True:
                r = server.request("GET", f"/api/v1/projections/{name}/status")
                if r.status == 200:
                    s = r.json()
                    if first_move is None and s["cursor_seq"] > 0:
                        first_move = time.monotonic()
                    if s["cursor_seq"] >= last and s["lag_events"] == 0:
                        break
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the runner did not catch up within 600 s")
                time.sleep(0.05)
            done = time.monotonic()
        finally:
            runner.kill()
            log.close()
        parts = server.request("GET", f"/api/v1/projections/{name}/partitions?limit=100").json()["partitions"]
        total = 0
        with server.rpc() as rpc:
            from ironflow.rpc.v1 import GetProjectionRequest
            for p in parts:
                st = rpc.projections.get(GetProjectionRequest(name=name, partition=p)).state.to_python()
                total += int(st["count"])
        assert total == args.events, f"the folded state counts {total} events, not {args.events}"
        catch_up = done - t0
        fold = done - (first_move or t0)
        print(f"ironflow bench projection-runner [{args.backend}] {args.events} events over {args.customers} partitions "
              f"(emitted at {args.events / emit_secs:.0f}/s): caught up {catch_up:.2f} s after the runner "
              f"started; {args.events / fold:.0f} events/s from its first save to the last")
        print(json.dumps({"backend": args.backend, "events": args.events, "catch_up_secs": catch_up,
                          "events_per_sec": args.events / fold}))
    finally:
        server.stop()
        ifconf.cleanup(server, db)


if __name__ == "__main__":
    main()
