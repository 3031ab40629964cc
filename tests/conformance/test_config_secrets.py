"""Environment config documents (`/api/v1/config`) and secrets (`/api/v1/secrets`).

Config: full replace (POST), shallow merge (PATCH), revisions, If-Match / If-None-Match, idempotent delete.
Secrets: write-only metadata API on a server started with IRONFLOW_MASTER_KEY (`secrets_server`), refused
without one, ciphertext at rest (read straight from the server's database), and injection into the pull
jobs of a function that declares them (a real ironflow-py `Worker`, tests/conformance/worker_app.py).

All calls go through ironflow-py's `IronflowClient` (`config_*`, `secrets_*`) except where a status the SDK
hides (201/204) or a body the SDK cannot send (malformed JSON) is the point.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ironflow import IronflowClient, IronflowError
from ironflow._http import PreconditionFailedError

import ifconf
from ifconf import Server, assert_json_error, fails, parallel
from workerkit import WorkerKit

ENV = "default"
SECRET_FIELDS = {"name", "description", "revision", "created_at", "updated_at"}


def recent(ts: str) -> dt.datetime:
    parsed = ifconf.parse_ts(ts)
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 120, f"timestamp {ts} is not close to now ({now})"
    return parsed


# ── config ───────────────────────────────────────────────────────────────────────────────────────


def check_config(got: dict[str, Any], name: str, data: dict[str, Any], revision: int) -> None:
    assert set(got) == {"name", "data", "revision", "updatedAt"}, got
    assert got["name"] == name and got["data"] == data and got["revision"] == revision, got
    recent(got["updatedAt"])


def test_config_replace_get_list(rest: IronflowClient, uid: str) -> None:
    name = f"{uid}-app"
    doc = {"a": 1, "b": {"c": [1, 2, {"d": None}]}, "s": "text", "f": 1.5, "t": True}
    assert rest.config_create(name, doc) == {"name": name, "revision": 1}
    got = rest.config_get(name)
    check_config(got, name, doc, 1)

    assert rest.config_create(name, {"x": 1}) == {"name": name, "revision": 2}
    replaced = rest.config_get(name)
    check_config(replaced, name, {"x": 1}, 2)  # a full replace: a and b are gone
    assert ifconf.parse_ts(replaced["updatedAt"]) >= ifconf.parse_ts(got["updatedAt"]), (got, replaced)

    assert rest.config_create(name, {}) == {"name": name, "revision": 3}
    check_config(rest.config_get(name), name, {}, 3)

    listing = rest.config_list()
    assert set(listing) == {"configs"} and isinstance(listing["configs"], list), listing
    mine = [c for c in listing["configs"] if c["name"] == name]
    assert len(mine) == 1 and set(mine[0]) == {"name", "revision", "updatedAt"}, listing
    assert mine[0]["revision"] == 3, mine
    recent(mine[0]["updatedAt"])

    fails(404, rest.config_get, f"{uid}-missing")


def test_config_patch_is_shallow_merge(rest: IronflowClient, uid: str) -> None:
    name = f"{uid}-merge"
    rest.config_create(name, {"a": 1, "b": {"c": 1, "d": 2}, "keep": "yes"})
    assert rest.config_patch(name, {"b": {"c": 9}, "e": True, "a": None}) == {"name": name, "revision": 2}
    # top-level keys are replaced whole (b loses d); a JSON null is stored as a value, not a removal
    check_config(rest.config_get(name), name, {"a": None, "b": {"c": 9}, "e": True, "keep": "yes"}, 2)
    assert rest.config_patch(name, {}) == {"name": name, "revision": 3}
    check_config(rest.config_get(name), name, {"a": None, "b": {"c": 9}, "e": True, "keep": "yes"}, 3)


def test_config_conditions(rest: IronflowClient, uid: str) -> None:
    name = f"{uid}-cond"
    assert rest.config_create(name, {"v": 1}, if_none_match="*") == {"name": name, "revision": 1}
    with pytest.raises(PreconditionFailedError) as info:
        rest.config_create(name, {"v": "clobber"}, if_none_match="*")
    assert info.value.status_code == 412
    check_config(rest.config_get(name), name, {"v": 1}, 1)

    assert rest.config_create(name, {"v": 2}, if_match="1") == {"name": name, "revision": 2}
    fails(412, rest.config_create, name, {"v": "stale"}, if_match="1")
    fails(412, rest.config_patch, name, {"w": "stale"}, if_match="1")
    assert rest.config_patch(name, {"w": 3}, if_match="2") == {"name": name, "revision": 3}
    check_config(rest.config_get(name), name, {"v": 2, "w": 3}, 3)

    fails(412, rest.config_delete, name, if_match="2")
    check_config(rest.config_get(name), name, {"v": 2, "w": 3}, 3)
    assert rest.config_delete(name, if_match="3") is None
    fails(404, rest.config_get, name)

    # If-Match against a config that does not exist fails; If-None-Match: * creates it again at revision 1
    fails(412, rest.config_create, name, {"v": 9}, if_match="3")
    fails(404, rest.config_get, name)
    assert rest.config_create(name, {"v": 4}, if_none_match="*") == {"name": name, "revision": 1}
    fails(400, rest.config_create, name, {"v": 5}, if_match="three")


def test_config_delete_is_idempotent(server: Server, rest: IronflowClient, uid: str) -> None:
    name = f"{uid}-del"
    rest.config_create(name, {"v": 1})
    rest.config_create(name, {"v": 2})
    for _ in range(2):
        r = server.request("DELETE", f"/api/v1/config/{name}")
        assert r.status == 204 and r.body == b"", r
    assert rest.config_delete(name) is None
    fails(404, rest.config_get, name)
    assert name not in [c["name"] for c in rest.config_list()["configs"]]
    assert rest.config_create(name, {"v": 3}) == {"name": name, "revision": 1}, "a recreated config restarts at 1"


def test_config_rejects_non_objects(server: Server, rest: IronflowClient, uid: str) -> None:
    name = f"{uid}-bad"
    for body in ([1, 2], "text", 5, True):
        fails(400, rest.config_create, name, body)  # type: ignore[arg-type]
        fails(400, rest.config_patch, name, body)  # type: ignore[arg-type]
    for raw in (b"null", b"{not json", b""):
        assert_json_error(server.request("POST", f"/api/v1/config/{name}", raw=raw), 400)
        assert_json_error(server.request("PATCH", f"/api/v1/config/{name}", raw=raw), 400)
    fails(404, rest.config_get, name)  # nothing was stored


def test_config_concurrent_create_only(server: Server, uid: str) -> None:
    """If-None-Match: * is create-only under concurrent writers too: exactly one of them creates."""
    n = 8
    for round_ in range(8):
        name = f"{uid}-race{round_}"
        outs = parallel(n, lambda i: server.rest().config_create(name, {"w": i}, if_none_match="*"))
        won = [(i, o) for i, o in enumerate(outs) if isinstance(o, dict)]
        lost = [o for o in outs if isinstance(o, IronflowError) and o.status_code == 412]
        got = server.rest().config_get(name)
        assert len(won) == 1 and len(lost) == n - 1, (
            f"{len(won)} of {n} concurrent create-only writes to config {name!r} succeeded "
            f"(answers: {outs}); stored: {got}")
        assert got["revision"] == 1 and got["data"] == {"w": won[0][0]}, (won, got)


def test_config_concurrent_first_writes_get_distinct_revisions(server: Server, uid: str) -> None:
    """Unconditional full replaces racing to create a config: every write is its own revision (1..n), and
    the stored document is the one written at the last revision."""
    n = 8
    for round_ in range(4):
        name = f"{uid}-first{round_}"
        outs = parallel(n, lambda i: server.rest().config_create(name, {"w": i}))
        assert all(isinstance(o, dict) for o in outs), outs
        revs = sorted(o["revision"] for o in outs)
        got = server.rest().config_get(name)
        assert revs == list(range(1, n + 1)), (
            f"{n} concurrent writes creating config {name!r} were answered with revisions {revs}, "
            f"expected each its own revision 1..{n}; stored: {got}")
        last = next(i for i, o in enumerate(outs) if o["revision"] == n)
        assert got["revision"] == n and got["data"] == {"w": last}, (outs, got)


def test_config_concurrent_compare_and_set(server: Server, uid: str) -> None:
    n = 8
    name = f"{uid}-cas"
    server.rest().config_create(name, {"v": 0})
    outs = parallel(n, lambda i: server.rest().config_patch(name, {"v": i + 1}, if_match="1"))
    won = [(i, o) for i, o in enumerate(outs) if isinstance(o, dict)]
    lost = [o for o in outs if isinstance(o, IronflowError) and o.status_code == 412]
    assert len(won) == 1 and len(lost) == n - 1, outs
    got = server.rest().config_get(name)
    assert got["revision"] == 2 and got["data"] == {"v": won[0][0] + 1}, (won, got)


# ── secrets ──────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def srest(secrets_server: Server) -> IronflowClient:
    return secrets_server.rest()


@pytest.fixture
def swk(secrets_server: Server, tmp_path) -> Iterator[WorkerKit]:  # noqa: ANN001
    """A worker kit on the master-key server; its worker processes are SIGKILLed after the test."""
    kit = WorkerKit(secrets_server, tmp_path)
    try:
        yield kit
    finally:
        kit.close()


def plaintext() -> str:
    return "pt-" + uuid.uuid4().hex + "-" + uuid.uuid4().hex


def check_meta(meta: dict[str, Any], name: str, description: str, revision: int) -> None:
    assert set(meta) == SECRET_FIELDS, f"secret metadata must be exactly {sorted(SECRET_FIELDS)}: {meta}"
    assert meta["name"] == name and meta["description"] == description and meta["revision"] == revision, meta
    assert ifconf.parse_ts(meta["updated_at"]) >= ifconf.parse_ts(meta["created_at"]), meta
    recent(meta["updated_at"])


def test_secrets_need_master_key(server: Server, rest: IronflowClient, uid: str) -> None:
    err = fails(412, rest.secrets_create, {"name": f"{uid}_s", "value": "v"}, x_ironflow_environment_id=ENV)
    assert "IRONFLOW_MASTER_KEY" in str(err), err
    r = server.request("POST", "/api/v1/secrets", json_body={"name": f"{uid}_s", "value": "v"},
                       headers={"X-Ironflow-Environment-ID": ENV})
    assert_json_error(r, 412, mentions=("IRONFLOW_MASTER_KEY",))
    fails(404, rest.secrets_get, f"{uid}_s", x_ironflow_environment_id=ENV)
    assert f"{uid}_s" not in [s["name"] for s in rest.secrets_list(x_ironflow_environment_id=ENV)]


def test_secret_lifecycle(secrets_server: Server, srest: IronflowClient, uid: str) -> None:
    name = f"{uid}_db"
    v1, v2 = plaintext(), plaintext()
    seen: list[str] = []

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        out = fn(*args, x_ironflow_environment_id=ENV)
        seen.append(json.dumps(out))
        return out

    created = call(srest.secrets_create, {"name": name, "value": v1, "description": "primary db"})
    check_meta(created, name, "primary db", 1)
    assert created["created_at"] == created["updated_at"], created

    err = fails(409, srest.secrets_create, {"name": name, "value": "other"}, x_ironflow_environment_id=ENV)
    assert name in str(err), err

    listing = call(srest.secrets_list)
    assert isinstance(listing, list), f"GET /api/v1/secrets must be a bare JSON array: {listing!r}"
    assert [s for s in listing if s["name"] == name] == [created], listing
    assert call(srest.secrets_get, name) == created

    updated = call(srest.secrets_update, name, {"value": v2})
    check_meta(updated, name, "primary db", 2)
    assert updated["created_at"] == created["created_at"], (created, updated)
    assert ifconf.parse_ts(updated["updated_at"]) >= ifconf.parse_ts(created["updated_at"])

    patched = call(srest.secrets_patch, name, {"description": "replica db"})
    assert patched["description"] == "replica db" and patched["revision"] >= 2, patched
    check_meta(patched, name, "replica db", patched["revision"])
    assert call(srest.secrets_get, name) == patched

    for text in seen:
        assert v1 not in text and v2 not in text, f"a secret value came back through the API: {text}"
        assert '"value"' not in text, text

    r = secrets_server.request("DELETE", f"/api/v1/secrets/{name}", headers={"X-Ironflow-Environment-ID": ENV})
    assert r.status == 204 and r.body == b"", r
    fails(404, srest.secrets_get, name, x_ironflow_environment_id=ENV)
    fails(404, srest.secrets_delete, name, x_ironflow_environment_id=ENV)
    fails(404, srest.secrets_update, name, {"value": "x"}, x_ironflow_environment_id=ENV)
    assert name not in [s["name"] for s in srest.secrets_list(x_ironflow_environment_id=ENV)]

    again = srest.secrets_create({"name": name, "value": v1}, x_ironflow_environment_id=ENV)
    check_meta(again, name, "", 1)


def test_secret_create_answers_201(secrets_server: Server, uid: str) -> None:
    name = f"{uid}_raw"
    hdr = {"X-Ironflow-Environment-ID": ENV}
    r = secrets_server.request("POST", "/api/v1/secrets", json_body={"name": name, "value": "v"}, headers=hdr)
    assert r.status == 201, r
    check_meta(r.json(), name, "", 1)
    assert_json_error(secrets_server.request("POST", "/api/v1/secrets", json_body={"name": name, "value": "w"},
                                             headers=hdr), 409)


def db_ciphertexts(server: Server, names: list[str]) -> dict[str, bytes]:
    """name -> secrets.ciphertext, read directly from the server's database."""
    if server.backend == "sqlite":
        path = server.workdir / ".ironflow" / "ironflow.db"
        assert path.exists(), f"no SQLite database at {path}"
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            marks = ",".join("?" * len(names))
            rows = con.execute(f"SELECT name, ciphertext FROM secrets WHERE name IN ({marks})", names).fetchall()
        finally:
            con.close()
        return {n: bytes(c) for n, c in rows}
    assert server.db_url, "a Postgres server without a database URL"
    quoted = ",".join("'" + n.replace("'", "''") + "'" for n in names)
    r = subprocess.run(
        ["psql", server.db_url, "-X", "-At", "-F", "|", "-c",
         f"SELECT name, encode(ciphertext, 'hex') FROM secrets WHERE name IN ({quoted})"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, bytes] = {}
    for line in r.stdout.splitlines():
        n, hexed = line.split("|", 1)
        out[n] = bytes.fromhex(hexed)
    return out


def test_secret_values_are_ciphertext_at_rest(secrets_server: Server, srest: IronflowClient, uid: str) -> None:
    a, b = f"{uid}_a", f"{uid}_b"
    va, vb1, vb2 = plaintext(), plaintext(), plaintext()
    srest.secrets_create({"name": a, "value": va}, x_ironflow_environment_id=ENV)
    srest.secrets_create({"name": b, "value": vb1}, x_ironflow_environment_id=ENV)
    before = db_ciphertexts(secrets_server, [a, b])
    srest.secrets_update(b, {"value": vb2}, x_ironflow_environment_id=ENV)
    after = db_ciphertexts(secrets_server, [a, b])

    assert set(before) == set(after) == {a, b}, (before, after)
    for name, values in ((a, [va]), (b, [vb1, vb2])):
        for ct in (before[name], after[name]):
            assert len(ct) >= len(values[-1]), f"ciphertext of {name} is shorter than its value: {ct!r}"
            for v in (va, vb1, vb2):
                for form in (v.encode(), v.encode()[:16], v.encode().hex().encode()):
                    assert form not in ct, f"plaintext bytes of a secret are stored in secrets.ciphertext ({name})"
    assert after[a] == before[a], "an untouched secret's ciphertext changed"
    assert after[b] != before[b], "updating a secret's value did not change its ciphertext"

    if secrets_server.backend == "sqlite":
        # nowhere in the database files (tables, history, WAL) does a plaintext value appear
        files = list((secrets_server.workdir / ".ironflow").glob("ironflow.db*"))
        assert files, "no SQLite files found"
        for f in files:
            data = f.read_bytes()
            for v in (va, vb1, vb2):
                assert v.encode() not in data, f"a secret value is stored in plaintext in {f.name}"


def test_secrets_injected_into_declaring_runs(swk: WorkerKit, srest: IronflowClient) -> None:
    a, b = f"{swk.prefix}_A", f"{swk.prefix}_B"  # the worker's `{prefix}-secrets` declares only `{prefix}_A`
    va, vb = plaintext(), plaintext()
    srest.secrets_create({"name": a, "value": va}, x_ironflow_environment_id=ENV)
    srest.secrets_create({"name": b, "value": vb}, x_ironflow_environment_id=ENV)
    swk.worker("secrets")

    rid = swk.start_run("secrets")
    run = swk.wait_status(rid, "completed")
    assert run["output"] == {"secrets": {a: va}}, f"expected only the declared secret: {run['output']}"

    # the value is read when the job is handed out: an update reaches the next run
    va2 = plaintext()
    srest.secrets_update(a, {"value": va2}, x_ironflow_environment_id=ENV)
    rid2 = swk.start_run("secrets")
    assert swk.wait_status(rid2, "completed")["output"] == {"secrets": {a: va2}}

    # a function that declares nothing gets nothing
    rid3 = swk.start_run("nosecrets")
    assert swk.wait_status(rid3, "completed")["output"] == {"secrets": {}}
