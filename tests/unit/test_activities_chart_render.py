"""What the render step keeps of helm's error output: the chart's own words."""

from __future__ import annotations

import pytest

from activities.chart_render import chart_message

VALIDATE = (
    "Error: execution error at (cilium/templates/validate.yaml:41:5): tunnel was deprecated in "
    "v1.14 and has been removed in v1.15. For details please refer to "
    "https://docs.cilium.io/en/v1.15/operations/upgrade/#helm-options\n\n"
    "Use --debug flag to render out invalid YAML\n")
SCHEMA = ("Error: values don't meet the specifications of the schema(s) in the following "
          "chart(s):\ncilium:\n- at '/tunnelPort': got string, want integer\n"
          "- at '/ipam/operator/clusterPoolIPv4PodCIDRList/0': got number, want string\n")


@pytest.mark.parametrize(("helm_error", "message"), [
    (VALIDATE, "tunnel was deprecated in v1.14 and has been removed in v1.15. For details "
               "please refer to https://docs.cilium.io/en/v1.15/operations/upgrade/"
               "#helm-options"),
    (SCHEMA, "tunnelPort: got string, want integer; "
             "ipam.operator.clusterPoolIPv4PodCIDRList[0]: got number, want string"),
    ("Error: chart requires kubeVersion: >= 1.21.0-0 which is incompatible with Kubernetes "
     "v1.20.0", "chart requires kubeVersion: >= 1.21.0-0 which is incompatible with "
                "Kubernetes v1.20.0"),
])
def test_helms_wrapping_is_dropped_and_the_charts_message_kept(helm_error: str,
                                                               message: str) -> None:
    assert chart_message(helm_error) == message
