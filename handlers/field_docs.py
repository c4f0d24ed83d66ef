"""What each field of the public API means, by its JSON (camelCase) name.

The request and response bases (``handlers.schemas``) fill a property's description from here when
the model does not give one itself (``Field(description=...)`` wins). ``"Model.field"`` overrides
the plain name where one name means different things. The OpenAPI tests require every property of
every schema to be described, so a new field without an entry here is caught.
"""

from __future__ import annotations

from typing import Any

FIELD_DOCS: dict[str, str] = {
    # identity and time
    "id": "The record's id.",
    "createdAt": "When the record was created (UTC, ISO 8601).",
    "updatedAt": "When the record last changed (UTC, ISO 8601).",
    "createdBy": "The user who created it.",
    "addedAt": "When the member was added.",
    "addedBy": "The user who added it.",
    "organizationId": "The organization it belongs to.",
    "organizationIds": "The member organizations.",
    "patientId": "The patient it concerns.",
    "userId": "The user concerned.",
    "conversationId": "The conversation concerned.",
    "senderId": "The user who sent the message.",
    "recordedBy": "The user who recorded the consent.",
    "revokedBy": "The user who revoked the consent; null while it is not revoked.",
    # people
    "email": "The login email (stored lower-case).",
    "password": "8 to 128 characters; never returned.",
    "firstName": "Given name.",
    "lastName": "Family name.",
    "role": "The role the policy decides by.",
    "isActive": "False once an administrator disabled the account.",
    "dateOfBirth": "Calendar date between 1900-01-01 and today; optional.",
    "riskLevel": "Clinical risk level.",
    "phoneNumber": "E.164 phone number, e.g. +12025550143.",
    "name": "Display name.",
    "title": "The conversation's title.",
    "description": "Free text describing it.",
    "selfRegistration": "Whether people may register themselves into this organization.",
    # auth
    "token": "The access token: send it as `Authorization: Bearer <token>`.",
    "tokenType": "Always `Bearer`.",
    "user": "The logged-in user.",
    # conversations and messages
    "channelUrl": "The Sendbird group channel of the conversation.",
    "channelState": "pending until the chat channel exists, then ready (or failed).",
    "memberIds": "Staff members of the conversation (the creator is always one).",
    "externalMembers": "External participants reached by SMS.",
    "messages": "The most recent messages, oldest first.",
    "removedAt": "When the participant was taken out of the conversation; null while still in it.",
    "message": "The message text (1 to 4000 characters).",
    "state": "Delivery state.",
    "channel": "chat for the conversation's channel, sms for an external participant.",
    "members": "The care team's members.",
    # consents
    "purpose": "Purpose of use.",
    "recipientType": "Whom the consent discloses to: organization, compliance_group or external.",
    "complianceGroupId": "The compliance group disclosed to (recipientType compliance_group).",
    "externalParty": "The external person disclosed to (recipientType external).",
    "effectiveAt": "When the consent starts to apply.",
    "expiresAt": "When it stops applying; null for no end.",
    "revokedAt": "When it was revoked; null while it is not.",
    "revocationReason": "Why it was revoked, as recorded.",
    "Part2Public.discloser": "Who may disclose: the Part 2 program, entity or person (42 CFR 2.31(a)(1)).",
    "Part2Public.information": "How much and what kind of information may be disclosed (2.31(a)(3)).",
    "Part2Public.expiryEvent": "The event that ends the consent when it has no expiresAt (2.31(a)(6)).",
    "Part2Public.signedBy": "Who signed: the patient or the person authorized to sign for them (2.31(a)(8)).",
    "Part2Public.signedOn": "The date of the signature (2.31(a)(7)).",
    "Part2Public.revocationRightStated": "The patient was told of the right to revoke (2.31(a)(5)).",
    "scope": "What the consent discloses: read, message and/or sms.",
    "ConsentPublic.status": "pending (not yet effective), active, expired or revoked, now.",
    "consent": "The consent as it is after the change.",
    "removedExternalParticipants": "External participants taken out of conversations (their ids).",
    "reason": "The reason given (never shown to other organizations).",
    # break-glass
    "openedAt": "When emergency access was opened.",
    "open": "Whether the emergency access is still open now.",
    # audit
    "occurredAt": "When it happened (UTC).",
    "requestId": "The X-Request-ID of the request that caused it.",
    "actorId": "The user who acted; null when unauthenticated.",
    "actorRole": "The actor's role at the time.",
    "sourceAddress": "The client address the request came from.",
    "event": "The audit event name, e.g. conversation.create.",
    "workflow": "The workflow decided, as in policies/workflows.toml.",
    "resourceType": "The kind of record acted on.",
    "resourceId": "The id of the record acted on.",
    "decision": "allow or deny, as the policy decided; null when nothing was decided.",
    "matchedRule": "The policy rule that matched (or came closest, for a denial).",
    "policyVersion": "The content hash of the policy that decided.",
    "breakGlass": "Whether the action relied on emergency access.",
    "outcome": "What came of it.",
    "AuditEventPublic.reason": "The policy's reason code for the decision.",
    "AuditEventPublic.purpose": "The purpose of use stated with the request (X-Purpose-Of-Use).",
    "AuditEventPublic.outcome": "success, denied or failure.",
    "chainHash": "The event's hash in the tamper-evident chain; null until sealed.",
    "auditEventId": "The audit event recording the disclosure.",
    "kind": "person (a user) or external (a party outside caremsg, by phone).",
    # policy
    "version": "Content hash of the policy files.",
    "previousVersion": "The version in force before the reload.",
    "loadedAt": "When this instance loaded the policy.",
    "ruleCount": "How many rules the policy has.",
    "workflowCount": "How many workflows the policy declares.",
    "PolicyReloadPublic.outcome": "swapped (a new version serves) or unchanged.",
    # paging
    "items": "This page's items, in order.",
    # problems
    "type": "A URI naming the problem type; about:blank for the plain HTTP meaning.",
    "Problem.title": "Short summary of the status.",
    "Problem.status": "The HTTP status.",
    "detail": "Explanation for a person; never carries submitted values.",
    "code": "Stable machine-readable code, e.g. validation_error, forbidden, not_found.",
    "errors": "For 422 and 400: one entry per invalid field.",
    "field": "The field at fault (dotted path, or a header name).",
    "FieldProblem.message": "What is wrong with it.",
    "FieldProblem.type": "The kind of error, e.g. missing, string_too_long, enum.",
    "WebhookAccepted.status": "accepted (new event) or duplicate (already received).",
    "RegistrationAccepted.status": "Always accepted: the same answer whether or not the email exists.",
    # the on-call roster and staff away
    "careTeamId": "The care team concerned.",
    "startsAt": "When it starts (UTC, inclusive).",
    "endsAt": "When it ends (UTC, exclusive).",
    "OnCallRosterPublic.from": "The start of the window read (UTC, inclusive).",
    "OnCallRosterPublic.to": "The end of the window read (UTC, exclusive).",
    "RosterChangePublic.shift": "The shift added or removed.",
    "gapsUntil": "The end of the stretch the gaps were looked for in (UTC): 7 days from now.",
    "delegateId": "The colleague who takes urgent messages meanwhile.",
    "StaffAwayPublic.from": "Away from (UTC, inclusive).",
    "StaffAwayPublic.until": "Away until (UTC, exclusive); null: until ended.",
    "AwayStatusPublic.at": "When this was read (UTC).",
    "AwayStatusPublic.planned": "Away windows that start later.",
    "ComplianceGroupPublic.sharedWith": (
        "Organizations the owner shared the group with (a non-owner sees only its own)."
    ),
}


def describe_fields(schema: dict[str, Any], model: type[Any]) -> None:
    """Fill each property's missing description from :data:`FIELD_DOCS` (pydantic json_schema_extra)."""
    for name, prop in schema.get("properties", {}).items():
        if "description" not in prop:
            text = FIELD_DOCS.get(f"{model.__name__}.{name}") or FIELD_DOCS.get(name)
            if text:
                prop["description"] = text
