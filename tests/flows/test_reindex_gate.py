"""The nightly reindex when the regression gate refuses one space: the other space is still
brought up to date, gc is skipped (the refused version stays on storage whatever the
retention), the summary with both spaces' comparisons is published, and the run fails with
the gate's line.

The stages are stand-ins (ingesting and encoding a catalog is tested in
``test_reindex_flow.py``, the gate's numbers in ``tests/core/index/test_gate.py``): this
checks what the flow does with a refusal."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tiefvision_core.index.gate import GateComparison
from tiefvision_core.index.pointer import RegressionRefused
from tiefvision_core.index.updates import IndexUpdate
from tiefvision_core.reindex import ReindexPlan, reindex_markdown

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


def test_a_refused_space_fails_the_run_after_the_other_space_and_the_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import flows.reindex as module

    calls: list[str] = []
    summaries: list[object] = []
    gates: list[object] = []
    refused = comparison("unsupervised", "refused", 0.6)
    passed = comparison("supervised", "passed", 0.71)

    def update(url, config, space, index_kind, policy, keep, gate):
        calls.append(f"index {space} (tolerance {gate.tolerance})")
        if space == "unsupervised":
            raise RegressionRefused("index unsupervised unsupervised-new mAP@10 0.600 < …", refused)
        return IndexUpdate(space, "rebuild", "model changed", "supervised-live", "supervised-new",
                           "exact", 10, 0, 0, 0, 0, 10, 0.1, gate=passed)  # fmt: skip

    catalog = SimpleNamespace(version="m1", images=10, new=0, changed=0, removed=0, rejected=0)
    monkeypatch.setattr(module, "ingest", lambda **_: catalog)
    monkeypatch.setattr(
        module, "plan_reindex", lambda url: ReindexPlan(None, "m", ("unsupervised", "supervised"))
    )
    monkeypatch.setattr(module, "encode", lambda **_: SimpleNamespace(encoded=0, rejected=0))
    monkeypatch.setattr(module, "update_space_index", update)
    monkeypatch.setattr(module, "collect_garbage_task", lambda *_: calls.append("gc"))
    monkeypatch.setattr(module, "report_reindex", summaries.append)
    monkeypatch.setattr(module, "report_gate", gates.append)

    store = (tmp_path / "store").as_uri()
    with pytest.raises(RegressionRefused, match=r"mAP@10 0\.600 <"):
        module.reindex(images=str(tmp_path), store=store, tolerance=0.05)

    assert calls == ["index unsupervised (tolerance 0.05)", "index supervised (tolerance 0.05)"]
    [summary] = summaries
    assert [u.space for u in summary.indexes] == ["supervised"]  # type: ignore[attr-defined]
    assert summary.gates == (refused, passed)  # type: ignore[attr-defined]
    assert summary.gc_skipped and "refused" in summary.gc_skipped  # type: ignore[attr-defined]
    assert gates == [refused, passed]  # each published as its own artifact
    text = reindex_markdown(summary)  # type: ignore[arg-type]
    assert (
        "| unsupervised | unsupervised-live | unsupervised-new | 0.700 | 0.600 | -0.100 |" in text
    )
    assert "gc skipped" in text
