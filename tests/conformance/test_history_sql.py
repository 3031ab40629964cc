"""SQL over the whole history (`QueryService.ExecuteSQL` and `ironflow sql`): one read-only SELECT
over the documented views, narrowed to the caller's environment, with a timeout and a row cap."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import ExecuteSQLRequest

import ifconf
from ifconf import Server


def run_sql(server: Server, statement: str) -> None:
    """Runs a write in the server's own database with the database's own client."""
    if server.backend == "sqlite":
        con = sqlite3.connect(server.workdir / ".ironflow" / "ironflow.db", timeout=30)
        try:
            con.executescript(statement)
            con.commit()
        finally:
            con.close()
        return
    assert server.db_url
    subprocess.run(["psql", server.db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement],
                   capture_output=True, text=True, timeout=60, check=True)


def execute(rpc: IronflowRPC, query: str, **kw: int) -> tuple[list[str], list[list[str]]]:
    resp = rpc.query.execute_sql(ExecuteSQLRequest(query=query, **kw))
    assert resp.total_rows == len(resp.rows)
    return list(resp.columns), [list(r.values) for r in resp.rows]


def test_a_query_reads_the_views_of_its_own_environment_only(server: Server, rpc: IronflowRPC) -> None:
    name = f"hq{uuid.uuid4().hex[:8]}.placed"
    for i in range(3):
        r = server.request("POST", "/api/v1/events", json_body={"name": name, "data": {"i": i}})
        assert r.status == 200, r
    columns, rows = execute(rpc, f"SELECT name, count(*) AS n FROM ironflow_events WHERE name = '{name}' GROUP BY name")
    assert columns == ["name", "n"] and rows == [[name, "3"]]

    # An event of another environment, written straight into the database, is visible to plain
    # SQL but not to ExecuteSQL.
    other = str(uuid.uuid4())
    run_sql(server, f"INSERT INTO environments (id, project_id, name) "
                    f"SELECT '{other}', project_id, 'other-{other[:8]}' FROM environments LIMIT 1;"
                    f"INSERT INTO events (seq, id, env_id, name, data, metadata, source, version, received_at) "
                    f"VALUES (1000000000000, '{uuid.uuid4()}', '{other}', '{name}', '{{}}', '{{}}', 'test', 1, "
                    f"'2026-01-01T00:00:00Z');")
    _, rows = execute(rpc, f"SELECT count(*) FROM ironflow_events WHERE name = '{name}'")
    assert rows == [["3"]]
    _, rows = execute(rpc, f"SELECT count(*) FROM ironflow_events e JOIN ironflow_events f ON f.event_id = e.event_id "
                           f"WHERE e.name = '{name}'")
    assert rows == [["3"]]

    # The row cap and NULLs (as empty text).
    _, rows = execute(rpc, f"SELECT event_id, NULL AS empty_value FROM ironflow_events WHERE name = '{name}'",
                      max_rows=2)
    assert len(rows) == 2 and rows[0][1] == ""

    # The CLI prints it as a table.
    out = subprocess.run([ifconf.ironflow_bin(), "sql", "--server", server.url, "--api-key", server.api_key,
                          f"SELECT name, count(*) AS n FROM ironflow_events WHERE name = '{name}' GROUP BY name"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "NAME" in out.upper() and name in out and "(1 rows)" in out, out


def test_anything_but_reading_the_views_is_refused(server: Server, rpc: IronflowRPC) -> None:
    for query, needle in (("DELETE FROM ironflow_runs", "must be a SELECT"),
                          ("SELECT * FROM events", "not one of the documented views"),
                          ("SELECT * FROM jobs", "not one of the documented views"),
                          ("SELECT pg_sleep(5)", "not allowed"),
                          ("SELECT 1; DROP TABLE events", "one statement"),
                          ("WITH events AS (SELECT 1) SELECT * FROM events", "may not be named"),
                          ("SELECT nope FROM ironflow_runs", "the query failed"),
                          ("", "required")):
        with pytest.raises(IronflowRPCError) as err:
            rpc.query.execute_sql(ExecuteSQLRequest(query=query))
        assert err.value.code == "invalid_argument" and needle in str(err.value), (query, err.value)
    with pytest.raises(IronflowRPCError) as err:
        rpc.query.execute_sql(ExecuteSQLRequest(query="SELECT 1", max_rows=100_000))
    assert err.value.code == "invalid_argument" and "max_rows" in str(err.value)
    # A query that runs past its timeout is stopped and says so (Postgres cuts it off; on SQLite,
    # where nothing could stop it, WITH RECURSIVE is refused).
    with pytest.raises(IronflowRPCError) as slow:
        rpc.query.execute_sql(ExecuteSQLRequest(
            query="WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3000000) "
                  "SELECT count(*) FROM t", timeout_ms=50))
    needle = "timeout" if server.backend == "postgres" else "RECURSIVE"
    assert slow.value.code == "invalid_argument" and needle in str(slow.value), slow.value
    # The server is still answering.
    assert execute(rpc, "SELECT 1 AS one")[1] == [["1"]]
