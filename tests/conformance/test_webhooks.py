"""Webhook sources through ironflow-py on both backends: a GitHub-style and a Stripe-style signed delivery
become events that trigger functions (once per provider delivery id), a forged or stale one is a 401 and
stores nothing, secrets rotate with a grace window, the ingest URL rotates, verification can be turned off,
deliveries are listed with the secret that verified them, and a scheme can be tried without storing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ironflow.rpc import IronflowRPCError, v1

import ifconf
from ifconf import Server


@pytest.fixture
def wrpc(secrets_server: Server) -> Iterator[Any]:
    client = secrets_server.rpc()
    try:
        yield client
    finally:
        client.close()


GITHUB = v1.WebhookVerifyConfig(
    signature_header="X-Hub-Signature-256", kv_delimiter="=", signature_key="sha256", signing_template="{body}",
    encoding="hex", algorithm="hmac-sha256", event_name_path="header:X-GitHub-Event",
    dedup_id_path="header:X-GitHub-Delivery",
)
STRIPE = v1.WebhookVerifyConfig(
    signature_header="Stripe-Signature", entry_separator=",", kv_delimiter="=", signature_key="v1",
    timestamp_key="t", signing_template="{ts}.{body}", encoding="hex", algorithm="hmac-sha256",
    tolerance_seconds=300, event_name_path="body:type", dedup_id_path="body:id",
)


def sign(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def deliver(server: Server, token: str, body: bytes, headers: dict[str, str]) -> ifconf.Resp:
    return server.request("POST", f"/webhooks/{token}", raw=body, auth=False, headers=headers)


def github(server: Server, token: str, secret: str, delivery: str, body: dict[str, Any], *,
           forged: bool = False) -> ifconf.Resp:
    raw = json.dumps(body).encode()
    signature = sign("not-the-secret" if forged else secret, raw)
    return deliver(server, token, raw, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery,
                                        "X-Hub-Signature-256": f"sha256={signature}"})


def events_named(server: Server, name: str) -> list[dict[str, Any]]:
    r = server.request("GET", "/api/v1/events", params={"name": name, "limit": 100})
    assert r.status == 200, r
    return r.json()["events"]


def test_github_style_deliveries_become_events_once(secrets_server: Server, wrpc: Any, uid: str) -> None:
    prefix = f"{uid}.github"
    ifconf.register(wrpc, f"{uid}-on-pr", [f"{prefix}.pull_request"])
    source = wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(
        name="GitHub", event_prefix=prefix, verify_secret="s3cret", verify_config=GITHUB))
    assert source.id.startswith("wh_") and source.ingest_token.startswith("ifwh_"), source
    assert source.verify_secret_set and not source.verify_secret_prev_set
    assert source.ingest_token.startswith(source.ingest_token_prefix)
    token = source.ingest_token
    again = wrpc.webhooks.get_source(v1.GetWebhookSourceRequest(id=source.id))
    assert again.ingest_token == "" and again.verify_config.signature_header == "X-Hub-Signature-256"

    first = github(secrets_server, token, "s3cret", "d-1", {"action": "opened", "number": 7})
    assert first.status == 200, first
    out = first.json()
    assert out["duplicate"] is False and len(out["run_ids"]) == 1, out
    event = secrets_server.request("GET", f"/api/v1/events/{out['event_id']}").json()
    assert event["name"] == f"{prefix}.pull_request" and event["source"] == "webhook", event
    assert event["data"] == {"action": "opened", "number": 7}

    repeat = github(secrets_server, token, "s3cret", "d-1", {"action": "opened", "number": 7}).json()
    assert repeat["duplicate"] is True and repeat["event_id"] == out["event_id"], repeat

    forged = github(secrets_server, token, "s3cret", "d-2", {"action": "closed"}, forged=True)
    ifconf.assert_json_error(forged, 401, code="unauthenticated", mentions=("signature",))
    unsigned = deliver(secrets_server, token, b'{"action":"closed"}', {"X-GitHub-Event": "pull_request"})
    ifconf.assert_json_error(unsigned, 401, mentions=("missing",))
    assert len(events_named(secrets_server, f"{prefix}.pull_request")) == 1, "a refused delivery stores nothing"

    # A provider's shared-token header is a credential: never kept in the delivery log.
    raw = b'{"action":"labeled"}'
    tokened = deliver(secrets_server, token, raw, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-3",
                                                   "X-Hub-Signature-256": f"sha256={sign('s3cret', raw)}",
                                                   "X-Gitlab-Token": "shh"})
    assert tokened.status == 200, tokened

    unknown = deliver(secrets_server, "ifwh_" + "0" * 64, b"{}", {})
    ifconf.assert_json_error(unknown, 404)

    listed = wrpc.webhooks.list_deliveries(v1.ListWebhookDeliveriesRequest(source_id=source.id))
    assert listed.total_count == 3, listed
    assert sorted(d.status for d in listed.deliveries) == ["accepted", "accepted", "duplicate"]
    assert {d.signature_key for d in listed.deliveries} == {"current"}
    assert {d.external_id for d in listed.deliveries} == {"d-1", "d-3"}
    assert all("x-hub-signature-256" in d.request_headers.to_python() for d in listed.deliveries)
    assert all("x-gitlab-token" not in d.request_headers.to_python() for d in listed.deliveries)

    # The server's own idempotency keys are not a client's to take.
    taken = secrets_server.request("POST", "/api/v1/events", json_body={
        "name": f"{prefix}.pull_request", "data": {}, "idempotency_key": f"webhook:{source.id}:d-9"})
    ifconf.assert_json_error(taken, 400, mentions=("idempotency_key",))
    only = wrpc.webhooks.list_deliveries(v1.ListWebhookDeliveriesRequest(source_id=source.id, status="duplicate"))
    assert [d.status for d in only.deliveries] == ["duplicate"]


def test_stripe_style_deliveries_sign_a_timestamp(secrets_server: Server, wrpc: Any, uid: str) -> None:
    prefix = f"{uid}.stripe"
    source = wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(
        name="Stripe", event_prefix=prefix, verify_secret="whsec_1", verify_config=STRIPE))
    body = json.dumps({"id": f"evt_{uid}", "type": "payment_intent.succeeded", "data": {"amount": 5}}).encode()

    def stripe(ts: int, secret: str = "whsec_1") -> ifconf.Resp:
        signed = f"{ts}.".encode() + body
        header = f"t={ts},v1={sign('old-one', signed)},v1={sign(secret, signed)}"
        return deliver(secrets_server, source.ingest_token, body, {"Stripe-Signature": header})

    stale = stripe(int(time.time()) - 3600)
    ifconf.assert_json_error(stale, 401, mentions=("tolerance",))
    ok = stripe(int(time.time()))
    assert ok.status == 200, ok
    event = secrets_server.request("GET", f"/api/v1/events/{ok.json()['event_id']}").json()
    assert event["name"] == f"{prefix}.payment_intent.succeeded", event
    assert stripe(int(time.time())).json()["duplicate"] is True, "the provider's id dedups"


def test_secret_rotation_keeps_the_old_secret_for_its_grace(secrets_server: Server, wrpc: Any, uid: str) -> None:
    source = wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(
        name="rotating", event_prefix=f"{uid}.rot", verify_secret="old", verify_config=GITHUB))
    token = source.ingest_token
    rotated = wrpc.webhooks.rotate_secret(v1.RotateWebhookSecretRequest(id=source.id, verify_secret="new",
                                                                        grace_seconds=600))
    assert rotated.verify_secret_set and rotated.verify_secret_prev_set, rotated
    assert github(secrets_server, token, "old", "r-1", {"n": 1}).status == 200
    assert github(secrets_server, token, "new", "r-2", {"n": 2}).status == 200
    slots = {d.external_id: d.signature_key for d in
             wrpc.webhooks.list_deliveries(v1.ListWebhookDeliveriesRequest(source_id=source.id)).deliveries}
    assert slots == {"r-1": "prev", "r-2": "current"}, slots

    expired = wrpc.webhooks.expire_secret_prev(v1.ExpireWebhookSecretPrevRequest(id=source.id))
    assert not expired.verify_secret_prev_set
    ifconf.assert_json_error(github(secrets_server, token, "old", "r-3", {"n": 3}), 401)

    # Optimistic concurrency: a write against an older updated_at is refused.
    with pytest.raises(IronflowRPCError) as stale:
        wrpc.webhooks.update_source(v1.UpdateWebhookSourceRequest(
            id=source.id, name="renamed", expected_updated_at=source.updated_at))
    assert stale.value.code == "aborted"
    renamed = wrpc.webhooks.update_source(v1.UpdateWebhookSourceRequest(
        id=source.id, name="renamed", expected_updated_at=expired.updated_at))
    assert renamed.name == "renamed"

    new_url = wrpc.webhooks.rotate_ingest_token(v1.RotateWebhookIngestTokenRequest(id=source.id))
    assert new_url.ingest_token and new_url.ingest_token != token
    ifconf.assert_json_error(github(secrets_server, token, "new", "r-4", {"n": 4}), 404)
    assert github(secrets_server, new_url.ingest_token, "new", "r-4", {"n": 4}).status == 200

    off = wrpc.webhooks.disable_signature_verification(
        v1.DisableWebhookSignatureVerificationRequest(id=source.id, grace_seconds=0))
    assert not off.verify_secret_set and not off.verify_secret_prev_set
    plain = deliver(secrets_server, new_url.ingest_token, b'{"n": 5}',
                    {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "r-5"})
    assert plain.status == 200, plain
    last = wrpc.webhooks.list_deliveries(v1.ListWebhookDeliveriesRequest(source_id=source.id, limit=1))
    assert last.deliveries[0].signature_key == "none"

    wrpc.webhooks.delete_source(v1.DeleteWebhookSourceRequest(id=source.id))
    with pytest.raises(IronflowRPCError) as gone:
        wrpc.webhooks.get_source(v1.GetWebhookSourceRequest(id=source.id))
    assert gone.value.code == "not_found"
    ifconf.assert_json_error(github(secrets_server, new_url.ingest_token, "new", "r-6", {"n": 6}), 404)


def test_a_scheme_can_be_tried_and_bad_ones_are_refused(secrets_server: Server, wrpc: Any, uid: str) -> None:
    body = '{"action":"opened"}'
    tried = wrpc.webhooks.test_verify_config(v1.TestWebhookVerifyConfigRequest(
        verify_config=GITHUB, body=body, verify_secret="k",
        headers={"X-Hub-Signature-256": f"sha256={sign('k', body.encode())}", "X-GitHub-Event": "push",
                 "X-GitHub-Delivery": "t-1"}))
    assert tried.verified and tried.resolved_event_name == "push" and tried.resolved_dedup_id == "t-1", tried
    assert tried.computed_signature == sign("k", body.encode()) and tried.signing_string == body
    wrong = wrpc.webhooks.test_verify_config(v1.TestWebhookVerifyConfigRequest(
        verify_config=GITHUB, body=body, verify_secret="other",
        headers={"X-Hub-Signature-256": f"sha256={sign('k', body.encode())}"}))
    assert not wrong.verified and wrong.error

    bad = v1.WebhookVerifyConfig(signature_header="X-Sig", signing_template="{body}", tolerance_seconds=60)
    with pytest.raises(IronflowRPCError) as refused:
        wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(
            name="bad", event_prefix=f"{uid}.bad", verify_secret="k", verify_config=bad))
    assert refused.value.code == "invalid_argument" and "{ts}" in str(refused.value)
    with pytest.raises(IronflowRPCError) as no_name:
        wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(event_prefix=f"{uid}.x"))
    assert no_name.value.code == "invalid_argument"
    with pytest.raises(IronflowRPCError) as bad_prefix:
        wrpc.webhooks.create_source(v1.CreateWebhookSourceRequest(name="x", event_prefix="a..b"))
    assert bad_prefix.value.code == "invalid_argument"
    listed = wrpc.webhooks.list_sources(v1.ListWebhookSourcesRequest())
    assert all(not s.ingest_token for s in listed.sources)


def test_signed_sources_need_the_master_key(rpc: Any, uid: str) -> None:
    with pytest.raises(IronflowRPCError) as refused:
        rpc.webhooks.create_source(v1.CreateWebhookSourceRequest(
            name="x", event_prefix=f"{uid}.mk", verify_secret="k", verify_config=GITHUB))
    assert refused.value.code == "failed_precondition" and "IRONFLOW_MASTER_KEY" in str(refused.value)
    unsigned = rpc.webhooks.create_source(v1.CreateWebhookSourceRequest(name="open", event_prefix=f"{uid}.open"))
    assert not unsigned.verify_secret_set and unsigned.ingest_token
