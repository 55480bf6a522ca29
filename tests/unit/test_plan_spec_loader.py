"""load_spec: exact messages for common mistakes, and fuzzing for the "only SpecError" contract."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from plan.spec import MigrationSpec
from plan.spec_loader import SpecError, SpecProblem, load_spec

# No deadline: the first example pays for importing jsonschema and pydantic schema building.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def problems_of(text: str) -> list[SpecProblem]:
    with pytest.raises(SpecError) as caught:
        load_spec(textwrap.dedent(text), source="spec.yaml")
    return caught.value.problems


def test_minimal_spec_loads_with_defaults() -> None:
    spec = load_spec("cluster:\n  name: prod\n")
    assert spec == MigrationSpec.model_validate({"cluster": {"name": "prod"}})


def test_a_full_spec_loads() -> None:
    spec = load_spec(
        textwrap.dedent(
            """\
            cluster: {name: prod, kubeconfigContext: prod-admin}
            cilium:
              version: 1.18.4
              chart: {repo: "https://helm.cilium.io", name: cilium}
              extraValues: {hubble: {enabled: false}}
            network: {podCIDRs: [10.245.0.0/16], tunnelProtocol: vxlan, tunnelPort: 8473}
            rollout:
              canarySize: 2
              maxUnavailable: 25%
              oneZoneAtATime: true
              firstNodes: [w1]
              lastNodes: [w9]
              excludeNodes: [gpu-1]
            approvals: {policy: per-wave, approvers: [alice], allowPreApproval: true}
            drain: {timeout: 20m, gracePeriodSeconds: 30, deleteEmptyDirData: false}
            reboot: {strategy: docker, timeout: 5m}
            verify: {checks: [pod-ip-in-pool, api-server], timeout: 90s}
            finalize: {hostLegacyRouting: true, removeFlannel: false}
            acknowledge: [network-policies-present]
            """
        )
    )
    assert spec.rollout.max_unavailable == "25%"
    assert spec.verify.timeout.total_seconds() == 90
    assert spec.cilium.extra_values == {"hubble": {"enabled": False}}


def test_wrong_type_names_path_line_and_input() -> None:
    [problem] = problems_of(
        """\
        cluster:
          name: prod
        network:
          tunnelPort: abc
        """
    )
    assert (problem.path, problem.line) == ("network.tunnelPort", 4)
    assert "valid integer" in problem.message and "'abc'" in problem.message


def test_error_text_lists_every_problem_with_file_and_line() -> None:
    text = "cluster:\n  name: prod\nnetwork:\n  podCIDRs: [10.245.0.1/16]\n  tunnelPort: 0\n"
    with pytest.raises(SpecError) as caught:
        load_spec(text, source="spec.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "spec.yaml: invalid migration spec (2 problems)"
    assert lines[1].startswith("  spec.yaml:4: network.podCIDRs[0]: expected an IPv4 CIDR")
    assert "host bits set" in lines[1]
    assert lines[2].startswith("  spec.yaml:5: network.tunnelPort: Input should be greater than")


def test_unknown_key_suggests_the_closest_one() -> None:
    [problem] = problems_of("cluster: {name: a}\nrollout:\n  maxUnavailabel: 2\n")
    assert (problem.path, problem.line) == ("rollout.maxUnavailabel", 3)
    assert problem.message == "unknown key; did you mean 'maxUnavailable'?"


def test_snake_case_keys_are_unknown_in_files() -> None:
    [problem] = problems_of("cluster: {name: a}\nnetwork:\n  tunnel_port: 8473\n")
    assert problem.path == "network.tunnel_port"
    assert "tunnelPort" in problem.message


def test_unknown_section_lists_the_known_ones() -> None:
    [problem] = problems_of("cluster: {name: a}\nxyzzy: {}\n")
    assert (problem.path, problem.line) == ("xyzzy", 2)
    assert "cluster, cilium, network, rollout" in problem.message


def test_missing_required_key_points_at_its_section() -> None:
    [problem] = problems_of("network: {}\ncluster:\n  inCluster: true\n")
    assert (problem.path, problem.line, problem.message) == (
        "cluster.name",
        2,
        "required, but missing",
    )


def test_conditional_requirement_names_the_absent_field() -> None:
    [problem] = problems_of("cluster: {name: a}\nreboot:\n  strategy: command\n")
    assert (problem.path, problem.line) == ("reboot.command", 2)
    assert "required when strategy is" in problem.message


def test_list_items_have_their_own_lines() -> None:
    [problem] = problems_of(
        """\
        cluster: {name: a}
        verify:
          checks:
            - api-server
            - ping
        """
    )
    assert (problem.path, problem.line) == ("verify.checks[1]", 5)


def test_repeated_keys_are_errors_not_silent_overrides() -> None:
    [problem] = problems_of("cluster:\n  name: a\n  name: b\n")
    assert problem.line == 3 and "repeats line 2" in problem.message


def test_unquoted_yes_gets_a_yaml_hint() -> None:
    [problem] = problems_of("cluster: {name: a, kubeconfigContext: yes}\n")
    assert problem.path == "cluster.kubeconfigContext" and "quote it" in problem.message


def test_dates_stay_strings() -> None:
    spec = load_spec("cluster: {name: a}\ncilium: {extraValues: {release: 2024-01-01}}\n")
    assert spec.cilium.extra_values == {"release": "2024-01-01"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the spec is empty"),
        ("# only a comment\n", "the spec is empty"),
        ("- cluster\n", "top level must be a mapping"),
        ("just words\n", "top level must be a mapping"),
        ("cluster: [\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
        ("a: !!int nope\n", "not valid YAML"),
        ("a: !!python/object:os.system x\n", "not valid YAML"),
        ("\x00\x01\x02", "not valid YAML"),
        ("[" * 3000, "not valid YAML: nested far deeper than a spec"),
        ("a: &a [*a]\n", "nested too deeply"),
        ("cluster:\n\tname: a\n", "not valid YAML"),
        ("cluster: {name: a}\nrollout: {firstNodes: !!set {b, a}}\n", "write a list"),
    ],
)
def test_broken_documents(text: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        load_spec(text)


def test_alias_bomb_is_rejected_quickly() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    with pytest.raises(SpecError, match="expands too far"):
        load_spec("\n".join(lines) + "\ncluster: {name: a}\n")


def test_huge_document_is_rejected_before_parsing() -> None:
    with pytest.raises(SpecError, match="larger than"):
        load_spec("#" * 2_000_001)


def test_non_text_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        load_spec(b"cluster: {name: a}")  # type: ignore[arg-type]


# --- fuzzing: any input gives a spec or a SpecError whose problems say where and why ---------


def assert_only_spec_errors(text: str) -> None:
    try:
        spec = load_spec(text, source="fuzz.yaml")
    except SpecError as error:
        assert error.problems, "a SpecError must carry at least one problem"
        for problem in error.problems:
            assert problem.message
            assert problem.line is None or 1 <= problem.line <= text.count("\n") + 2
        assert str(error).startswith("fuzz.yaml: invalid migration spec")
    else:
        assert isinstance(spec, MigrationSpec)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_random_text(text: str) -> None:
    assert_only_spec_errors(text)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_binary_junk(data: bytes) -> None:
    assert_only_spec_errors(data.decode("latin-1"))


yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["10.245.0.0/16", "10.245.0.1/16", "300.1.1.1/8", "15m", "-1s", "25%"])
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(yaml_values)
def test_fuzz_random_structures(document: Any) -> None:
    assert_only_spec_errors(yaml.safe_dump(document))


def section_keys() -> dict[str, list[str]]:
    """Each spec section's YAML keys, read from the model so new fields get fuzzed too."""
    keys = {}
    for name, field in MigrationSpec.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys[name] = [child.alias or key for key, child in model.model_fields.items()]
    return keys


SECTION_KEYS = section_keys()


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking spec with a few fields replaced by junk or by unknown keys."""
    document: dict[str, Any] = {"cluster": {"name": "prod"}}
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        section = draw(st.sampled_from(sorted(SECTION_KEYS)))
        key = draw(st.sampled_from(SECTION_KEYS[section]) | st.text(min_size=1, max_size=12))
        document.setdefault(section, {})[key] = draw(yaml_values)
    return document


@FUZZ
@given(mutated_specs())
def test_fuzz_wrong_fields(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    assert_only_spec_errors(text)


@FUZZ
@given(st.integers(min_value=-(10**60), max_value=10**60), st.sampled_from(["tunnelPort", "x"]))
def test_fuzz_huge_numbers_give_a_located_problem(number: int, key: str) -> None:
    text = f"cluster: {{name: a}}\nnetwork:\n  {key}: {number}\n"
    try:
        load_spec(text)
    except SpecError as error:
        assert [problem.line for problem in error.problems] == [3]
        assert error.problems[0].path == f"network.{key}"
    else:
        assert key == "tunnelPort" and 1 <= number <= 65535
