"""The fleet file: defaults and overrides make each cluster's spec, stages resolve to clusters,
and every mistake is reported at its line with what to do about it."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from plan.fleet import load_fleet
from plan.spec_loader import SpecError

FLEET = """\
name: rollout
approvals: {approvers: [alice]}
defaults:
  approvals: {policy: per-wave}
  rollout: {maxUnavailable: 2}
clusters:
  - {name: dev, context: dev-ctx, labels: {env: dev}}
  - name: staging
    labels: {env: staging}
    overrides: {rollout: {maxUnavailable: 3}, cluster: {inCluster: true}}
  - {name: prod-eu, labels: {env: prod}, taskQueue: cilium-migrate.prod-eu}
  - {name: prod-us, labels: {env: prod}}
stages:
  - {name: dev, clusters: [dev], soak: 1h}
  - {clusters: [staging], soak: 30d, approval: true}
  - {name: prod, selector: {env: prod}, concurrency: 2, approval: true}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as error:
        load_fleet(textwrap.dedent(text), "fleet.yaml")
    assert str(error.value).startswith("fleet.yaml: invalid fleet file")
    return [f"{p.line}: {p.path}: {p.message}" for p in error.value.problems]


def test_defaults_overrides_and_stages_make_the_fleet() -> None:
    fleet = load_fleet(FLEET, "fleet.yaml")

    assert [s.cluster.name for s in fleet.clusters] == ["dev", "staging", "prod-eu", "prod-us"]
    dev, staging = fleet.spec_of("dev"), fleet.spec_of("staging")
    assert dev.cluster.kubeconfig_context == "dev-ctx"
    assert (dev.approvals.policy, dev.rollout.max_unavailable) == ("per-wave", 2)
    assert (staging.approvals.policy, staging.rollout.max_unavailable) == ("per-wave", 3)
    assert staging.cluster.in_cluster
    assert fleet.spec_of("prod-eu").cluster.task_queue == "cilium-migrate.prod-eu"
    assert dev.cluster.task_queue is None
    assert [(s.index, s.name, s.clusters, s.concurrency, s.soak_seconds, s.approval, s.gate)
            for s in fleet.stages] == [
        (1, "dev", ["dev"], 1, 3600.0, False, "stage-1"),
        (2, "stage-2", ["staging"], 1, timedelta(days=30).total_seconds(), True, "stage-2"),
        (3, "prod", ["prod-eu", "prod-us"], 2, 0.0, True, "stage-3")]
    assert fleet.stage_of("prod-us").index == 3
    assert fleet.approvals.approvers == ["alice"]
    # The fleet travels through Temporal as JSON and comes back the same.
    assert type(fleet).model_validate_json(fleet.model_dump_json()) == fleet


def test_stage_mistakes_name_the_line_and_the_fix() -> None:
    found = problems("""\
        name: rollout
        clusters:
          - {name: dev, labels: {env: dev}}
          - {name: staging}
          - {name: prod, labels: {env: prod}}
          - {name: lonely}
        stages:
          - {clusters: [dev]}
          - {clusters: [stagin, dev]}
          - {selector: {env: qa}}
          - {}
          - {clusters: [prod], selector: {env: prod}}
        """)
    assert found == [
        "4: clusters[1]: cluster staging is in no stage; name it in a stage's clusters, or "
        "give it labels a stage's selector matches",
        "5: clusters[2]: cluster prod is in no stage; name it in a stage's clusters, or give "
        "it labels a stage's selector matches",
        "6: clusters[3]: cluster lonely is in no stage; name it in a stage's clusters, or "
        "give it labels a stage's selector matches",
        "9: stages[1].clusters[0]: unknown cluster 'stagin'; did you mean staging?",
        "9: stages[1]: cluster dev is already in stage 1; a cluster belongs to one stage only",
        "10: stages[2].selector: selector env=qa matches no cluster; labels in this fleet: "
        "env=dev, env=prod",
        "11: stages[3]: empty stage: list its clusters (clusters: [NAME]) or select them by "
        "label (selector: {env: prod})",
        "12: stages[4]: a stage lists clusters or selects them by label, not both",
    ]


def test_a_bad_default_is_one_problem_and_an_override_points_at_itself() -> None:
    found = problems("""\
        name: rollout
        defaults:
          rollout: {maxUnavailable: 0}
        clusters:
          - {name: a}
          - name: b
            overrides: {rollout: {maxUnavailble: 2}}
        stages:
          - {clusters: [a, b]}
        """)
    assert found[0].startswith("3: defaults.rollout.maxUnavailable: clusters a, b: expected")
    assert found[1] == ("7: clusters[1].overrides.rollout.maxUnavailble: cluster b: unknown "
                        "key; did you mean 'maxUnavailable'?")
    assert len(found) == 2


@pytest.mark.parametrize(("soak", "message"), [
    ("40d", "expected at most 30d"),
    ("soon", "expected a positive duration"),
    ("0", "zero or negative durations make no sense here"),
])
def test_a_bad_soak_time_says_what_is_expected(soak: str, message: str) -> None:
    found = problems(f"""\
        name: rollout
        clusters: [{{name: a}}]
        stages:
          - {{clusters: [a], soak: "{soak}"}}
        """)
    assert len(found) == 1 and found[0].startswith("4: stages[0].soak: ")
    assert message in found[0]


def test_file_level_mistakes() -> None:
    assert problems("") == ["1: : the fleet file is empty"]
    assert problems("- a\n") == ["1: : the top level must be a mapping, not a list"]
    found = problems("""\
        name: Rollout
        defaults: {cluster: {name: x}}
        clusters: [{name: a, contxt: a}]
        stages: []
        """)
    assert found[0].startswith("1: name: expected a DNS label")
    assert found[1] == ("2: defaults: cluster.name cannot be a default: each cluster names "
                        "itself")
    assert found[2] == "3: clusters[0].contxt: unknown key; did you mean 'context'?"
    assert found[3].startswith("4: stages: List should have at least 1 item")
    assert problems("name: a\nname: b\nclusters: []\nstages: []\n")[0] == (
        "2: : key 'name' repeats line 1")
