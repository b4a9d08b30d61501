"""The nightly reindex's plan and summary; the stages themselves are the pipeline's own
flows, composed by ``flows/reindex.py``.

Why a plan read from storage: which stages run depends on what the store holds, not on
flags a scheduler would have to keep in sync — locate only when a locator is live, the
supervised space only when a similarity model or a supervised index exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from tiefvision_core.index.gate import GateComparison
from tiefvision_core.index.updates import IndexUpdate
from tiefvision_core.storage.layout import LOCATOR_CURRENT, SIMILARITY_CURRENT, current_key
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.versions import SPACES, space_prefix

__all__ = [
    "ReindexPlan",
    "ReindexRefused",
    "ReindexSummary",
    "StageClock",
    "plan_reindex",
    "reindex_markdown",
]

#: The lock every reindex of one store takes (``locks/reindex.json``).
LOCK_NAME = "reindex"


@dataclass(frozen=True)
class ReindexPlan:
    locator: str | None  # the live locator; None: no locate stage, whole photos are encoded
    similarity_model: str | None
    spaces: tuple[str, ...]  # the spaces to bring up to date, in order


def plan_reindex(store: Store) -> ReindexPlan:
    """What this store needs: the unsupervised space always (a first run builds it), the
    supervised one when it is live or a similarity model exists to build it."""
    model = store.read_pointer(SIMILARITY_CURRENT)
    live = {s for s in SPACES if store.read_pointer(current_key(space_prefix(s)))}
    spaces = ("unsupervised",) + (("supervised",) if model or "supervised" in live else ())
    return ReindexPlan(store.read_pointer(LOCATOR_CURRENT), model, spaces)


class StageClock:
    """Wall seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - started, 3)


@dataclass(frozen=True)
class ReindexSummary:
    """One reindex run: catalog changes, work done per stage, index versions per space."""

    store_url: str
    manifest_version: str
    images: int  # usable photos after the run
    new: int  # catalog changes found by this run's ingest
    changed: int
    removed: int
    rejected: int  # new or changed bytes that could not be used
    locator_version: str | None  # None: no locator, whole photos were encoded
    located: int
    encoded: int  # photos encoded in this run (each with its mirror)
    encode_rejected: int
    indexes: tuple[IndexUpdate, ...]
    stages: dict[str, float] = field(default_factory=dict)
    lock_waited_s: float = 0.0
    seconds: float = 0.0
    garbage_bytes: int = 0  # freed by the closing gc step (what nothing live refers to)
    #: The regression gate's comparison of each new version (GateComparison dicts), the
    #: refused ones included (those have no row in ``indexes``).
    gates: tuple[dict[str, object], ...] = ()
    gc_skipped: str | None = None  # why the gc step did not run

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class ReindexRefused(RegressionRefused):
    """A reindex whose new index version the gate refused in at least one space, after the
    run brought the other spaces up to date. Why it carries ``summary``: the run still did
    its work (ingest, encodings, the other spaces), and ``reindex --json`` must print that
    summary, refusal included, for a script to read, not only the gate's line."""

    def __init__(
        self,
        message: str,
        comparison: Mapping[str, object],
        summary: ReindexSummary | None = None,
    ) -> None:
        super().__init__(message, comparison)
        self.summary = summary

    def __reduce__(  # type: ignore[override]
        self,
    ) -> tuple[type[ReindexRefused], tuple[str, dict[str, object], ReindexSummary | None]]:
        return type(self), (str(self), self.comparison, self.summary)


def _cell(value: object) -> str:
    return "—" if value is None else str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def reindex_markdown(summary: ReindexSummary) -> str:
    """The run summary as Markdown (the Prefect artifact)."""
    located = (
        f"{summary.located} photos with locator {summary.locator_version}"
        if summary.locator_version
        else "skipped: no locator, whole photos are encoded"
    )
    freed = (
        f"{summary.garbage_bytes:,} bytes"
        if summary.gc_skipped is None
        else f"gc skipped: {summary.gc_skipped}"
    )
    lines = [
        f"# Reindex — manifest {summary.manifest_version}",
        "",
        *_table(
            ["measure", "value"],
            [
                ["photos (usable)", summary.images],
                ["new", summary.new],
                ["changed", summary.changed],
                ["removed", summary.removed],
                ["rejected", summary.rejected + summary.encode_rejected],
                ["located", located],
                ["encoded (with mirrors)", summary.encoded],
                ["waited for the lock", f"{summary.lock_waited_s:.1f} s"],
                ["garbage freed", freed],
                ["total", f"{summary.seconds:.1f} s"],
            ],
        ),
        "## Stages",
        "",
        *_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in summary.stages.items()]),
        "## Indexes",
        "",
        *_table(
            ["space", "before", "after", "action", "reason", "rows", "new", "changed",
             "removed", "vectors computed"],
            [
                [u.space, u.before, u.after, u.action, u.reason, u.size, u.new, u.changed,
                 u.removed, u.vectors_computed]
                for u in summary.indexes
            ],
        ),
        "## Regression gate",
        "",
        *_table(
            ["space", "live", "new", "live mAP@10", "new mAP@10", "delta", "decision",
             "reason"],
            [_gate_row(GateComparison.from_dict(dict(g))) for g in summary.gates],
        ),
    ]  # fmt: skip
    return "\n".join(lines)


def _gate_row(gate: GateComparison) -> list[object]:
    """One space's gate verdict: both mAP@10s on the photos compared, the delta, why."""

    def score(scores: dict[str, object] | None) -> str | None:
        return None if scores is None else f"{float(str(scores['map_at_10'])):.3f}"

    delta = None if gate.delta is None else f"{gate.delta:+.3f}"
    return [gate.space, gate.baseline, gate.new, score(gate.live_scores), score(gate.new_scores),
            delta, gate.decision, gate.reason]  # fmt: skip
