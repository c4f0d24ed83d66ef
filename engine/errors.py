"""The exceptions caremsg raises on purpose.

Every class maps to one HTTP status and one stable ``code`` in ``handlers.problems``; messages are
generic and never carry PHI (names, phone numbers, message text).

    CaremsgError
    ├── InvalidInput            422 — a field is missing, has the wrong type, or a bad value
    │   ├── MalformedRequest    400 — the body is not JSON at all
    │   ├── FileTooLarge        413 — an attached file is larger than the configured limit
    │   └── FileTypeRefused     415 — an attached file's type is not allowed (declared or sniffed)
    ├── Unauthenticated         401 — no credentials, bad credentials, bad or expired token
    ├── Forbidden               403 — the policy engine denied the action (carries the Decision)
    ├── NotFound                404 — the object does not exist (or the actor may not know it does)
    ├── Conflict                409 — the action collides with existing state (may name a field)
    │   ├── ContentDeleted      409 — the message's content was deleted by retention already
    │   └── ConsentsNotPart2    409 — consents without the Part 2 elements stand in the way
    ├── IdempotencyMismatch     422 — an Idempotency-Key was reused with a different request
    ├── TooManyRequests         429 — a rate limit or login back-off (carries retry_after seconds)
    │   └── AccountLocked       429 — too many failed logins: only an admin's unlock opens it
    ├── ServiceUnavailable      503 — a dependency (PostgreSQL, Sendbird) is unreachable right now
    └── ChatGatewayError        — a Sendbird call failed; never reaches a client directly
        ├── ChatNotFound
        ├── ChatAlreadyExists
        ├── ChatInvalidRequest
        ├── ChatRateLimited     (retryable; carries retry_after seconds)
        ├── ChatUnavailable     (retryable: 5xx, timeouts, dropped connections)
        └── ChatCredentialsRejected (retryable: the provider refused caremsg's own credentials)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from engine.decisions import Decision


class CaremsgError(Exception):
    """Root of every error caremsg raises deliberately."""

    code = "error"
    #: The policy denial this answer conceals: a record or person the caller has no relation to is
    #: answered as one that does not exist (404, or 422 naming the field), yet the action was denied,
    #: and the audit trail records it so.
    denial: Decision | None = None

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail

    def concealing(self, denial: Decision) -> Self:
        """This error, answering for ``denial`` (see :attr:`denial`)."""
        self.denial = denial
        return self


@dataclass(frozen=True)
class FieldError:
    """One invalid field: a JSON pointer-ish dotted location and a generic message (no values echoed)."""

    field: str
    message: str
    type: str = "invalid"


class InvalidInput(CaremsgError):
    code = "validation_error"

    def __init__(self, errors: list[FieldError], detail: str = "The request is not valid.") -> None:
        super().__init__(detail)
        self.errors = errors


class MalformedRequest(InvalidInput):
    code = "malformed_request"


class FileTooLarge(InvalidInput):
    code = "payload_too_large"


class FileTypeRefused(InvalidInput):
    code = "unsupported_media_type"


class Unauthenticated(CaremsgError):
    code = "unauthenticated"

    def __init__(self, detail: str = "", *, challenge: str | None = 'Bearer realm="caremsg"') -> None:
        super().__init__(detail)
        #: What the client should authenticate with (WWW-Authenticate); None where no token helps,
        #: e.g. a webhook whose signature does not match.
        self.challenge = challenge


class Forbidden(CaremsgError):
    code = "forbidden"

    def __init__(
        self,
        decision: Decision,
        detail: str = "The policy does not allow this action.",
        *,
        field: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.decision = decision
        self.field = field


class NotFound(CaremsgError):
    code = "not_found"

    def __init__(self, resource: str, detail: str = "") -> None:
        super().__init__(detail or f"No such {resource.replace('_', ' ')}.")
        self.resource = resource


class Conflict(CaremsgError):
    code = "conflict"

    def __init__(self, detail: str = "", *, field: str | None = None) -> None:
        super().__init__(detail)
        #: The request's field whose value collides, if one does.
        self.field = field


class ContentDeleted(Conflict):
    """The action needs a message's content, which retention deleted already (policies/retention.toml)."""

    code = "content_deleted"


class ConsentsNotPart2(Conflict):
    """A patient's records cannot be marked as including 42 CFR Part 2 records while consents
    recorded without the elements of 42 CFR 2.31 are in force: the detail names them, by id only."""

    code = "consents_not_part2"


class IdempotencyMismatch(CaremsgError):
    code = "idempotency_key_reused"


class TooManyRequests(CaremsgError):
    """Refused for its rate, not its content: try again after ``retry_after`` seconds (if given)."""

    code = "too_many_requests"

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class AccountLocked(TooManyRequests):
    code = "account_locked"


class ServiceUnavailable(CaremsgError):
    code = "service_unavailable"

    @classmethod
    def database(cls) -> ServiceUnavailable:
        """The database cannot be reached right now (not a bad statement): try again shortly."""
        return cls("The database is not reachable right now; try again shortly.")


class ChatGatewayError(CaremsgError):
    """A call to the chat provider failed. ``retryable`` tells the outbox relay whether to try again."""

    code = "chat_error"
    retryable = False

    def __init__(
        self, detail: str = "", *, provider_code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(detail)
        self.provider_code = provider_code
        self.status = status


class ChatNotFound(ChatGatewayError):
    code = "chat_not_found"


class ChatAlreadyExists(ChatGatewayError):
    code = "chat_already_exists"


class ChatInvalidRequest(ChatGatewayError):
    code = "chat_invalid_request"


class ChatRateLimited(ChatGatewayError):
    code = "chat_rate_limited"
    retryable = True

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        provider_code: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail, provider_code=provider_code, status=status)
        self.retry_after = retry_after


class ChatUnavailable(ChatGatewayError):
    code = "chat_unavailable"
    retryable = True


class ChatCredentialsRejected(ChatGatewayError):
    """The provider refused caremsg's own credentials (a token rotated badly, revoked, or mistyped on
    deploy), before looking at what was asked: for caremsg the provider is out of reach until an
    operator fixes them, so the outbox relay holds the entry as in any outage rather than fail it.
    ``provider`` names the provider (a small fixed set: ``sendbird``, ``sendbird_business_messaging``,
    ``twilio``) for the operator's log line and metric."""

    code = "chat_credentials_rejected"
    retryable = True

    def __init__(
        self, detail: str = "", *, provider: str, provider_code: int | None = None, status: int | None = None
    ) -> None:
        super().__init__(detail, provider_code=provider_code, status=status)
        self.provider = provider
