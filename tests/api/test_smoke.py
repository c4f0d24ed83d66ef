from __future__ import annotations

from tests.support.api import Api


async def test_health_answers_ok_with_the_policy_version(api: Api) -> None:
    status, body = await api.call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert len(body["policyVersion"]) == 16


async def test_a_care_team_member_sees_the_patient_they_registered(api: Api) -> None:
    org = await api.organization()
    nurse = await api.person("care_team_member", org)
    patient_id = await api.patient(nurse)
    status, body = await api.call("GET", f"/api/patients/{patient_id}", nurse)
    assert status == 200
    assert body["id"] == patient_id
    assert body["riskLevel"] == "high"
