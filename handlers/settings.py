"""Settings: config.toml defaults, overridden by environment variables, parsed into one frozen object.

``load_settings()`` is called once by the command line; the result is passed in everywhere. Nothing
reads the environment at import time. Environment variables are ``CAREMSG_<SECTION>_<KEY>``
(``CAREMSG_AUTH_JWT_SECRET``), plus ``DATABASE_URL`` for ``[database] url``.
"""

from __future__ import annotations

import base64
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)

DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105 - refused outside development
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceSettings(_Section):
    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Worker processes of `caremsg serve` sharing host:port (SO_REUSEPORT): about one per core.
    workers: int = Field(1, ge=1)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # HTTP hygiene: Strict-Transport-Security on responses served over TLS (0: never), and whether a
    # proxy's X-Forwarded-Proto: https counts as TLS (only behind a proxy that sets it itself).
    hsts_max_age_seconds: int = Field(63_072_000, ge=0)
    trust_forwarded_proto: bool = False
    # The proxies in front (addresses or networks): a request from one of them is from the client
    # its X-Forwarded-For names (handlers/proxies.py). Empty: every peer is the client.
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    # A connection with no request under way (just opened, or after its last answer, a request half
    # sent included) is closed after this long (aiohttp's default is an hour: a client could hold
    # connections open that long without sending a byte). Keep it above any proxy's idle timeout for
    # its connections to the service (nginx and AWS ALB: 60 s), or the proxy reuses closed ones.
    idle_connection_seconds: float = Field(75.0, gt=0, le=3600)
    # GET /metrics needs `Authorization: Bearer <metrics_token>` when set; unset, it is open in
    # development and test and not served in production. GET /ready fails past this sealer lag.
    metrics_token: str = ""
    ready_max_sealer_lag_seconds: float = Field(300.0, gt=0)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``CAREMSG_SERVICE_TRUSTED_PROXIES=10.0.0.0/8,192.0.2.7`` as config.toml's list."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class DatabaseSettings(_Section):
    # The service's connection: it logs in as app_role (DATABASE_URL). Empty: the embedded server.
    url: str = ""
    # The migrations' connection: owner_role, or an administrator that may SET ROLE to it
    # (CAREMSG_DATABASE_OWNER_URL). Empty: url. integrations/db/roles.py says what each role may do.
    owner_url: str = ""
    owner_role: str = Field("caremsg_owner", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    app_role: str = Field("caremsg_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    data_dir: str = ".caremsg/pgdata"
    pool_size: int = Field(10, ge=1)
    max_overflow: int = Field(10, ge=0)
    statement_timeout_ms: int = Field(5000, ge=0)


class AuthSettings(_Section):
    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "caremsg"
    jwt_audience: str = "caremsg-api"
    access_token_minutes: int = Field(60, ge=1, le=24 * 60)
    self_registration: bool = True
    default_organization: str = "Default Organization"
    # argon2id cost. The defaults are the library's (RFC 9106 second recommendation); production
    # refuses anything cheaper. Tests lower them: hashing is not what they test.
    # A token's account (active, role, organization) is re-read at most this often per account.
    account_recheck_seconds: float = Field(2.0, ge=0, le=60)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8)
    # Hashes computed at once (the rest wait their turn); 0: half the cores, at least one.
    argon2_concurrency: int = Field(0, ge=0)
    # Accounts (README "Accounts"). Self-registered accounts wait for an admin's approval; unset:
    # on in production, off otherwise (the development walkthrough registers and goes on at once).
    require_approval: bool | None = None
    # ASVS 5.0 V6.2.1: at least 8, 15 strongly recommended for single-factor login (caremsg's).
    password_min_length: int = Field(15, ge=8, le=64)
    # zxcvbn's guessability score (0-4) a password needs; 3 = safely unguessable.
    password_min_score: int = Field(3, ge=0, le=4)
    # Failed logins: free ones, then a wait doubling from base to max; forgotten after the window.
    login_account_free_failures: int = Field(3, ge=1)
    login_address_free_failures: int = Field(20, ge=1)
    login_backoff_base_seconds: float = Field(1.0, gt=0)
    login_backoff_max_seconds: float = Field(900.0, gt=0)
    login_failure_window_minutes: float = Field(15.0, gt=0)
    # This many failures in a row lock the account until an admin unlocks it (0: never lock).
    lockout_failures: int = Field(10, ge=0)
    # Self-registration: free ones per source within the hour, then a wait doubling from a minute
    # to an hour; and one notice per window to an account's owner about attempts on their address.
    registration_source_free: int = Field(20, ge=1)
    registration_notice_minutes: float = Field(60.0, gt=0)

    def approval_required(self, environment: str) -> bool:
        return self.require_approval if self.require_approval is not None else environment == "production"


class RateLimitSettings(_Section):
    """Abuse limits on the whole API (handlers/ratelimit.py): token buckets per source address and
    per access token, each refilled at ``*_per_second`` up to ``*_burst``. The workers of one
    service (``--workers``) share them (handlers/buckets.py)."""

    per_address_per_second: float = Field(50.0, gt=0)
    per_address_burst: int = Field(200, ge=1)
    per_token_per_second: float = Field(20.0, gt=0)
    per_token_burst: int = Field(100, ge=1)
    # Attachments per account (handlers/ratelimit.py upload_limit), whatever its tokens and addresses.
    uploads_per_hour: float = Field(120.0, gt=0)
    uploads_burst: int = Field(20, ge=1)
    # Unauthenticated failures are audited as one summary per source address and window.
    rejection_summary_seconds: float = Field(60.0, gt=0)


class ApiSettings(_Section):
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(200, ge=1)
    max_body_bytes: int = Field(65536, ge=1024)


class ConsoleSettings(_Section):
    """The web console's session (/console/): ended after this long without a request, and this long
    after sign-in whatever happens (never later than the access token's own expiry)."""

    idle_timeout_seconds: int = Field(900, ge=1)
    absolute_timeout_seconds: int = Field(8 * 3600, ge=1)


class SendbirdSettings(_Section):
    app_id: str = ""
    api_token: str = ""
    # Webhook signatures are keyed with the application's MASTER API token (sendbird-api.md §7, §8),
    # which may differ from api_token (a secondary token). Empty: api_token is the master token.
    master_api_token: str = ""
    base_url: str = ""
    timeout_seconds: float = Field(5.0, gt=0)
    get_per_second: float = Field(10, gt=0)
    write_per_second: float = Field(5, gt=0)

    @property
    def use_emulator(self) -> bool:
        return not (self.app_id and self.api_token)

    @property
    def resolved_base_url(self) -> str:
        return self.base_url or f"https://api-{self.app_id}.sendbird.com"

    @property
    def webhook_token(self) -> str:
        """The key of ``x-sendbird-signature``: the master API token."""
        return self.master_api_token or self.api_token


class PolicySettings(_Section):
    directory: str = "policies"
    # Live reload: how often the files are polled for changes; SIGHUP also reloads.
    watch_interval_seconds: float = Field(2.0, gt=0)
    reload_on_sighup: bool = True
    # How long an emergency (break-the-glass) session lasts.
    break_glass_minutes: int = Field(60, ge=1, le=24 * 60)
    # Whose compliance officers change the policy (README "Four eyes"); "": auth.default_organization.
    governing_organization: str = ""

    def path(self) -> Path:
        candidate = Path(self.directory)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


class OutboxSettings(_Section):
    poll_interval_seconds: float = Field(1.0, gt=0)
    base_backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(300.0, gt=0)
    max_attempts: int = Field(50, ge=1)  # caremsg's own errors only: an outage is retried until it ends
    batch_size: int = Field(20, ge=1)
    # A relay's claim on its entries, renewed every third of it while it runs: after a crash they are
    # delivered by another relay (or the restarted one) this long after.
    lease_seconds: float = Field(10.0, gt=0)
    # Conversations delivered side by side per wave; capped by the Sendbird client's pool (httpx: 100).
    concurrency: int = Field(8, ge=1, le=100)
    # The urgent-message escalation scheduler (integrations/escalation.py): its period and round size.
    escalation_interval_seconds: float = Field(5.0, gt=0)
    escalation_batch_size: int = Field(500, ge=1)


class MessagingSettings(_Section):
    """Durable messaging, idempotency keys, SMS (Twilio or Sendbird Business Messaging), webhooks."""

    idempotency_ttl_hours: float = Field(24.0, gt=0)
    # An in-progress key is held this long, renewed every third of it while its request runs: the key
    # of a request that died (kill -9, a database outage) is free again this long after.
    idempotency_lease_seconds: float = Field(5.0, gt=0)
    # Business Messaging (sendbird-api.md §8). Empty token: the emulator plays the provider.
    bm_api_token: str = ""
    bm_base_url: str = ""  # default https://api-{sendbird.app_id}.notifications.sendbird.com
    # The documented send path; some v2 pages show /v1/notifications/messages (§8: uncertain).
    bm_send_path: str = "/v1/notifications"
    sms_template_key: str = "caremsg_sms"
    # Texts' own rate budget: a backlog of texts never slows chat posts down, nor chat the texts.
    sms_per_second: float = Field(5, gt=0)
    sms_notification_text: str = "You have a new secure message from your care team."
    sms_help_text: str = "Secure messages from your care team. Reply STOP to opt out, START to opt back in."
    sms_stop_text: str = "You will get no more texts from your care team. Reply START to opt back in."
    sms_start_text: str = "You will get texts from your care team again. Reply STOP to opt out."
    # Where the emulator posts its signed webhooks; empty: http://{service.host}:{service.port}.
    webhook_base_url: str = ""
    webhook_poll_interval_seconds: float = Field(1.0, gt=0)
    # Which SMS provider texts external participants. "twilio" is two-way (replies, STOP/START/HELP
    # arrive at POST /api/webhooks/twilio); "sendbird_business_messaging" is outbound only
    # (sendbird-api.md §8): replies and keywords cannot arrive, so no text goes out with it unless
    # accept_outbound_only_sms says the deployment accepts that.
    sms_provider: Literal["twilio", "sendbird_business_messaging"] = "twilio"
    accept_outbound_only_sms: bool = False
    # Twilio Programmable Messaging. Empty account SID and auth token: the Twilio emulator plays the
    # carrier (development only). Secrets via CAREMSG_MESSAGING_TWILIO_AUTH_TOKEN.
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from_number: str = ""
    # A Messaging Service (needed for Advanced Opt-Out, which reports OptOutType); wins over from_number.
    twilio_messaging_service_sid: str = ""
    twilio_base_url: str = "https://api.twilio.com"
    # The webhook URL exactly as configured at Twilio (the signature covers it). Empty (refused in
    # production): the URL the request arrived at, from its Host header, wrong behind a proxy.
    twilio_webhook_url: str = ""
    # Files staff attach to messages (POST /api/conversations/{id}/attachments): the content types
    # accepted (each also sniffed from its first bytes where it has a signature) and the largest
    # size. The bytes are kept in PostgreSQL (message_attachments), so the limit stays small.
    attachment_types: tuple[str, ...] = ("application/pdf", "image/png", "image/jpeg")
    attachment_max_bytes: int = Field(5 * 1024 * 1024, ge=1, le=10 * 1024 * 1024)

    @property
    def use_twilio_emulator(self) -> bool:
        return self.sms_provider == "twilio" and not (self.twilio_account_sid and self.twilio_auth_token)


DEV_AUDIT_IDENTIFIER_KEY = "dev-only-audit-identifier-key-change-me-0123"  # refused in production
DEV_AUDIT_SIGNING_KEY = "xYFKj/3lGEANJ+TVpKeJ8iShuwVQ+AdtL7B+l5LI0uc="  # refused in production


class AuditSettings(_Section):
    """The tamper-evident audit trail: identifier hashing, the chain sealer, signed anchors."""

    # HMAC key for searchable identifiers stored as keyed hashes (a failed login's email).
    identifier_key: str = DEV_AUDIT_IDENTIFIER_KEY
    # Ed25519 private key (base64 of the 32-byte seed) that signs chain checkpoints (audit anchor).
    signing_key: str = DEV_AUDIT_SIGNING_KEY
    # The background sealer that hash-chains committed audit events.
    sealer_enabled: bool = True
    seal_interval_seconds: float = Field(1.0, gt=0)
    seal_batch_size: int = Field(1000, ge=1, le=100_000)

    @field_validator("signing_key")
    @classmethod
    def _ed25519_seed(cls, value: str) -> str:
        try:
            seed = base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("must be base64 (of a 32-byte Ed25519 seed)") from None
        if len(seed) != 32:
            raise ValueError("must be the base64 of a 32-byte Ed25519 seed")
        return value


class ConsentSettings(_Section):
    """What happens when a consent's expiry passes: access ends at once (decisions compare the
    time); the sweep then ends the channel memberships and SMS admissions it granted."""

    expiry_sweep_interval_seconds: float = Field(30.0, gt=0)
    expiry_sweep_batch_size: int = Field(100, ge=1, le=10_000)


class RetentionSettings(_Section):
    """The retention sweep (policies/retention.toml says how long content lives): how often it runs,
    how many messages one short transaction deletes the content of, and the share of its time it
    may spend in batches: after a batch that took t seconds it waits t * (1 - share) / share, so
    requests keep the database and the CPU, the more so the busier they are (a busy database makes
    batches slower and so the waits longer). bench/retention.py --with-sends measures it."""

    sweep_interval_seconds: float = Field(300.0, gt=0)
    sweep_batch_size: int = Field(500, ge=1, le=10_000)
    sweep_duty_cycle: float = Field(0.25, gt=0, le=1)


class Settings(_Section):
    service: ServiceSettings = ServiceSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    api: ApiSettings = ApiSettings()
    sendbird: SendbirdSettings = SendbirdSettings()
    policy: PolicySettings = PolicySettings()
    outbox: OutboxSettings = OutboxSettings()
    messaging: MessagingSettings = MessagingSettings()
    audit: AuditSettings = AuditSettings()
    console: ConsoleSettings = ConsoleSettings()
    consents: ConsentSettings = ConsentSettings()
    retention: RetentionSettings = RetentionSettings()

    def webhook_base_url(self) -> str:
        """Where the development emulator posts its webhooks: ``messaging.webhook_base_url``, else this
        service's own address. ``caremsg serve`` puts the address it actually serves into
        ``service.host``/``service.port`` (``--host``/``--port`` included) before anything reads them."""
        return self.messaging.webhook_base_url or f"http://{self.service.host}:{self.service.port}"

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Settings:
        if self.service.environment == "production":
            if self.auth.jwt_secret == DEV_JWT_SECRET:
                raise ValueError("auth.jwt_secret: the development default is refused in production")
            if self.sendbird.use_emulator:
                raise ValueError("sendbird: the emulator is refused in production; set app_id and api_token")
            if self.messaging.use_twilio_emulator:
                twilio = "the Twilio emulator is refused in production; set account SID and auth token"
                raise ValueError(f"messaging.twilio_*: {twilio}")
            if self.messaging.sms_provider == "twilio" and not self.messaging.twilio_webhook_url:
                raise ValueError("messaging.twilio_webhook_url: production needs the URL Twilio signs")
            if not self.database.url:
                raise ValueError("database.url: the embedded PostgreSQL is refused in production")
            if self.auth.argon2_time_cost < 3 or self.auth.argon2_memory_kib < 65536:
                raise ValueError("auth.argon2_*: production needs at least time_cost 3 and 65536 KiB")
        if len(self.auth.jwt_secret.encode()) < 32:
            raise ValueError("auth.jwt_secret: must be at least 32 bytes")
        return self

    @model_validator(mode="after")
    def _refuse_development_audit_keys_in_production(self) -> Settings:
        audit = self.audit
        if self.service.environment == "production":
            if audit.identifier_key == DEV_AUDIT_IDENTIFIER_KEY:
                raise ValueError("audit.identifier_key: the development default is refused in production")
            if audit.signing_key == DEV_AUDIT_SIGNING_KEY:
                raise ValueError("audit.signing_key: the development default is refused in production")
        if len(audit.identifier_key.encode()) < 32:
            raise ValueError("audit.identifier_key: must be at least 32 bytes")
        return self


class SettingsError(Exception):
    """config.toml or the environment holds a value that does not parse."""


def _environment_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for section, model in Settings.model_fields.items():
        annotation = model.annotation
        assert isinstance(annotation, type)
        for key in annotation.model_fields:
            value = env.get(f"CAREMSG_{section.upper()}_{key.upper()}")
            if value is not None:
                overrides.setdefault(section, {})[key] = value
    if env.get("DATABASE_URL"):
        overrides.setdefault("database", {})["url"] = env["DATABASE_URL"]
    return overrides


def load_settings(
    config_path: Path | None = None, env: Mapping[str, str] | None = None, **sections: Mapping[str, Any]
) -> Settings:
    """Read config.toml (the given path, else ./config.toml, else the project's), apply the environment.

    Keyword ``sections`` override both, for tests and the command line.
    """
    env = os.environ if env is None else env
    if config_path is None:
        local = Path("config.toml")
        config_path = local if local.is_file() else PROJECT_ROOT / "config.toml"
    raw: dict[str, Any] = {}
    if config_path.is_file():
        with config_path.open("rb") as fh:
            raw = tomllib.load(fh)
    for source in (_environment_overrides(env), sections):
        for section, values in source.items():
            raw.setdefault(section, {}).update(values)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SettingsError(problems) from None
