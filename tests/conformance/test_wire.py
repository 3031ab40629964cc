"""Wire hygiene the SDK's version-skew handling relies on: a Connect service this server does not serve
answers `unimplemented` (after authentication), never `not_found`; other unknown paths stay 404."""

from __future__ import annotations

import pytest
from ironflow.rpc import IronflowRPC, IronflowRPCError
from ironflow.rpc.v1 import InfoRequest, RegisterDeploymentRequest

from ifconf import Server
from workerkit import LEASE_TTL_S, WorkerKit


def test_an_unserved_service_answers_unimplemented_after_authentication(server: Server, rpc: IronflowRPC) -> None:
    with pytest.raises(IronflowRPCError) as exc:
        rpc.deployments.register(RegisterDeploymentRequest())
    assert exc.value.code == "unimplemented", exc.value

    anonymous = server.request("POST", "/ironflow.v1.DeploymentService/RegisterDeployment", json_body={}, auth=False)
    assert anonymous.status == 401 and anonymous.json()["code"] == "unauthenticated", anonymous
    keyed = server.request("POST", "/ironflow.v1.DeploymentService/RegisterDeployment", json_body={})
    assert keyed.status == 501 and keyed.json()["code"] == "unimplemented", keyed
    assert "not served" in keyed.json()["message"]

    for path in ("/foo/bar", "/api/nothing"):
        r = server.request("POST", path, json_body={})
        assert r.status == 404 and r.json()["code"] == "not_found", (path, r)
    assert server.request("GET", "/ironflow.v1.DeploymentService/RegisterDeployment").status == 404


def test_info_counts_the_workers_heard_from_within_the_lease(wk: WorkerKit) -> None:
    def connected() -> int:
        with wk.server.rpc() as rpc:
            return rpc._ironflow_service.info(InfoRequest()).connected_workers  # noqa: SLF001

    worker = wk.worker("three")
    assert connected() >= 1, "a registered, heartbeating worker is connected"
    worker.kill()
    # Every worker of earlier tests is dead too: once the lease TTL passes without a heartbeat, none is.
    wk.until(lambda: connected() == 0, "no worker connected after the lease TTL",
             deadline_s=LEASE_TTL_S * 3 + 10)
