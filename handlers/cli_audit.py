"""``caremsg audit ...``: tools for auditors.

caremsg audit verify                      walk the hash chain; exit 1 naming the first bad record
caremsg audit seal                        chain every committed event now (the service does it too)
caremsg audit anchor [--store]            print a signed checkpoint of the chain head
caremsg audit verify-anchor FILE [--public-key KEY] [--against-database]
caremsg audit public-key                  the key that verifies anchors, to keep with them (key id: stderr)
caremsg audit export [--since] [--until] [--format jsonl|fhir] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from handlers.settings import Settings

if TYPE_CHECKING:
    from integrations.audit_archive import AuditArchive

T = TypeVar("T")


def _run(args: argparse.Namespace, work: Callable[[Settings, AuditArchive], Awaitable[T]]) -> T:
    """Run ``work`` on the audit trail of the configured database (or the embedded one)."""
    from handlers.cli_setup import database, settings_for
    from integrations.audit_archive import open_archive

    settings = settings_for(args)

    async def main(resolved: Settings) -> T:
        async with open_archive(
            resolved.database.url,
            statement_timeout_ms=resolved.database.statement_timeout_ms,
            seal_batch_size=resolved.audit.seal_batch_size,
        ) as archive:
            return await work(resolved, archive)

    with database(settings, getattr(args, "data_dir", None)) as resolved:
        return asyncio.run(main(resolved))


# --- verify and seal -------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    async def work(_: Settings, archive: AuditArchive) -> int:
        report = await archive.verify()
        head = report.head
        tail = f"; {report.unsealed} record(s) not yet sealed" if report.unsealed else ""
        if report.problem is not None:
            print(f"audit chain BROKEN after checking {report.checked} entries", file=sys.stderr)
            print(report.problem.describe())
            return 1
        print(
            f"audit chain OK: {report.checked} sealed record(s), head seq {head.seq} "
            f"(record id {head.event_id}, hash {head.hash}){tail}"
        )
        return 0

    return _run(args, work)


def cmd_seal(args: argparse.Namespace) -> int:
    async def work(_: Settings, archive: AuditArchive) -> int:
        sealed = await archive.seal_pending()
        print(f"sealed {sealed} record(s)")
        return 0

    return _run(args, work)


# --- anchors ---------------------------------------------------------------------------------------


def cmd_anchor(args: argparse.Namespace) -> int:
    from integrations.audit_anchor import AnchorError, private_key, sign_anchor

    async def work(settings: Settings, archive: AuditArchive) -> int:
        try:
            key = private_key(settings.audit.signing_key)
        except AnchorError as exc:
            print(f"caremsg: {exc}", file=sys.stderr)
            return 2
        # Seal first, so the checkpoint covers every event committed before it was asked for.
        await archive.seal_pending()
        head = await archive.head()
        document = sign_anchor(head, key, datetime.now(UTC))
        if args.store:
            await archive.store_anchor(head, document)
        print(json.dumps(document, indent=2))
        return 0

    return _run(args, work)


def cmd_public_key(args: argparse.Namespace) -> int:
    from handlers.cli_setup import settings_for
    from integrations.audit_anchor import AnchorError, key_id, private_key, public_key_text

    settings = settings_for(args)
    try:
        pub = private_key(settings.audit.signing_key).public_key()
    except AnchorError as exc:
        print(f"caremsg: {exc}", file=sys.stderr)
        return 2
    # Standard output is the key alone, as `verify-anchor --public-key` takes it; the id is a note.
    print(public_key_text(pub))
    print(f"key id {key_id(pub)}", file=sys.stderr)
    return 0


#: The note when an anchor is checked with a key that is not one kept apart from the service.
_UNPINNED_KEY = (
    "note: checked with this service's own signing key, which whoever runs the service can sign with;"
    " check it with the public key kept when the anchor was published (`caremsg audit public-key`"
    " then): --public-key KEY"
)


def cmd_verify_anchor(args: argparse.Namespace) -> int:
    """Check an anchor's signature offline; with --against-database, also that the chain still has
    that hash at that seq (a rewritten or truncated trail does not)."""
    from handlers.cli_setup import settings_for
    from integrations.audit_anchor import AnchorError, private_key, public_key, verify_anchor

    settings = settings_for(args)
    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        key = (
            public_key(args.public_key)
            if args.public_key
            else private_key(settings.audit.signing_key).public_key()
        )
        checkpoint = verify_anchor(document, key)
    except (OSError, ValueError, AnchorError) as exc:
        print(f"anchor INVALID: {exc}")
        return 1
    print(
        f"anchor OK: seq {checkpoint.seq}, record id {checkpoint.event_id}, hash {checkpoint.hash}, "
        f"signed {checkpoint.signed_at.isoformat()} by key {checkpoint.key_id}"
    )
    # What the signature proves depends on the key: an auditor is told when it proves little.
    if not args.public_key:
        print(_UNPINNED_KEY, file=sys.stderr)
    if not args.against_database:
        return 0

    async def work(_: Settings, archive: AuditArchive) -> int:
        sealed = await archive.sealed_at(checkpoint.seq)
        if sealed is None:
            print(f"chain DIFFERS: seq {checkpoint.seq} is no longer in the chain (the trail was truncated)")
            return 1
        if sealed != (checkpoint.hash, checkpoint.event_id):
            print(f"chain DIFFERS: seq {checkpoint.seq} now has another hash (the trail was rewritten)")
            return 1
        print(f"chain matches the anchor at seq {checkpoint.seq}")
        return 0

    return _run(args, work)


# --- export ----------------------------------------------------------------------------------------


def _moment(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC if it names no offset)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@asynccontextmanager
async def _output(path: str | None) -> AsyncIterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as out:  # noqa: ASYNC230 - a local file, written as rows stream
        yield out


def cmd_export(args: argparse.Namespace) -> int:
    from integrations.audit_export import Progress, write_export

    if args.since and args.until and args.since >= args.until:
        print("caremsg: --since must be earlier than --until", file=sys.stderr)
        return 2

    async def work(_: Settings, archive: AuditArchive) -> int:
        async with archive.records(args.since, args.until) as (total, records), _output(args.output) as out:
            count = await write_export(records, out, args.format, Progress(total))
        print(f"exported {count} record(s) as {args.format}", file=sys.stderr)
        return 0

    return _run(args, work)


def register(sub: Any) -> None:
    """Add the ``audit`` subcommands."""
    audit = sub.add_parser("audit", help="audit trail tools: verify, anchor, export")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)

    verify = audit_sub.add_parser(
        "verify", help="walk the hash chain; exit 1 naming the first tampered record"
    )
    verify.set_defaults(func=cmd_verify)

    seal = audit_sub.add_parser("seal", help="hash-chain every committed audit event now")
    seal.set_defaults(func=cmd_seal)

    anchor = audit_sub.add_parser("anchor", help="print a signed checkpoint of the chain head (Ed25519)")
    anchor.add_argument("--store", action="store_true", help="also keep it in the audit_anchors table")
    anchor.set_defaults(func=cmd_anchor)

    check = audit_sub.add_parser("verify-anchor", help="check an anchor's signature (offline)")
    check.add_argument("file", help="the anchor JSON, as printed by 'caremsg audit anchor'")
    check.add_argument("--public-key", help="base64 Ed25519 public key (default: the configured key's)")
    check.add_argument(
        "--against-database", action="store_true", help="also check the chain still has that hash at that seq"
    )
    check.set_defaults(func=cmd_verify_anchor)

    pub = audit_sub.add_parser("public-key", help="print the public key that verifies anchors")
    pub.set_defaults(func=cmd_public_key)

    export = audit_sub.add_parser("export", help="write audit records as JSON Lines or a FHIR R4 Bundle")
    export.add_argument(
        "--since", type=_moment, help="from (inclusive): ISO date or date-time, UTC by default"
    )
    export.add_argument("--until", type=_moment, help="to (exclusive)")
    export.add_argument("--format", choices=["jsonl", "fhir"], default="jsonl")
    export.add_argument("--output", help="file to write (default: standard output)")
    export.set_defaults(func=cmd_export)

    for command in (verify, seal, anchor, check, export):
        command.add_argument(
            "--data-dir", help="embedded PostgreSQL data directory (default from config.toml)"
        )
