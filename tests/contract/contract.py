"""The provider contract as one table: every call caremsg's clients make, as the providers document it.

Each row says, for one call: method and path (a template), the request headers that must be sent,
the body (or form) fields that are required and the ones that are documented at all, the query
parameters that are documented, and the reply fields the client reads, which the documented reply
must carry. Sources: ``docs/sendbird-api.md`` (sections and confidence marks given per
row) and Twilio's Message resource documentation.

The same table drives two tests, so the client and the emulators cannot agree with each other
while disagreeing with the providers:

- ``test_*_client_*``: the real client, over ``httpx.MockTransport`` answering the row's documented
  example reply, sends only what the row documents and reads only what the reply documents;
- ``test_*_emulator_*``: the same calls against the emulator over real HTTP, whose requests and
  answers are checked against the same rows.

Longer than 400 lines because it is one table: each call caremsg's clients make is one row, read by
both kinds of test, so that a call is documented once; the rows are most of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One documented call."""

    operation: str
    method: str
    path: str  # template; {name} matches one path segment
    source: str
    headers: frozenset[str] = frozenset({"api-token"})
    required: frozenset[str] = frozenset()
    documented: frozenset[str] = frozenset()  # body or form fields the provider documents
    query: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()  # reply fields the client reads
    #: A documented reply (only documented fields): what the mock transport answers.
    example: Any = field(default_factory=dict)
    form: bool = False  # form-encoded body instead of JSON

    def matches(self, method: str, path: str) -> bool:
        pattern = "^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(self.path)) + "$"
        return method == self.method and re.match(pattern, path) is not None


USER = {
    "user_id": "u-1",
    "nickname": "Ada",
    "profile_url": "",
    "access_token": "",
    "is_active": True,
    "is_online": False,
    "last_seen_at": 0,
    "created_at": 1_700_000_000_000,
    "metadata": {},
    "phone_number": "",
}
USER_READS = frozenset(
    {"user_id", "nickname", "profile_url", "phone_number", "metadata", "is_active", "created_at"}
)
CHANNEL = {
    "channel_url": "ward_7",
    "name": "Ward 7",
    "custom_type": "",
    "data": "",
    "created_at": 1_700_000_000_000,
    "member_count": 1,
    "members": [{"user_id": "u-1"}],
    "operators": [],
    "freeze": False,
}
CHANNEL_READS = frozenset(
    {"channel_url", "name", "custom_type", "data", "member_count", "created_at", "freeze"}
)
MESSAGE = {
    "message_id": 1,
    "type": "MESG",
    "message": "hi",
    "custom_type": "",
    "data": "",
    "channel_url": "ward_7",
    "created_at": 1_700_000_000_000,
    "updated_at": 0,
    "user": {"user_id": "u-1"},
    "is_removed": False,
}
MESSAGE_READS = frozenset(
    {
        "message_id",
        "type",
        "message",
        "custom_type",
        "data",
        "channel_url",
        "created_at",
        "user",
        "is_removed",
    }
)
USER_PATH = "/v3/users/{user_id}"
CHANNEL_PATH = "/v3/group_channels/{channel_url}"

SENDBIRD: tuple[Call, ...] = (
    Call(
        "create_user",
        "POST",
        "/v3/users",
        "§3 create user (H OAS); phone_number H D-BM",
        required=frozenset({"user_id", "nickname", "profile_url"}),
        documented=frozenset(
            {
                "user_id",
                "nickname",
                "profile_url",
                "issue_access_token",
                "metadata",
                "discovery_keys",
                "phone_number",
            }
        ),
        reads=USER_READS,
        example=USER,
    ),
    Call(
        "get_user",
        "GET",
        USER_PATH,
        "§3 view user (H)",
        query=frozenset({"include_unread_count", "custom_types", "super_mode"}),
        reads=USER_READS,
        example=USER,
    ),
    Call(
        "update_user",
        "PUT",
        USER_PATH,
        "§3 update user (H OAS; phone_number H D-BM)",
        documented=frozenset(
            {
                "nickname",
                "profile_url",
                "is_active",
                "leave_all_when_deactivated",
                "issue_access_token",
                "discovery_keys",
                "preferred_languages",
                "last_seen_at",
                "phone_number",
            }
        ),
        reads=USER_READS,
        example=USER,
    ),
    Call(
        "update_user_metadata",
        "PUT",
        f"{USER_PATH}/metadata",
        "§3 user metadata (H)",
        required=frozenset({"metadata"}),
        documented=frozenset({"metadata", "upsert"}),
        example={"unit": "icu"},
    ),
    Call(
        "create_group_channel",
        "POST",
        "/v3/group_channels",
        "§4 create group channel (H OAS, JSOLD)",
        documented=frozenset(
            {
                "user_ids",
                "users",
                "name",
                "channel_url",
                "custom_type",
                "data",
                "is_distinct",
                "is_public",
                "is_super",
                "is_ephemeral",
                "operator_ids",
                "inviter_id",
                "strict",
                "invitation_status",
                "hidden_status",
                "block_sdk_user_channel_join",
                "access_code",
                "cover_url",
            }
        ),
        reads=CHANNEL_READS,
        example=CHANNEL,
    ),
    Call(
        "get_group_channel",
        "GET",
        CHANNEL_PATH,
        "§4 view channel (H)",
        query=frozenset(
            {"show_member", "show_read_receipt", "show_delivery_receipt", "member_active_mode", "user_id"}
        ),
        reads=CHANNEL_READS | {"members"},
        example=CHANNEL,
    ),
    Call(
        "update_group_channel",
        "PUT",
        CHANNEL_PATH,
        "§4 update channel (H)",
        documented=frozenset(
            {
                "name",
                "custom_type",
                "data",
                "cover_url",
                "is_public",
                "is_distinct",
                "operator_ids",
                "access_code",
            }
        ),
        reads=CHANNEL_READS,
        example=CHANNEL,
    ),
    Call(
        "invite_members",
        "POST",
        f"{CHANNEL_PATH}/invite",
        "§4 invite (H)",
        required=frozenset({"user_ids"}),
        documented=frozenset({"user_ids", "inviter_id", "invitation_status", "hidden_status"}),
        reads=CHANNEL_READS,
        example=CHANNEL,
    ),
    Call(
        "leave_members",
        "PUT",
        f"{CHANNEL_PATH}/leave",
        "§4 leave (H)",
        required=frozenset({"user_ids"}),
        documented=frozenset({"user_ids", "should_leave_all", "should_remove_operator_status", "reason"}),
        example={},
    ),
    Call(
        "freeze_channel",
        "PUT",
        f"{CHANNEL_PATH}/freeze",
        "§6 freeze (H OAS)",
        required=frozenset({"freeze"}),
        documented=frozenset({"freeze"}),
        reads=CHANNEL_READS,
        example={**CHANNEL, "freeze": True},
    ),
    Call(
        "send_message",
        "POST",
        f"{CHANNEL_PATH}/messages",
        "§5 send message (H OAS)",
        required=frozenset({"message_type", "message"}),
        documented=frozenset(
            {
                "message_type",
                "user_id",
                "message",
                "custom_type",
                "data",
                "dedup_id",
                "send_push",
                "is_silent",
                "mark_as_read",
                "mention_type",
                "mentioned_user_ids",
                "sorted_metaarray",
                "created_at",
            }
        ),
        reads=MESSAGE_READS,
        example=MESSAGE,
    ),
    Call(
        "list_messages",
        "GET",
        f"{CHANNEL_PATH}/messages",
        "§5 list messages (H OAS, PY)",
        query=frozenset(
            {
                "message_ts",
                "message_id",
                "prev_limit",
                "next_limit",
                "include",
                "reverse",
                "sender_id",
                "sender_ids",
                "custom_types",
                "message_type",
                "including_removed",
                "with_sorted_meta_array",
                "include_reply_type",
            }
        ),
        reads=frozenset({"messages"}),
        example={"messages": [MESSAGE]},
    ),
    Call(
        "delete_message",
        "DELETE",
        f"{CHANNEL_PATH}/messages/{{message_id}}",
        "§5 delete message (H)",
        example={},
    ),
    Call(
        "mark_as_read",
        "PUT",
        f"{CHANNEL_PATH}/messages/mark_as_read",
        "§5 mark as read (H OAS)",
        required=frozenset({"user_id"}),
        documented=frozenset({"user_id", "timestamp"}),
        example={},
    ),
    Call(
        "create_channel_metadata",
        "POST",
        f"{CHANNEL_PATH}/metadata",
        "§4 channel metadata; reply shape §8",
        required=frozenset({"metadata"}),
        documented=frozenset({"metadata", "include_ts"}),
        reads=frozenset({"metadata"}),
        example={"metadata": {"ward": "7"}, "include_ts": False},
    ),
    Call(
        "update_channel_metadata",
        "PUT",
        f"{CHANNEL_PATH}/metadata",
        "§4 channel metadata (H)",
        required=frozenset({"metadata"}),
        documented=frozenset({"metadata", "upsert"}),
        example={"ward": "8"},
    ),
    Call(
        "get_channel_metadata",
        "GET",
        f"{CHANNEL_PATH}/metadata",
        "§4 channel metadata (H; keys M JSOLD)",
        query=frozenset({"keys", "key"}),
        example={"ward": "8"},
    ),
    Call(
        "delete_channel_metadata", "DELETE", f"{CHANNEL_PATH}/metadata", "§4 channel metadata (H)", example={}
    ),
    Call(
        "delete_channel_metadata_key",
        "DELETE",
        f"{CHANNEL_PATH}/metadata/{{key}}",
        "§4 per-key metadata (M JSOLD)",
        example={},
    ),
)

BUSINESS_MESSAGING = Call(
    "send_notification",
    "POST",
    "/v1/notifications",
    "§8.2 Business Messaging send (H fields; L path version, reply shape undocumented)",
    required=frozenset({"template", "targets"}),
    documented=frozenset({"template", "targets", "mode", "push_template"}),
    example={},
)

TWILIO_CREATE_MESSAGE = Call(
    "create_message",
    "POST",
    "/2010-04-01/Accounts/{account_sid}/Messages.json",
    "Twilio Message resource: create (twilio.com/docs/messaging/api/message-resource)",
    headers=frozenset({"authorization"}),
    required=frozenset({"To"}),
    documented=frozenset(
        {
            "To",
            "From",
            "MessagingServiceSid",
            "Body",
            "MediaUrl",
            "ContentSid",
            "StatusCallback",
            "ApplicationSid",
            "MaxPrice",
            "ProvideFeedback",
            "Attempt",
            "ValidityPeriod",
            "ForceDelivery",
            "SmartEncoded",
            "ScheduleType",
            "SendAt",
            "SendAsMms",
            "ShortenUrls",
        }
    ),
    reads=frozenset({"sid"}),
    example={"sid": "SM" + "0" * 32, "status": "queued", "to": "+12025550143", "body": "hi"},
    form=True,
)


#: Twilio's incoming-message webhook (twilio.com/docs/messaging/guides/webhook-request; OptOutType:
#: help.twilio.com "Track Opt-Out, Opt-In and Help Messages Using the OptOutType Parameter"): the
#: parameters Twilio documents, and the ones caremsg reads (``integrations.twilio.inbound_message``).
TWILIO_INBOUND_DOCUMENTED = frozenset(
    {
        "MessageSid",
        "SmsSid",
        "SmsMessageSid",
        "AccountSid",
        "MessagingServiceSid",
        "From",
        "To",
        "Body",
        "NumMedia",
        "NumSegments",
        "SmsStatus",
        "ApiVersion",
        "FromCity",
        "FromState",
        "FromZip",
        "FromCountry",
        "ToCity",
        "ToState",
        "ToZip",
        "ToCountry",
        "OptOutType",
    }
)
TWILIO_INBOUND_READ = frozenset({"MessageSid", "AccountSid", "From", "Body"})


def row_for(table: tuple[Call, ...], method: str, path: str) -> Call:
    """The one row this request is; AssertionError for a call the table does not document."""
    rows = [c for c in table if c.matches(method, path)]
    # A literal segment beats a template one (".../messages/mark_as_read" vs ".../messages/{id}").
    rows.sort(key=lambda c: c.path.count("{"))
    assert rows, f"undocumented call: {method} {path}"
    return rows[0]


def check_request(
    call: Call, headers: Mapping[str, str], body: Mapping[str, Any] | None, query: Mapping[str, str]
) -> None:
    """The request sends the required headers and fields, and nothing the row does not document."""
    sent_headers = {k.lower() for k in headers}
    assert call.headers <= sent_headers, (call.operation, "missing headers", call.headers - sent_headers)
    fields = set(body or {})
    assert call.required <= fields, (call.operation, "missing fields", call.required - fields)
    assert fields <= call.documented, (call.operation, "undocumented fields", fields - call.documented)
    assert set(query) <= call.query, (
        call.operation,
        "undocumented query parameters",
        set(query) - call.query,
    )


def check_reply(call: Call, reply: Any) -> None:
    """The reply carries every field the client reads."""
    if call.reads:
        assert isinstance(reply, dict), (call.operation, reply)
        assert call.reads <= set(reply), (call.operation, "reply lacks", call.reads - set(reply))
