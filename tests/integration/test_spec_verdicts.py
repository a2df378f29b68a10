"""Drill (a), bounded: 600 generated specs (a fixed seed), each judged by the API server
(server-side dry-run create with the CRD of crds/) and by pydantic: the same verdict every time,
and every refusal names a field the generator changed. The full form (10,000 specs) is
`python -m bench.reliability.specs`; its figures are in docs/reliability.md."""

from __future__ import annotations

import time

from bench.reliability import specs
from e2e.sandbox import SandboxState

COUNT = 600
SEED = specs.DEFAULT_SEED
BUDGET_SECONDS = 120


def test_the_api_server_and_pydantic_give_the_same_verdict_on_generated_specs(
    sandbox: SandboxState, namespace: str
) -> None:
    started = time.monotonic()
    specs.install_crd(sandbox.bin_dir["kubectl"], sandbox.kubeconfig)
    report = specs.run(sandbox.kubeconfig, namespace, COUNT, SEED, threads=4)
    elapsed = time.monotonic() - started
    assert len(report.outcomes) == COUNT
    assert not report.disagreements and not report.unnamed, report.problems()
    # the generator reaches both sides of the boundaries
    assert report.accepted >= COUNT // 10 and report.refused >= COUNT // 10, report.markdown()
    assert elapsed < BUDGET_SECONDS, f"{elapsed:.1f} s"


def test_the_same_seed_gives_the_same_specs() -> None:
    first = specs.generate(40, SEED)
    again = specs.generate(40, SEED)
    assert [c.spec for c in first] == [c.spec for c in again]
    assert [c.spec for c in specs.generate(40, SEED + 1)] != [c.spec for c in first]


def test_the_report_replaces_only_its_own_section() -> None:
    before = "# Reliability\n\n## Kills (drill b)\n\nkept\n\n## Spec verdicts (drill a)\n\nold\n"
    after = specs.replace_section(before, "## Spec verdicts (drill a)\n\nnew\n")
    assert "kept" in after and "new" in after and "old" not in after
    assert specs.replace_section("", "## Spec verdicts (drill a)\n\nx\n").startswith("# Reliab")
    added = specs.replace_section("# R\n\n## Other\n\ny\n", "## Spec verdicts (drill a)\n\nz\n")
    assert added.index("## Other") < added.index("## Spec verdicts")
