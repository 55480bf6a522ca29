"""The README's spec reference is the one generated from the schema."""

from pathlib import Path

from plan.spec_reference import spec_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_carries_the_generated_spec_reference() -> None:
    table = spec_reference()
    assert "| `network.tunnelPort` | integer | `8473` |" in table
    assert "| `cluster.name` | string (pattern) | required |" in table
    assert table in README.read_text(), "regenerate: cilium-migrate schema --markdown"
