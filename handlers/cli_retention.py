"""``caremsg retention ...``: what the retention sweep would delete, and running it now.

caremsg retention plan     per organization, how many messages' content the next sweep deletes
caremsg retention run      delete it now, batch after batch (the service also runs it on a schedule)

Both read the configured policy (policies/retention.toml). Neither prints content, names or ids:
counts per organization only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from engine.policy import Policy
from engine.services import Services
from handlers.settings import Settings


def _run(args: argparse.Namespace, work: Callable[[Settings, Services], Awaitable[int]]) -> int:
    from engine.policy import PolicyError
    from handlers.cli_setup import database, settings_for
    from integrations.policy_files import load_policy
    from integrations.retention_runner import retention_services

    settings = settings_for(args)
    try:
        policy: Policy = load_policy(settings.policy.path())
    except PolicyError as exc:
        print("caremsg: the policy does not load (caremsg policy check):", file=sys.stderr)
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2

    async def main(resolved: Settings) -> int:
        async with retention_services(resolved.database.url, policy) as services:
            return await work(resolved, services)

    with database(settings, getattr(args, "data_dir", None)) as resolved:
        return asyncio.run(main(resolved))


def _print_counts(counts: dict[int, int], verb: str) -> None:
    for organization_id in sorted(counts):
        print(f"organization {organization_id}: {counts[organization_id]} message(s) {verb}")
    print(f"total: {sum(counts.values())} message(s) {verb}")


def cmd_plan(args: argparse.Namespace) -> int:
    from engine.workflows.retention import retention_plan

    async def work(_: Settings, services: Services) -> int:
        counts = await retention_plan(services)
        if services.policy.current.retention.keeps_everything:
            print("retention.toml keeps every organization's content: nothing to delete")
        _print_counts(counts, "whose content the next sweep deletes")
        return 0

    return _run(args, work)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.workflows.retention import retention_plan, sweep_retention

    async def work(settings: Settings, services: Services) -> int:
        batch = settings.retention.sweep_batch_size
        before = await retention_plan(services)
        done = 0
        while (n := await sweep_retention(services, limit=batch)) == batch:
            done += n
        done += n
        after = await retention_plan(services)
        swept = {org: before[org] - after.get(org, 0) for org in before if before[org] > after.get(org, 0)}
        _print_counts(swept, "content deleted")
        if done != sum(swept.values()):  # another sweep (the service's) took some of the same batch
            print(f"({done} deleted by this run; the rest by a sweep running at the same time)")
        return 0

    return _run(args, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``retention plan|run`` to the top-level subcommands."""
    retention = sub.add_parser("retention", help="message content retention (policies/retention.toml)")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    plan = retention_sub.add_parser(
        "plan", help="per organization, what the next sweep would delete (counts)"
    )
    plan.add_argument("--data-dir")
    plan.set_defaults(func=cmd_plan)
    run = retention_sub.add_parser("run", help="run the sweep now, in batches, until nothing is due")
    run.add_argument("--data-dir")
    run.set_defaults(func=cmd_run)
