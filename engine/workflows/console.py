"""The web console's own workflows: entering it, and reading the policy in words.

The console is a second door to the same engine, not a second authorization path: signing in is the
login workflow (with its throttle), and then ``console.sign_in`` decides whether this account may use
the console at all; every page is a workflow of its own (or the API's, e.g. ``audit.read``), decided
by the policy and audited like any API call.
"""

from __future__ import annotations

from engine.decisions import Fact
from engine.model import Actor
from engine.policy import Policy
from engine.ports.units import Transaction
from engine.services import Guard, Services


def _unit_of_work(services: Services) -> Transaction:
    """This family's view of the unit of work: it records decisions only."""
    return services.uow()


async def enter_console(services: Services, actor: Actor) -> None:
    """Decide ``console.sign_in`` for a freshly logged-in account (the fact ``self``: one's own
    account); raise :class:`~engine.errors.Forbidden` for a role the policy keeps out of the console."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.sign_in", {Fact.SELF}, resource_type="user", resource_id=actor.user_id)
        await uow.commit()


async def read_policy_in_words(services: Services, actor: Actor) -> Policy:
    """The policy in force, for the console's "policy in words" page; decided as
    ``console.policy.read``."""
    async with _unit_of_work(services) as uow:
        guard = Guard(services, uow, actor)
        guard.require("console.policy.read", resource_type="policy")
        await uow.commit()
    return guard.policy
