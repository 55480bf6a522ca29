"""10,000 generated spec files through `load_spec`, counted: what was tried, what was accepted,
what was refused and why, and how long the slowest took.

    PYTHONPATH=. .venv/bin/python bench/spec_fuzz_bench.py [--examples 10000] [--seed N]

The inputs are tests/spec_inputs.py's (the test run takes a few hundred of them): the specs the
project ships with values, keys and types mutated, their text spliced with YAML punctuation,
hostile documents (alias bombs, deep nesting, huge numbers, tags, NULs) and random text and
bytes. Each answer must be a spec or a SpecError that keeps the loader's contract
(`check_answer`); any other outcome is listed and the script exits 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' helpers

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.spec_inputs import Labelled, check_answer, refusal_kind, spec_inputs  # noqa: E402


class Tally:
    def __init__(self) -> None:
        self.by_family: Counter[tuple[str, str]] = Counter()  # (input family, outcome)
        self.refused: Counter[str] = Counter()
        self.hostile: dict[str, tuple[str, float]] = {}
        self.slowest: list[tuple[float, str]] = []
        self.violations: list[tuple[str, str, str]] = []
        self.examples = 0

    def record(self, labelled: Labelled) -> None:
        kind, text = labelled
        family = kind.split(":")[0]
        self.examples += 1
        started = time.perf_counter()
        try:
            error = check_answer(text)
        except Exception as failure:  # noqa: BLE001 - a broken contract, counted and shown
            self.violations.append((kind, repr(text[:200]), f"{type(failure).__name__}: "
                                    f"{str(failure)[:300]}"))
            self.by_family[family, "VIOLATION"] += 1
            return
        took = time.perf_counter() - started
        outcome = "accepted" if error is None else "refused"
        self.by_family[family, outcome] += 1
        if error is not None:
            self.refused[refusal_kind(error)] += 1
        if family == "hostile":
            self.hostile[kind.split(": ", 1)[1]] = (
                "accepted" if error is None else refusal_kind(error), took)
        self.slowest = sorted([*self.slowest, (took, kind)], reverse=True)[:5]


def run(examples: int, seed_value: int | None) -> Tally:
    tally = Tally()

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(spec_inputs())
    def generate(labelled: Labelled) -> None:
        tally.record(labelled)

    if seed_value is not None:
        generate = seed(seed_value)(generate)
    generate()
    return tally


def report(tally: Tally, seconds: float) -> None:
    outcomes = Counter(outcome for (_, outcome), n in tally.by_family.items() for _ in range(n))
    print(f"examples {tally.examples}   accepted {outcomes['accepted']}   refused "
          f"{outcomes['refused']}   violations {len(tally.violations)}   "
          f"in {seconds:.1f}s")
    print("\nby input family            accepted   refused")
    for family in sorted({family for family, _ in tally.by_family}):
        print(f"  {family:<24} {tally.by_family[family, 'accepted']:>8} "
              f"{tally.by_family[family, 'refused']:>9}")
    print("\nrefused, by the first problem's kind")
    for kind, count in tally.refused.most_common():
        print(f"  {kind:<30} {count:>6}")
    print(f"\nhostile documents drawn ({len(tally.hostile)})" + " " * 19
          + "answer" + " " * 26 + "time")
    for name, (answer, took) in sorted(tally.hostile.items()):
        print(f"  {name:<46} {answer:<30} {took * 1000:6.0f} ms")
    print("\nslowest inputs")
    for took, kind in tally.slowest:
        print(f"  {took * 1000:7.0f} ms  {kind}")
    for kind, text, failure in tally.violations[:20]:
        print(f"\nVIOLATION ({kind}): {failure}\n  input: {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, help="for a run that repeats exactly")
    args = parser.parse_args()
    started = time.perf_counter()
    tally = run(args.examples, args.seed)
    report(tally, time.perf_counter() - started)
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
