"""Process lifecycle: graceful shutdown on SIGTERM and durability across a restart on the same storage."""

from __future__ import annotations

from ironflow.rpc.v1 import GetFunctionRequest, GetRunRequest

import ifconf
from ifconf import STOP_TIMEOUT_S


def test_sigterm_then_restart_keeps_data(backend: str) -> None:
    server, db = ifconf.start_server(backend)
    try:
        fid = f"fn-{ifconf.uid()}"
        name = f"{fid}.persist"
        with server.rpc() as rpc:
            assert ifconf.register(rpc, fid, [name]).function.version == 1
            out = ifconf.emit_rpc(rpc, name, {"k": "v"}, idempotency_key=f"idem-{fid}")
            assert len(out.run_ids) == 1
        rest_out = ifconf.emit_rest(server, name, {"k": "rest"})

        code, took = server.stop()
        assert code is not None, f"server ignored SIGTERM for {STOP_TIMEOUT_S}s\n{server.logs()}"
        assert code == 0, f"server exited {code} after SIGTERM (took {took:.1f}s)\n{server.logs()}"
        if backend == "sqlite":
            assert (server.workdir / ".ironflow" / "ironflow.db").is_file(), "SQLite file not at .ironflow/ironflow.db"

        server.start()  # same cwd / same database: migrations must be re-runnable, data must survive
        with server.rpc() as rpc:
            fn = rpc.functions.get(GetFunctionRequest(id=fid))
            assert fn.version == 1
            again = ifconf.register(rpc, fid, [name])
            assert (again.created, again.function.version) == (False, 1)
            run = rpc.runs.get(GetRunRequest(id=out.run_ids[0]))
            assert run.event_id == out.event_id and run.function_id == fid
            # The idempotency key is remembered across the restart.
            repeat = ifconf.emit_rpc(rpc, name, {"k": "v"}, idempotency_key=f"idem-{fid}")
            assert repeat.event_id == out.event_id and list(repeat.run_ids) == list(out.run_ids)
        rest = server.rest()
        assert rest.events_get(out.event_id)["data"] == {"k": "v"}
        assert rest.events_get(rest_out["event_id"])["data"] == {"k": "rest"}
        assert {e["id"] for e in ifconf.list_all_events(rest, name=name)} == {out.event_id, rest_out["event_id"]}

        code, took = server.stop()
        assert code == 0, f"second SIGTERM: exit {code} after {took:.1f}s\n{server.logs()}"
    finally:
        ifconf.cleanup(server, db)
