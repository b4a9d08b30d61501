"""The nightly reindex when the regression gate refuses one space: the other space is still
brought up to date, gc is skipped (the refused version stays on storage whatever the
retention), the summary with both spaces' comparisons is published, and the run fails with
the gate's line — and `reindex --json` still prints that summary.

The stages are stand-ins (ingesting and encoding a catalog is tested in
``test_reindex_flow.py``, the gate's numbers in ``tests/core/index/test_gate.py``): this
checks what the flow does with a refusal."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import harness_api_url
from tiefvision_core.index.gate import GateComparison
from tiefvision_core.index.updates import IndexUpdate
from tiefvision_core.pipeline.reindex import ReindexPlan, ReindexRefused, reindex_markdown
from tiefvision_core.vector_index.pointer import RegressionRefused

pytestmark = pytest.mark.usefixtures("prefect_harness")


def comparison(space: str, decision: str, new_map: float) -> dict[str, object]:
    scores = {"queries": 12, "precision_at_1": 0.9, "precision_at_5": 0.5}
    return GateComparison(
        space=space,
        new=f"{space}-new",
        live=f"{space}-live",
        decision=decision,  # type: ignore[arg-type]
        reason=f"{space}: {decision}",
        tolerance=0.02,
        compared_on="12 photos (all products)",
        new_scores={**scores, "map_at_10": new_map},
        live_scores={**scores, "map_at_10": 0.7},
    ).as_dict()


@dataclass
class RefusingRun:
    """A reindex whose stages are stand-ins and whose unsupervised space the gate refuses
    (the supervised one passes): what the flow called and published."""

    calls: list[str] = field(default_factory=list)
    summaries: list[object] = field(default_factory=list)
    gates: list[object] = field(default_factory=list)
    refused: dict[str, object] = field(
        default_factory=lambda: comparison("unsupervised", "refused", 0.6)
    )
    passed: dict[str, object] = field(
        default_factory=lambda: comparison("supervised", "passed", 0.71)
    )


@pytest.fixture
def refusing_run(monkeypatch: pytest.MonkeyPatch) -> RefusingRun:
    import flows.reindex

    run = RefusingRun()

    def update(url, config, space, index_kind, policy, keep, gate):
        run.calls.append(f"index {space} (tolerance {gate.tolerance})")
        if space == "unsupervised":
            raise RegressionRefused(
                "index unsupervised unsupervised-new mAP@10 0.600 < …", run.refused
            )
        return IndexUpdate(space, "rebuild", "model changed", "supervised-live", "supervised-new",
                           "exact", 10, 0, 0, 0, 0, 10, 0.1, gate=run.passed)  # fmt: skip

    catalog = SimpleNamespace(version="m1", images=10, new=0, changed=0, removed=0, rejected=0)
    monkeypatch.setattr(flows.reindex, "ingest", lambda **_: catalog)
    monkeypatch.setattr(
        flows.reindex,
        "plan_reindex",
        lambda url: ReindexPlan(None, "m", ("unsupervised", "supervised")),
    )
    monkeypatch.setattr(flows.reindex, "encode", lambda **_: SimpleNamespace(encoded=0, rejected=0))
    monkeypatch.setattr(flows.reindex, "update_space_index", update)
    monkeypatch.setattr(flows.reindex, "collect_garbage_task", lambda *_: run.calls.append("gc"))
    monkeypatch.setattr(flows.reindex, "report_reindex", run.summaries.append)
    monkeypatch.setattr(flows.reindex, "report_gate", run.gates.append)
    return run


def test_a_refused_space_fails_the_run_after_the_other_space_and_the_summary(
    refusing_run: RefusingRun, tmp_path: Path
) -> None:
    import flows.reindex

    run = refusing_run
    store = (tmp_path / "store").as_uri()
    with pytest.raises(RegressionRefused, match=r"mAP@10 0\.600 <") as raised:
        flows.reindex.reindex(images=str(tmp_path), store=store, tolerance=0.05)

    assert run.calls == [
        "index unsupervised (tolerance 0.05)",
        "index supervised (tolerance 0.05)",
    ]
    [summary] = run.summaries
    assert isinstance(raised.value, ReindexRefused) and raised.value.summary == summary
    assert [u.space for u in summary.indexes] == ["supervised"]  # type: ignore[attr-defined]
    assert summary.gates == (run.refused, run.passed)  # type: ignore[attr-defined]
    assert summary.gc_skipped and "refused" in summary.gc_skipped  # type: ignore[attr-defined]
    assert run.gates == [run.refused, run.passed]  # each published as its own artifact
    text = reindex_markdown(summary)  # type: ignore[arg-type]
    assert (
        "| unsupervised | unsupervised-live | unsupervised-new | 0.700 | 0.600 | -0.100 |" in text
    )
    assert "gc skipped" in text


def test_reindex_json_prints_the_summary_of_a_refused_run(
    refusing_run: RefusingRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`reindex --json` prints the run's summary, refusal included, then fails with the
    gate's line (exit 2) as before: a script reads what the run did from stdout."""
    from tiefvision_cli.main import main

    monkeypatch.setenv("PREFECT_API_URL", harness_api_url())  # no server of its own
    store = (tmp_path / "store").as_uri()
    args = ["reindex", "--images", str(tmp_path), "--store", store, "--json"]
    monkeypatch.setattr(sys, "argv", ["tiefvision", *args])
    with pytest.raises(SystemExit) as done:
        main()

    assert done.value.code == 2
    out, err = capsys.readouterr()
    [document] = out.strip().splitlines()
    printed = json.loads(document)
    [summary] = refusing_run.summaries
    assert printed == json.loads(json.dumps(summary.as_dict()))  # type: ignore[attr-defined]
    assert [gate["decision"] for gate in printed["gates"]] == ["refused", "passed"]
    assert "refused" in printed["gc_skipped"]
    assert err.strip().splitlines()[-1].startswith("error: ") and "mAP@10 0.600 <" in err
