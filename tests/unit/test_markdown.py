"""Benchmarks write their section of docs/benchmarks.md in place."""

from __future__ import annotations

from e2e.markdown import replace_section

DOC = "# B\n\n## Planner\n\nplan\n\n## Operator\n\nold\nlines\n\n## Autoscaler\n\nscale\n"


def test_a_section_is_replaced_in_place_and_the_next_ones_kept() -> None:
    out = replace_section(DOC, "Operator", "## Operator\n\nnew\n")
    assert out == "# B\n\n## Planner\n\nplan\n\n## Operator\n\nnew\n\n## Autoscaler\n\nscale\n"


def test_the_last_section_is_replaced_and_a_missing_one_appended() -> None:
    out = replace_section(DOC, "Autoscaler", "\n## Autoscaler\n\nfresh\n")
    assert out.endswith("## Autoscaler\n\nfresh\n") and out.count("## Autoscaler") == 1
    assert "old\nlines" in out
    added = replace_section(DOC, "Estimator", "## Estimator\n\nx\n")
    assert added == DOC + "\n## Estimator\n\nx\n"
    # A heading that merely starts the same is another section.
    assert replace_section("## Operators\n\nz\n", "Operator", "## Operator\n")
    assert "## Operators" in replace_section("## Operators\n\nz\n", "Operator", "## Operator\n")
