"""A client generated from the live OpenAPI document, used the way a client team would use it.

``openapi-python-client`` (the command line, as client teams run it) generates a package from
``/api/openapi.json`` served by the running app; the tests import it and drive the seed's usage
example and an idempotent send over real HTTP with ``raise_on_unexpected_status=True``: a status the
document does not declare, or a body that does not parse into its declared model, fails the test.
The tests use nothing but the generated package: no hand-written request, no README knowledge.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.api.conftest import Api

_GENERATED: dict[str, ModuleType] = {}


@pytest.fixture(scope="session")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated-client")


async def generate_client(api: Api, root: Path) -> ModuleType:
    """Generate (once per distinct document) and import the client package."""
    resp = await api.client.get("/api/openapi.json")
    assert resp.status == 200
    document = await resp.read()
    digest = hashlib.sha256(document).hexdigest()[:12]
    if digest in _GENERATED:
        return _GENERATED[digest]
    package = f"caremsg_client_{digest}"
    work = root / digest
    work.mkdir()
    (work / "openapi.json").write_bytes(document)
    (work / "config.yaml").write_text(
        f"package_name_override: {package}\nproject_name_override: caremsg-client\npost_hooks: []\n"
    )
    cli = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    assert cli, "openapi-python-client is a test dependency (pyproject.toml [dev])"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            cli,
            "generate",
            "--path",
            "openapi.json",
            "--config",
            "config.yaml",
            "--meta",
            "none",
            "--output-path",
            package,
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A client team would see generator warnings as problems in the document.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        module = importlib.import_module(package)
    finally:
        sys.path.remove(str(work))
    _GENERATED[digest] = module
    return module


class Generated:
    """The generated package's modules, looked up by name the way a client team imports them."""

    def __init__(self, package: ModuleType, base_url: str) -> None:
        self.package = package.__name__
        self.base_url = base_url

    def module(self, name: str) -> Any:
        return importlib.import_module(f"{self.package}.{name}")

    def model(self, name: str) -> Any:
        return getattr(self.module("models"), name)

    def client(self, token: str | None = None) -> Any:
        client = self.module("client")
        if token is None:
            return client.Client(base_url=self.base_url, raise_on_unexpected_status=True)
        return client.AuthenticatedClient(
            base_url=self.base_url, token=token, raise_on_unexpected_status=True
        )

    async def call(self, operation: str, client: Any, **kwargs: Any) -> Any:
        """Call one operation (``tag.operation_name``); returns the detailed response."""
        tag, name = operation.split(".")
        return await self.module(f"api.{tag}.{name}").asyncio_detailed(client=client, **kwargs)


@pytest.fixture
async def generated(api: Api, generated_root: Path) -> Generated:
    package = await generate_client(api, generated_root)
    return Generated(package, str(api.client.make_url("/")).rstrip("/"))


#: The seed's "secure123" is refused now (too short, and on the common-password list).
PASSWORD = "violet-harbor-lantern-42"


async def register(g: Generated, local_part: str, first: str, last: str, role: str) -> Any:
    """Register (answered alike whether or not the email exists), then log in for the token."""
    email = f"{local_part}+{secrets.token_hex(4)}@example.com"
    body = g.model("RegisterRequest")(
        email=email,
        password=PASSWORD,
        first_name=first,
        last_name=last,
        role=g.model("RegisterRequestRole")(role),
    )
    async with g.client() as client:
        accepted = await g.call("auth.register", client, body=body)
        assert accepted.status_code == 202, accepted.content
        assert isinstance(accepted.parsed, g.model("RegistrationAccepted"))
        resp = await g.call(
            "auth.login", client, body=g.model("LoginRequest")(email=email, password=PASSWORD)
        )
    assert resp.status_code == 200, resp.content
    session = resp.parsed
    assert isinstance(session, g.model("AuthResponse"))
    assert session.user.role == g.model("Role")(role)
    return session


async def test_the_seed_usage_example_runs_on_a_client_generated_from_the_document(
    api: Api, generated: Generated
) -> None:
    g = generated
    # 1. Register a user (the seed's body), 2. create a patient (the seed's body).
    jane = await register(g, "peer.support", "Jane", "Doe", "peer_support")
    async with g.client(jane.token) as client:
        resp = await g.call(
            "patients.create_patient",
            client,
            body=g.model("PatientCreate")(
                first_name="John", last_name="Smith", risk_level=g.model("RiskLevel")("high")
            ),
        )
        assert resp.status_code == 201
        patient = resp.parsed
        assert isinstance(patient, g.model("PatientPublic"))
        assert resp.headers["X-Request-ID"]

    # Two colleagues for the memberIds, and the consent for the seed's external number.
    nurse = await register(g, "care.team", "Ann", "Lee", "care_team_member")
    colleague = await register(g, "peer.two", "Sam", "Roe", "peer_support")
    officer = await api.person("compliance_officer", jane.user.organization_id)
    async with g.client(officer.token) as client:
        resp = await g.call(
            "consents.create_consent",
            client,
            body=g.model("ConsentCreate")(
                patient_id=patient.id,
                purpose=g.model("Purpose")("treatment"),
                external_party=g.model("ExternalParty")(phone_number="+12025550188", name="Dr. External"),
            ),
            x_purpose_of_use=g.model("Purpose")("treatment"),
        )
        assert resp.status_code == 201
        assert resp.parsed.status == g.model("ConsentPublicStatus")("active")

    # 3. Create a conversation (the seed's body with this test's ids), then send and read a message.
    async with g.client(jane.token) as client:
        resp = await g.call(
            "conversations.create_conversation",
            client,
            body=g.model("ConversationCreate")(
                title="John Smith Care Coordination",
                patient_id=patient.id,
                member_ids=[nurse.user.id, colleague.user.id],
                external_members=[
                    g.model("ExternalMemberCreate")(phone_number="+12025550188", name="Dr. External")
                ],
            ),
        )
        assert resp.status_code == 201
        conversation = resp.parsed
        assert isinstance(conversation, g.model("ConversationPublic"))
        assert conversation.member_ids == sorted([jane.user.id, nurse.user.id, colleague.user.id])
        assert [(e.phone_number, e.name) for e in conversation.external_members] == [
            ("+12025550188", "Dr. External")
        ]

        resp = await g.call(
            "conversations.send_message",
            client,
            body=g.model("SendMessageRequest")(
                conversation_id=conversation.id, message="Welcome to John's care coordination."
            ),
        )
        assert resp.status_code == 202
        message = resp.parsed
        assert isinstance(message, g.model("MessagePublic"))

    # Every member reads it through the generated client.
    for member in (nurse, colleague):
        async with g.client(member.token) as client:
            resp = await g.call("conversations.get_conversation", client, id=conversation.id)
            assert resp.status_code == 200
            detail = resp.parsed
            assert isinstance(detail, g.model("ConversationDetailPublic"))
            assert [m.id for m in detail.messages] == [message.id]

    # An error is a declared status that parses into the Problem model, not an exception.
    async with g.client(nurse.token) as client:
        resp = await g.call("conversations.get_conversation", client, id=2**31 - 1)
        assert resp.status_code == 404
        assert isinstance(resp.parsed, g.model("Problem"))
        assert resp.parsed.code == "not_found"


async def test_an_idempotent_send_replays_through_the_generated_client(
    api: Api, generated: Generated
) -> None:
    g = generated
    jane = await register(g, "peer.support", "Jane", "Doe", "peer_support")
    async with g.client(jane.token) as client:
        patient = (
            await g.call(
                "patients.create_patient",
                client,
                body=g.model("PatientCreate")(
                    first_name="John", last_name="Smith", risk_level=g.model("RiskLevel")("high")
                ),
            )
        ).parsed
        key = f"create-{secrets.token_hex(8)}"
        body = g.model("ConversationCreate")(title="Coordination", patient_id=patient.id)
        first = await g.call("conversations.create_conversation", client, body=body, idempotency_key=key)
        again = await g.call("conversations.create_conversation", client, body=body, idempotency_key=key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.parsed.id == first.parsed.id
        assert again.headers["Idempotent-Replayed"] == "true"
        conversation = first.parsed

        send_key = f"send-{secrets.token_hex(8)}"
        send = g.model("SendMessageRequest")(conversation_id=conversation.id, message="Once only.")
        first = await g.call("conversations.send_message", client, body=send, idempotency_key=send_key)
        again = await g.call("conversations.send_message", client, body=send, idempotency_key=send_key)
        assert (first.status_code, again.status_code) == (202, 202)
        assert isinstance(again.parsed, g.model("MessagePublic"))
        assert again.parsed.id == first.parsed.id
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"

        # The same key with another body: a declared 422 whose problem names the key.
        other = g.model("SendMessageRequest")(conversation_id=conversation.id, message="Something else.")
        reused = await g.call("conversations.send_message", client, body=other, idempotency_key=send_key)
        assert reused.status_code == 422
        assert isinstance(reused.parsed, g.model("Problem"))

    # A purpose of use the server does not know is refused before the client sends it: the
    # generated argument is the Purpose enum, so the 422 is reached only by a raw header.
    async with g.client(jane.token).with_headers({"X-Purpose-Of-Use": "curiosity"}) as raw:
        resp = await g.call("auth.get_profile", raw)
        assert resp.status_code == 422
        assert resp.parsed.errors[0].field == "X-Purpose-Of-Use"
