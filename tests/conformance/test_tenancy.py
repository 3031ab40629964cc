"""Tenancy administration, roles, deny policies and the audit log, through ironflow-py's REST client and RPC
facade: projects, environments, keys (scoped, expiring, rotated, re-roled), users and sign-in, tenants, custom
roles, the policy set with If-Match, validate, dry-run, versions and rollback, and the audit queries."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from ironflow import IronflowClient, IronflowError, PreconditionFailedError, PreconditionRequiredError
from ironflow.rpc import IronflowRPCError
from ironflow.rpc.v1 import GetAuditTrailRequest, GetAuthAuditTrailRequest, GetEnvironmentRequest, RotateAPIKeyRequest

import ifconf
from ifconf import Server, assert_json_error, fails


@pytest.fixture
def admin(tenancy_server: Server) -> IronflowClient:
    return tenancy_server.rest()


def as_key(server: Server, key: str) -> IronflowClient:
    return server.rest(api_key=key)


def emit_status(server: Server, key: str, name: str, env: str | None = None) -> int:
    headers = {"X-Ironflow-Environment": env} if env else None
    return server.request("POST", "/api/v1/events", json_body={"name": name, "data": {}}, auth=key,
                          headers=headers).status


@pytest.fixture
def empty_policy(tenancy_server: Server, admin: IronflowClient) -> Iterator[None]:
    """Every policy test leaves the environment's and the platform's sets empty again."""
    yield
    for get, put in ((admin.policy_set_list, admin.policy_set_update),
                     (admin.platform_policy_set_list, admin.platform_policy_set_update)):
        current = get()
        if current["modules"]:
            put({"modules": {}}, if_match=str(current["version"]))


# ── administration ─────────────────────────────────────────────────────────────────────────────


def test_projects_environments_and_scoped_keys(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    project = admin.projects_create({"name": f"shop-{uid}", "description": "the web shop"})
    assert project["name"] == f"shop-{uid}" and project["org_id"] and project["created_at"]
    assert any(p["id"] == project["id"] for p in admin.projects_list())
    renamed = admin.projects_update(project["id"], {"name": f"store-{uid}"})
    assert renamed["name"] == f"store-{uid}"

    env = admin.environments_create({"name": "staging", "project_id": project["id"]})
    assert env["project_id"] == project["id"] and env["name"] == "staging"
    names = {e["name"] for e in admin.environments_list(project_id=project["id"])}
    assert names == {"default", "staging"}

    created = admin.api_keys_create({"name": f"ci-{uid}", "env_id": env["id"], "role_ids": ["developer"],
                                     "expires_in": "30d"})
    key = created["key"]
    assert key.startswith("ifkey_") and created["key_prefix"] and key.startswith(created["key_prefix"])
    assert created["environment_id"] == env["id"] and created["role_ids"] == ["developer"]
    assert created["expires_at"], created
    listed = admin.api_keys_list()
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine, "a key's secret is shown once"
    assert admin.api_keys_get(created["id"])["name"] == f"ci-{uid}"

    # Scoped to staging: works there without naming it, refuses another environment.
    assert emit_status(tenancy_server, key, f"{uid}.scoped") == 200
    r = tenancy_server.request("GET", "/api/v1/events", auth=key, headers={"X-Ironflow-Environment": "default"})
    assert_json_error(r, 403, code="permission_denied", mentions=("scoped",))
    assert as_key(tenancy_server, key).events_list(name=f"{uid}.scoped")["events"], "the emit landed in staging"
    assert admin.events_list(name=f"{uid}.scoped")["events"] == [], "and not in the root project's default"

    # Re-roled to viewer: reads, cannot emit.
    assert admin.api_keys_update_roles(created["id"], {"role_ids": ["viewer"]})["role_ids"] == ["viewer"]
    r = tenancy_server.request("POST", "/api/v1/events", json_body={"name": f"{uid}.no", "data": {}}, auth=key)
    assert_json_error(r, 403, code="permission_denied", mentions=("events:emit",))

    # Rotated: the old secret stops, the new one works with the same roles and scope.
    rotated = admin.api_keys_rotate(created["id"])
    assert rotated["id"] == created["id"] and rotated["key"] != key and rotated["role_ids"] == ["viewer"]
    assert tenancy_server.request("GET", "/api/v1/events", auth=key).status == 401
    assert tenancy_server.request("GET", "/api/v1/events", auth=rotated["key"]).status == 200

    admin.api_keys_delete(created["id"])
    assert tenancy_server.request("GET", "/api/v1/events", auth=rotated["key"]).status == 401
    fails(404, admin.api_keys_get, "no-such-key")


def test_bad_admin_input_is_a_clear_4xx(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    assert_json_error(tenancy_server.request("POST", "/api/v1/projects", json_body={}), 400, mentions=("name",))
    assert_json_error(tenancy_server.request("POST", "/api/v1/apikeys", json_body={"name": "x", "role_ids": ["owner"]}),
                      400, mentions=("owner",))
    assert_json_error(tenancy_server.request("POST", "/api/v1/apikeys",
                                             json_body={"name": "x", "expires_in": "soon"}), 400, mentions=("expires_in",))
    assert_json_error(tenancy_server.request("POST", "/api/v1/environments", json_body={"name": "has space"}), 400)
    admin.environments_create({"name": f"dup-{uid}"})
    assert_json_error(tenancy_server.request("POST", "/api/v1/environments", json_body={"name": f"dup-{uid}"}), 409)
    assert_json_error(tenancy_server.request("POST", "/api/v1/users", json_body={"email": "nope", "password": "x" * 12}),
                      400, mentions=("email",))
    assert_json_error(tenancy_server.request("POST", "/api/v1/users",
                                             json_body={"email": f"{uid}@example.com", "password": "short"}),
                      400, mentions=("password",))


def test_deleting_an_environment_says_what_it_removes_and_refuses_unfinished_runs(
        tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    env = admin.environments_create({"name": f"doomed-{uid}"})
    with tenancy_server.rpc(environment=env["id"]) as rpc:
        ifconf.register(rpc, f"fn-{uid}", [f"{uid}.go"])
        assert len(ifconf.emit_rpc(rpc, f"{uid}.go").run_ids) == 1  # queued: no worker, unfinished
    scoped = admin.api_keys_create({"name": f"doomed-{uid}", "env_id": env["id"], "role_ids": ["viewer"]})["key"]

    r = tenancy_server.request("DELETE", f"/api/v1/environments/{env['id']}")
    assert_json_error(r, 409, mentions=("unfinished", "force"))
    assert any(e["id"] == env["id"] for e in admin.environments_list()), "a refused delete removes nothing"

    r = tenancy_server.request("DELETE", f"/api/v1/environments/{env['id']}", params={"force": "true"})
    assert r.status == 200, r
    body = r.json()
    assert body["status"] == "deleted"
    assert body["removed"]["runs"] == 1 and body["removed"]["unfinished_runs"] == 1 and body["removed"]["functions"] == 1
    assert all(e["id"] != env["id"] for e in admin.environments_list())
    assert tenancy_server.request("GET", "/api/v1/events", auth=scoped).status == 401, "its keys are revoked"


def test_custom_role_key_that_only_emits(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    role = admin.roles_create({"name": f"emitter-{uid}", "permissions": ["events:emit"],  # type: ignore[typeddict-unknown-key]
                               "description": "CI: emits, reads nothing"})
    assert role["name"] == f"emitter-{uid}" and role["is_default"] is False
    assert admin.roles_get(role["id"])["permissions"] == ["events:emit"]  # type: ignore[typeddict-item]
    builtin = {r["name"]: r for r in admin.roles_list()}
    assert {"admin", "developer", "viewer"} <= builtin.keys() and builtin["viewer"]["is_default"]

    key = admin.api_keys_create({"name": f"ci-{uid}", "role_ids": [role["id"]]})
    assert emit_status(tenancy_server, key["key"], f"{uid}.ci.built") == 200
    for path in ("/api/v1/events", "/api/v1/runs", "/api/v1/functions", "/api/v1/secrets"):
        r = tenancy_server.request("GET", path, auth=key["key"])
        assert_json_error(r, 403, code="permission_denied")
    with tenancy_server.rpc(api_key=key["key"]) as rpc:
        ifconf.emit_rpc(rpc, f"{uid}.ci.rpc")
        with pytest.raises(IronflowRPCError) as exc:
            ifconf.register(rpc, f"fn-{uid}", [f"{uid}.x"])
        assert exc.value.code == "permission_denied"
    assert len(admin.events_list(name=f"{uid}.ci.built")["events"]) == 1

    counted = next(r for r in admin.roles_list() if r["id"] == role["id"])
    assert counted["api_key_count"] == 1
    r = tenancy_server.request("DELETE", f"/api/v1/roles/{role['id']}")
    assert_json_error(r, 409, mentions=("held",))
    admin.api_keys_delete(key["id"])
    admin.roles_delete(role["id"])
    fails(404, admin.roles_get, role["id"])


def test_nobody_grants_what_they_do_not_hold(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    role = admin.roles_create({"name": f"key-minter-{uid}", "permissions": ["keys:admin", "events:emit"]})  # type: ignore[typeddict-unknown-key]
    minter = admin.api_keys_create({"name": f"minter-{uid}", "role_ids": [role["id"]]})["key"]
    r = tenancy_server.request("POST", "/api/v1/apikeys", json_body={"name": "escalate", "role_ids": ["admin"]},
                               auth=minter)
    assert_json_error(r, 403, code="permission_denied", mentions=("cannot grant",))
    ok = tenancy_server.request("POST", "/api/v1/apikeys", json_body={"name": "same", "role_ids": [role["id"]]},
                                auth=minter)
    assert ok.status == 201, ok
    # Keys and users with more permissions than the caller are out of its reach.
    boot = next(k for k in admin.api_keys_list() if k["name"] == "bootstrap admin key")
    for method, path in (("POST", f"/api/v1/apikeys/{boot['id']}/rotate"), ("DELETE", f"/api/v1/apikeys/{boot['id']}"),
                         ("PUT", f"/api/v1/apikeys/{boot['id']}/roles")):
        r = tenancy_server.request(method, path, json_body={"role_ids": [role["id"]]}, auth=minter)
        assert_json_error(r, 403, mentions=("out of your reach",))
    assert tenancy_server.request("GET", "/api/v1/events").status == 200, "the admin key still works"
    # An admin key scoped to one environment administers nothing beyond it.
    env = admin.environments_create({"name": f"scoped-{uid}"})
    other = admin.environments_create({"name": f"other-{uid}"})
    scoped = admin.api_keys_create({"name": f"scoped-admin-{uid}", "env_id": env["id"], "role_ids": ["admin"]})["key"]
    r = tenancy_server.request("POST", "/api/v1/apikeys", auth=scoped,
                               json_body={"name": "x", "env_id": other["id"], "role_ids": ["admin"]})
    assert_json_error(r, 403, mentions=("that environment only",))
    mine = tenancy_server.request("POST", "/api/v1/apikeys", auth=scoped, json_body={"name": "y", "role_ids": ["viewer"]})
    assert mine.status == 201 and mine.json()["environment_id"] == env["id"], mine
    for method, path in (("DELETE", f"/api/v1/environments/{other['id']}"), ("POST", "/api/v1/projects"),
                         ("POST", "/api/v1/users")):
        assert_json_error(tenancy_server.request(method, path, json_body={"name": "z"}, auth=scoped), 403)
    r = tenancy_server.request("GET", "/api/v1/apikeys", auth=scoped, headers={"X-Ironflow-Environment": "nope"})
    assert_json_error(r, (403, 404))
    developer = admin.api_keys_create({"name": f"dev-{uid}", "role_ids": ["developer"]})["key"]
    for method, path, body in (("POST", "/api/v1/apikeys", {"name": "x"}), ("POST", "/api/v1/roles", {"name": "x"}),
                               ("GET", "/api/v1/audit", None), ("POST", "/api/v1/users", {"email": "a@b.c"})):
        assert_json_error(tenancy_server.request(method, path, json_body=body, auth=developer), 403)


def test_users_sign_in_and_change_their_password(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    email = f"ada-{uid}@example.com"
    user = admin.users_create({"email": email, "password": "correct horse", "name": "Ada", "roles": ["developer"]})
    assert user["email"] == email and user["roles"] == ["developer"] and "password" not in json_keys(user)
    assert admin.users_get(user["id"])["name"] == "Ada"
    assert any(u["id"] == user["id"] for u in admin.users_list())

    fails(401, admin.platform_auth_login, {"email": email, "password": "wrong horse"})
    fails(401, admin.platform_auth_login, {"email": f"nobody-{uid}@example.com", "password": "correct horse"})
    signed = admin.platform_auth_login({"email": email, "password": "correct horse"})
    token = signed["token"]
    assert signed["user"]["id"] == user["id"] and signed["user"]["roles"] == ["developer"]
    person = as_key(tenancy_server, token)
    assert person.events_list(limit=1)["events"] is not None
    assert emit_status(tenancy_server, token, f"{uid}.by.ada") == 200
    assert admin.users_get(user["id"])["last_login_at"]

    fails(400, person.users_patch_password, user["id"], {"new_password": "battery staple"})  # type: ignore[typeddict-item]
    fails(403, person.users_patch_password, user["id"], {"current_password": "nope", "new_password": "battery staple"})
    person.users_patch_password(user["id"], {"current_password": "correct horse", "new_password": "battery staple"})
    assert tenancy_server.request("GET", "/api/v1/functions", auth=token).status == 401, "sessions end"
    fails(401, admin.platform_auth_login, {"email": email, "password": "correct horse"})
    admin.platform_auth_login({"email": email, "password": "battery staple"})

    updated = admin.users_patch(user["id"], {"roles": ["viewer"], "name": "Ada L."})
    assert updated["roles"] == ["viewer"] and updated["name"] == "Ada L."
    admin.users_delete(user["id"])
    fails(404, admin.users_get, user["id"])


def json_keys(value: dict[str, Any]) -> set[str]:
    return set(value.keys())


def test_tenants_are_provisioned_apart(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    made = admin.tenants_provision({"org_name": f"acme-{uid}", "env_name": "production"})
    assert made["org"]["name"] == f"acme-{uid}" and made["environment"]["name"] == "production"
    assert made["api_key"]["roles"] == ["admin"]
    acme = as_key(tenancy_server, made["api_key"]["key"])
    assert acme.events_list()["events"] == [], "a new tenant holds nothing"
    assert [o["name"] for o in acme.orgs_list()] == [f"acme-{uid}"], "a tenant sees its own organisation"
    tenants = {t["name"]: t for t in admin.tenants_list()}
    assert tenants[f"acme-{uid}"]["env_count"] == 1 and tenants[f"acme-{uid}"]["key_count"] == 1
    assert any(o["name"] == f"acme-{uid}" for o in admin.orgs_list()), "the platform admin sees every org"
    # The root org's environments do not exist for the tenant.
    root_env = admin.environments_list()[0]["id"]
    r = tenancy_server.request("GET", "/api/v1/events", auth=made["api_key"]["key"],
                               headers={"X-Ironflow-Environment-ID": root_env})
    assert_json_error(r, 404, code="not_found")
    fails(403, acme.tenants_list)
    fails(404, acme.orgs_get, admin.orgs_list()[0]["id"])


def test_environment_service(tenancy_server: Server, admin: IronflowClient) -> None:
    with tenancy_server.rpc() as rpc:
        env = rpc.environments.get(GetEnvironmentRequest(id="default"))
        assert env.name == "default" and env.id and env.api_key == ""
        rotated = rpc.environments.rotate_api_key(RotateAPIKeyRequest(id=env.id))
        assert rotated.id == env.id and rotated.api_key.startswith("ifkey_")
    assert tenancy_server.request("GET", "/api/v1/functions", auth=rotated.api_key).status == 200
    again = tenancy_server.rpc()
    try:
        second = again.environments.rotate_api_key(RotateAPIKeyRequest(id=env.id))
    finally:
        again.close()
    assert tenancy_server.request("GET", "/api/v1/functions", auth=rotated.api_key).status == 401, "replaced"
    assert tenancy_server.request("GET", "/api/v1/functions", auth=second.api_key).status == 200


# ── policies ───────────────────────────────────────────────────────────────────────────────────

BILLING = 'action == "events:emit" && request.event_name.startsWith("billing.")'


def test_policy_set_needs_if_match_and_checks_modules(admin: IronflowClient, empty_policy: None) -> None:
    current = admin.policy_set_list()
    version = current["version"]
    with pytest.raises(PreconditionRequiredError):
        admin.policy_set_update({"modules": {"no-billing": BILLING}}, if_match=None)  # type: ignore[arg-type]
    saved = admin.policy_set_update({"modules": {"no-billing": BILLING}, "mode": "enforce"}, if_match=str(version))
    assert saved["version"] == version + 1 and saved["modules"] == {"no-billing": BILLING}
    assert saved["enforcement_active"] is True and saved["decision"] == "deny"
    with pytest.raises(PreconditionFailedError):
        admin.policy_set_update({"modules": {}}, if_match=str(version))
    assert admin.policy_set_list()["version"] == version + 1, "a stale write saved nothing"

    bad = {"modules": {"typo": 'request.evnt_name == "x"', "not-bool": "request.name", "ok": "false"}}
    checked = admin.policy_set_validate(bad)
    assert checked["valid"] is False
    errors = checked["errors"]  # type: ignore[typeddict-item]
    assert {e["module"] for e in errors} == {"typo", "not-bool"}
    assert all(e["line"] >= 1 and e["column"] >= 1 for e in errors), errors
    assert admin.policy_set_validate({"modules": {"ok": BILLING}})["valid"] is True
    err = fails(400, admin.policy_set_update, bad, if_match=f'"{version + 1}"')
    assert "typo" in str(err) and "1:" in str(err)


def test_a_deny_policy_blocks_an_emit_and_is_audited(
        tenancy_server: Server, admin: IronflowClient, uid: str, empty_policy: None) -> None:
    version = admin.policy_set_list()["version"]
    admin.policy_set_update({"modules": {"no-billing": BILLING}}, if_match=str(version))
    r = tenancy_server.request("POST", "/api/v1/events", json_body={"name": f"billing.{uid}", "data": {}})
    assert_json_error(r, 403, code="permission_denied", mentions=("no-billing",))
    with tenancy_server.rpc() as rpc:
        with pytest.raises(IronflowRPCError) as exc:
            ifconf.emit_rpc(rpc, f"billing.{uid}.rpc")
        assert exc.value.code == "permission_denied" and "no-billing" in str(exc.value)
        ifconf.emit_rpc(rpc, f"orders.{uid}")  # other events still go
    assert admin.events_list(name=f"billing.{uid}")["events"] == [], "the denied emit stored nothing"

    trail = admin.audit_list(action="events:emit")
    denied = [e for e in trail["events"] if e["payload"]["outcome"] == "denied"]
    assert denied, trail
    assert "no-billing" in denied[0]["payload"]["reason"] and denied[0]["event_type"] == "authz.denied"
    assert denied[0]["environment_id"] and denied[0]["created_at"]

    run = admin.policy_set_dry_run({"input": {"action": "events:emit", "request": {"event_name": "billing.x"}},
                                    "explain": True})
    assert run["decision"] == "deny" and run["reasons"] == ["no-billing"] and "no-billing: deny" in run["explain"]
    assert admin.policy_set_dry_run({"input": {"action": "events:emit",
                                               "request": {"event_name": "orders.x"}}})["decision"] == "allow"
    candidate = admin.policy_set_dry_run({"input": {"action": "runs:read"},
                                          "set": {"modules": {"all-reads": 'action == "runs:read"'}}})
    assert candidate["decision"] == "deny" and candidate["reasons"] == ["all-reads"]

    # Monitor mode: logged and audited, not enforced.
    current = admin.policy_set_list()["version"]
    admin.policy_set_update({"modules": {"no-billing": BILLING}, "mode": "monitor"}, if_match=str(current))
    assert emit_status(tenancy_server, tenancy_server.api_key, f"billing.{uid}.monitored") == 200
    monitored = [e for e in admin.audit_list(action="events:emit")["events"] if e["payload"]["outcome"] == "monitored"]
    assert monitored and "no-billing" in monitored[0]["payload"]["reason"]


def test_versions_and_rollback(tenancy_server: Server, admin: IronflowClient, uid: str, empty_policy: None) -> None:
    base = admin.policy_set_list()["version"]
    admin.policy_set_update({"modules": {"one": "false"}}, if_match=str(base))
    admin.policy_set_update({"modules": {"two": f'request.event_name == "{uid}.blocked"'}}, if_match=str(base + 1))
    assert emit_status(tenancy_server, tenancy_server.api_key, f"{uid}.blocked") == 403
    versions = admin.policy_set_list_versions()["versions"]
    assert [v["version"] for v in versions][:2] == [base + 2, base + 1]
    assert versions[0]["created_by"] and versions[0]["created_at"]
    assert admin.policy_set_get_versions(str(base + 1))["modules"] == {"one": "false"}
    fails(404, admin.policy_set_get_versions, str(base + 100))
    with pytest.raises(PreconditionFailedError):
        admin.policy_set_versions_rollback(str(base + 1), if_match=str(base))
    rolled = admin.policy_set_versions_rollback(str(base + 1), if_match=str(base + 2))
    assert rolled["version"] == base + 3 and rolled["modules"] == {"one": "false"}
    assert emit_status(tenancy_server, tenancy_server.api_key, f"{uid}.blocked") == 200


def test_platform_policies_deny_everywhere_and_only_platform_admins_change_them(
        tenancy_server: Server, admin: IronflowClient, uid: str, empty_policy: None) -> None:
    current = admin.platform_policy_set_list()
    rule = f'action == "config:write" && request.name == "{uid}"'
    admin.platform_policy_set_update({"modules": {"frozen-config": rule}}, if_match=str(current["version"]))
    r = tenancy_server.request("POST", f"/api/v1/config/{uid}", json_body={"data": {"a": 1}})
    assert_json_error(r, 403, mentions=("frozen-config",))
    r = tenancy_server.request("POST", f"/api/v1/config/{uid}-other", json_body={"data": {"a": 1}})
    assert r.status in (200, 201), r
    assert admin.platform_policy_set_create_validate({"modules": {"x": "true"}})["valid"] is True
    assert admin.platform_policy_set_list_versions()["versions"]

    tenant = admin.tenants_provision({"org_name": f"t-{uid}"})
    other = as_key(tenancy_server, tenant["api_key"]["key"])
    fails(403, other.platform_policy_set_list)
    # The platform set applies to the tenant's environments too.
    r = tenancy_server.request("POST", f"/api/v1/config/{uid}", json_body={"data": {"a": 1}},
                               auth=tenant["api_key"]["key"])
    assert_json_error(r, 403, mentions=("frozen-config",))


# ── the audit log ──────────────────────────────────────────────────────────────────────────────


def test_audit_queries_filters_and_cursor(tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    for i in range(3):
        admin.api_keys_create({"name": f"audited-{uid}-{i}", "role_ids": ["viewer"]})
    page = admin.audit_list(action="keys:admin", limit=2)
    assert len(page["events"]) == 2 and page["next_cursor"], page
    assert page["retention_days"] == 0 and page["total_count"] == 2
    rest = admin.audit_list(action="keys:admin", limit=2, cursor=page["next_cursor"])
    first_ids = {e["id"] for e in page["events"]}
    assert rest["events"] and not first_ids & {e["id"] for e in rest["events"]}
    entry = page["events"][0]
    assert entry["payload"]["outcome"] == "allowed" and entry["payload"]["status"] == 201
    assert entry["payload"]["resource"].startswith("irn:ironflow:")
    key_id = entry["metadata"]["api_key_id"]
    assert key_id and all(e["metadata"]["api_key_id"] == key_id
                          for e in admin.audit_list(api_key_id=key_id, limit=20)["events"])
    future = admin.audit_list(from_="2999-01-01T00:00:00Z")
    assert future["events"] == [] and future["next_cursor"] == ""
    assert_json_error(tenancy_server.request("GET", "/api/v1/audit", params={"from": "yesterday"}), 400,
                      mentions=("from",))

    settings = admin.audit_list_settings()
    assert settings["authz_successful_reads"] is False and settings["retention_days"] == 0
    # Successful reads are recorded once the settings ask for it.
    r = tenancy_server.request("PUT", "/api/v1/audit/settings",
                               json_body={"authz_successful_reads": True, "retention_days": 30})
    assert r.status == 200 and r.json()["retention_days"] == 30, r
    assert tenancy_server.request("GET", "/api/v1/functions").status == 200
    reads = admin.audit_list(action="functions:read")["events"]
    assert reads and reads[0]["payload"]["outcome"] == "allowed"
    assert_json_error(tenancy_server.request("PUT", "/api/v1/audit/settings", json_body={"retention_days": -1}), 400)
    tenancy_server.request("PUT", "/api/v1/audit/settings",
                           json_body={"authz_successful_reads": False, "retention_days": None})

    with tenancy_server.rpc() as rpc:
        trail = rpc.audit.get_auth_trail(GetAuthAuditTrailRequest(action="keys:admin", limit=2))
        assert len(trail.events) == 2 and trail.next_cursor
        assert trail.events[0].payload.to_python()["outcome"] == "allowed" and trail.events[0].created_at.seconds > 0
        everything = rpc.audit.get_trail(GetAuditTrailRequest())
        assert everything.events


def test_run_edits_and_secret_writes_are_audited_without_values(
        tenancy_server: Server, admin: IronflowClient, uid: str) -> None:
    secret = tenancy_server.request("POST", "/api/v1/secrets", json_body={"name": f"s-{uid}", "value": "hunter2-" + uid})
    assert secret.status == 201, secret
    with tenancy_server.rpc() as rpc:
        ifconf.register(rpc, f"fn-{uid}", [f"{uid}.go"])
        run_id = ifconf.emit_rpc(rpc, f"{uid}.go").run_ids[0]
    assert tenancy_server.request("POST", f"/api/v1/runs/{run_id}/cancel", json_body={}).status == 200
    writes = admin.audit_list(action="secrets:write")["events"]
    assert writes and all("hunter2" not in str(e) for e in writes)
    cancels = admin.audit_list(action="runs:cancel", run_id=run_id)["events"]
    assert len(cancels) == 1 and cancels[0]["run_id"] == run_id


def test_unauthenticated_admin_calls_are_refused(tenancy_server: Server) -> None:
    for method, path in (("GET", "/api/v1/projects"), ("POST", "/api/v1/apikeys"), ("GET", "/api/v1/audit"),
                         ("GET", "/api/v1/policy-set"), ("GET", "/api/v1/users"), ("GET", "/api/v1/tenants")):
        assert_json_error(tenancy_server.request(method, path, json_body={}, auth=False), 401, code="unauthenticated")
    with pytest.raises(IronflowError):
        tenancy_server.rest(api_key=None).projects_list()
