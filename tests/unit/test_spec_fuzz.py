"""`load_spec` on generated input (tests/spec_inputs.py): the shipped specs mutated, broken YAML,
hostile documents and random text all give a spec or a SpecError with a located, human
message; never another exception, and an alias bomb is refused at once.

A few hundred examples per run; bench/spec_fuzz_bench.py runs 10,000 and prints the counts.
"""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from plan.spec_loader import SpecError, load_spec
from tests.spec_inputs import HOSTILE, SHIPPED, Labelled, check_answer, spec_inputs


@settings(derandomize=True, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec_inputs())
def test_generated_specs_load_or_are_refused_with_a_spec_error(labelled: Labelled) -> None:
    _, text = labelled
    check_answer(text)


def test_a_next_line_character_counts_as_a_line_break_in_the_reported_line() -> None:
    # Found by the fuzz test in CI: YAML ends a line at NEL (U+0085) as well as at a newline.
    text = ("\x85cluster:\n  name: prod\nreboot:\n  strategy: command\n  command:\n  - ssh\n"
            " \x85sudo\n  - reboot\n")
    error = check_answer(text)
    assert error is not None and error.problems[0].line is not None
    assert error.problems[0].line > text.count("\n")


def test_the_shipped_specs_the_mutations_start_from_load() -> None:
    for document in SHIPPED:
        load_spec(yaml.safe_dump(document))


@pytest.mark.parametrize("name", ["billion laughs (10^9)", "wide alias bomb", "merge-key bomb",
                                  "recursive alias"])
def test_alias_bombs_are_refused_before_they_expand(name: str) -> None:
    # Refused while composing (about 50 ms); a bomb that got as far as construction would not end.
    with pytest.raises(SpecError, match="expands too far"):
        load_spec(HOSTILE[name])


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_get_an_answer(name: str) -> None:
    check_answer(HOSTILE[name])
