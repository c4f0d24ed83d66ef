"""A decision the policy's memo has not seen: pycasbin over the asked workflow's rules only
(``engine.policy_enforcers``) next to pycasbin over every rule, in the same run.

    python bench/policy_walk.py            # 5 rounds
    python bench/policy_walk.py --rounds 9

Two figures per round, each the median of the round's timings:
- one question (role, workflow, facts) asked of the shipped rules without the memo, per question
  over every known role x workflow x a fixed sample of fact sets;
- the shipped test tables run against a freshly built policy (what ``caremsg policy test``, the
  reload gate, a proposal's check and the console's what-if pay for each set of files they check).
The baseline is the same enforcers told not to split (``split = False``): pycasbin asked of every
rule, as before the split.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.decisions import Fact
from engine.policy import KNOWN_ROLES, Policy
from engine.policy_tables import run_cases
from integrations.policy_files import check_sources, read_policy_sources, read_policy_tables

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"


def questions(policy: Policy, fact_sets: int = 6) -> list[tuple[str, str, frozenset[str]]]:
    facts = [f.value for f in Fact]
    rng = random.Random(7)
    samples = [frozenset(rng.sample(facts, rng.randint(0, 4))) for _ in range(fact_sets)]
    return [(r, w, f) for r in sorted(KNOWN_ROLES) for w in sorted(policy.workflows) for f in samples]


def per_question_us(policy: Policy, asked: list[tuple[str, str, frozenset[str]]], *, split: bool) -> float:
    enforcers = policy._enforcers
    enforcers.split = split
    try:
        started = time.perf_counter()
        for role, workflow, facts in asked:
            enforcers.enforce(role, workflow, facts)
        return (time.perf_counter() - started) / len(asked) * 1e6
    finally:
        enforcers.split = True


def tables_ms(*, split: bool) -> float:
    sources, tables = read_policy_sources(POLICY_DIR), read_policy_tables(POLICY_DIR)
    started = time.perf_counter()
    policy, cases, problems = check_sources(sources, tables)
    assert policy is not None, problems
    policy._enforcers.split = split
    results = run_cases(policy, cases)
    elapsed = (time.perf_counter() - started) * 1e3
    assert all(r.passed for r in results)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    policy = Policy.from_sources(read_policy_sources(POLICY_DIR))
    asked = questions(policy)
    print(
        f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
        f"{len(policy.rules)} rules, {len(policy.workflows)} workflows, {len(asked)} questions"
    )
    per_whole, per_split, tab_whole, tab_split = [], [], [], []
    for round_ in range(1, args.rounds + 1):
        # Alternate which goes first, so neither always runs on a warmer machine.
        order = (False, True) if round_ % 2 else (True, False)
        for split in order:
            (per_split if split else per_whole).append(per_question_us(policy, asked, split=split))
            (tab_split if split else tab_whole).append(
                statistics.median(tables_ms(split=split) for _ in range(5))
            )
        print(
            f"round {round_}: question {per_whole[-1]:7.1f} µs every rule, {per_split[-1]:6.1f} µs split "
            f"({per_whole[-1] / per_split[-1]:.1f}x); tables {tab_whole[-1]:6.1f} ms every rule, "
            f"{tab_split[-1]:5.1f} ms split ({tab_whole[-1] / tab_split[-1]:.1f}x)"
        )
    ratio_q = statistics.median(w / s for w, s in zip(per_whole, per_split, strict=True))
    ratio_t = statistics.median(w / s for w, s in zip(tab_whole, tab_split, strict=True))
    question = f"{statistics.median(per_whole):.1f} -> {statistics.median(per_split):.1f} µs ({ratio_q:.1f}x)"
    table = f"{statistics.median(tab_whole):.1f} -> {statistics.median(tab_split):.1f} ms ({ratio_t:.1f}x)"
    print(f"median: question {question}; tables {table}")


if __name__ == "__main__":
    main()
