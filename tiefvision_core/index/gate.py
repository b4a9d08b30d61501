"""No regression goes live: a new index version is scored before ``CURRENT`` moves to it.

Why a gate of its own: a rebuild or the nightly reindex switches ``CURRENT`` as soon as a
version passes its self-check, which only proves that the index finds its own photos. A
similarity model that learned its training products rather than a better similarity (or an
encoder, a locator, an index configuration that does worse) would go live unnoticed. So,
between the version's files being placed and the switch, :func:`regression_gate` scores the
new version as ``tiefvision evaluate`` does (:func:`tiefvision_core.evaluate.score_version`:
P@1, P@5, mAP@10, same ``product_id`` relevant, the supervised space on its model's
held-out products) and compares it with the live one.

What is compared: the photos that ask in *both* versions (same image id and bytes) — each
version answering them from its own gallery. A catalog that gained a hard product, or lost
an easy one, changes the numbers of a version without the search getting worse; comparing
on the photos both versions ask about keeps the gate from blocking every catalog update.
The live version's stored ``evaluation.json`` is reused when it covers the same photos; the
new version is searched once, and its full scores are written as its ``evaluation.json``
(the history ``tiefvision evaluate --history`` shows).

Decisions: **first** (no live version), **skipped** (no product ids, a supervised model that
does not say what it held out, no photo asked in both: said so, and the version goes live),
**passed**, **forced** (a drop beyond the tolerance, let through by ``allow_regression``),
**refused**: :class:`RegressionRefused`, the live version stays, the new one stays on
storage (``tiefvision index use`` makes it live by hand).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from tiefvision_core.errors import ConfigError, StorageNotFound, TiefVisionError
from tiefvision_core.evaluate import VersionScores, score_version, space_queries
from tiefvision_core.index.pointer import RegressionRefused
from tiefvision_core.index.versions import open_index, space_prefix
from tiefvision_core.storage.layout import current_key, index_evaluation_key
from tiefvision_core.storage.stores import Store

__all__ = [
    "DEFAULT_GATE",
    "DEFAULT_TOLERANCE",
    "GateComparison",
    "GateDecision",
    "GatePolicy",
    "RegressionRefused",
    "compare_with_live",
    "gate_markdown",
    "regression_gate",
]

GateDecision = Literal["first", "skipped", "passed", "forced", "refused"]

#: How much mAP@10 a new version may lose against the live one and still go live: below
#: the noise of a few dozen held-out queries, above a real regression.
DEFAULT_TOLERANCE = 0.02
_SCORES = ("queries", "precision_at_1", "precision_at_5", "map_at_10")
_EPSILON = 1e-9  # the scores are rounded to 4 decimals: a drop equal to the tolerance passes


@dataclass(frozen=True)
class GatePolicy:
    """How far a new version's mAP@10 may fall below the live one's, and whether a larger
    drop is let through anyway (``--allow-regression``)."""

    tolerance: float = DEFAULT_TOLERANCE
    allow_regression: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1:
            raise ConfigError(
                f"regression tolerance {self.tolerance!r} must be between 0 and 1 (mAP@10 "
                f"points; default {DEFAULT_TOLERANCE})"
            )


#: The policy a rebuild or reindex gates with when given none.
DEFAULT_GATE = GatePolicy()


@dataclass(frozen=True)
class GateComparison:
    """The gate's verdict on one new version (plain values: a flow result, an artifact)."""

    space: str
    new: str
    live: str | None
    decision: GateDecision
    reason: str
    tolerance: float
    compared_on: str = ""
    new_scores: dict[str, Any] | None = None  # on the compared photos (JSON numbers)
    live_scores: dict[str, Any] | None = None

    @property
    def went_live(self) -> bool:
        return self.decision != "refused"

    @property
    def delta(self) -> float | None:
        """New mAP@10 − live mAP@10 on the compared photos; None without both."""
        if self.new_scores is None or self.live_scores is None:
            return None
        return round(float(self.new_scores["map_at_10"]) - float(self.live_scores["map_at_10"]), 4)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateComparison:  # JSON of as_dict()
        return cls(**data)


def _refusal(space: str, new: str, live: str, new_map: float, live_map: float, tol: float) -> str:
    return (
        f"index {space} {new} mAP@10 {new_map:.3f} < live {live} {live_map:.3f} − tolerance "
        f"{tol:.3f}: kept {live} live; the new version stays on storage for inspection: "
        f"`tiefvision index use {new} --space {space}` to force it live (or rerun with "
        "--allow-regression)"
    )


def _stored_scores(store: Store, space: str, version: str) -> dict[str, Any] | None:
    """The scores ``evaluation.json`` holds for ``version``, when readable and its own."""
    try:
        stored = json.loads(store.get_bytes(index_evaluation_key(space, version)))
    except (StorageNotFound, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("version") != version:
        return None
    if not all(isinstance(stored.get(name), int | float) for name in _SCORES):
        return None
    return stored


def _mask(photos: list[tuple[str, str]], common: set[tuple[str, str]]) -> np.ndarray:
    return np.array([photo in common for photo in photos], bool)


def _scores(scored: VersionScores, keep: np.ndarray | None = None) -> dict[str, Any]:
    if keep is None:
        return {name: scored.result[name] for name in _SCORES}
    return scored.on(keep).as_dict()


def compare_with_live(
    store: Store, space: str, new_version: str, policy: GatePolicy | None = None
) -> GateComparison:
    """Score ``new_version`` (written as its ``evaluation.json``) and judge it against the
    live version of ``space`` (see the module docstring); raises nothing of its own."""
    policy = policy or GatePolicy()
    live_version = store.read_pointer(current_key(space_prefix(space)))

    def verdict(decision: GateDecision, reason: str, **scores: Any) -> GateComparison:
        return GateComparison(
            space, new_version, live_version, decision, reason, policy.tolerance, **scores
        )

    new = open_index(store, space, new_version)
    scored = score_version(store, new)
    if isinstance(scored, str):
        return verdict("skipped", f"{scored}; the gate is skipped: the new version goes live")
    if live_version is None or live_version == new_version:
        return verdict(
            "first",
            "no live version to compare with: the first one goes live",
            compared_on=f"{scored.result['queries']} photos ({scored.queries.scope})",
            new_scores=_scores(scored),
        )
    try:
        live = open_index(store, space, live_version)
    except (OSError, ValueError, KeyError, TiefVisionError) as error:
        return verdict(
            "skipped",
            f"the live version {live_version} cannot be opened ({type(error).__name__}); "
            "the gate is skipped: the new version goes live",
        )
    live_queries = space_queries(store, live)
    if isinstance(live_queries, str):
        return verdict(
            "skipped",
            f"the live version {live_version} cannot be scored ({live_queries}); the gate is "
            "skipped: the new version goes live",
        )
    new_photos, live_photos = scored.queries.photos(new), live_queries.photos(live)
    common = set(new_photos) & set(live_photos)
    if not common:
        return verdict(
            "skipped",
            "no photo asks in both versions (no held-out product in common); the gate is "
            "skipped: the new version goes live",
        )
    new_scores = _scores(scored, _mask(new_photos, common))
    stored = _stored_scores(store, space, live_version)
    if len(common) == len(live_photos) and stored is not None:
        live_scores = {name: stored[name] for name in _SCORES}
    else:
        live_scored = score_version(store, live)
        assert not isinstance(live_scored, str), "its queries were scored just above"
        live_scores = _scores(live_scored, _mask(live_photos, common))
    same = len(common) == len(new_photos) == len(live_photos)
    compared_on = (
        f"{len(common)} photos ({scored.queries.scope})"
        if same
        else f"the {len(common)} photos both versions ask about ({scored.queries.scope})"
    )
    new_map, live_map = float(new_scores["map_at_10"]), float(live_scores["map_at_10"])
    numbers = {"compared_on": compared_on, "new_scores": new_scores, "live_scores": live_scores}
    summary = (
        f"mAP@10 {new_map:.3f} vs live {live_map:.3f} ({new_map - live_map:+.3f}; tolerance "
        f"{policy.tolerance:.3f}) on {compared_on}"
    )
    if live_map - new_map <= policy.tolerance + _EPSILON:
        return verdict("passed", f"{summary}: the new version goes live", **numbers)
    if policy.allow_regression:
        return verdict(
            "forced",
            f"{summary}: a regression beyond the tolerance, let through (--allow-regression)",
            **numbers,
        )
    line = _refusal(space, new_version, live_version, new_map, live_map, policy.tolerance)
    return verdict("refused", line, **numbers)


def regression_gate(
    store: Store, space: str, policy: GatePolicy | None = None
) -> Callable[[str], dict[str, object]]:
    """What :func:`tiefvision_core.index.versions.publish_index` calls with a placed new
    version before it switches ``CURRENT``: the comparison (as a dict, kept on the published
    :class:`IndexVersion`), or :class:`RegressionRefused` carrying it."""

    def gate(version: str) -> dict[str, object]:
        comparison = compare_with_live(store, space, version, policy)
        if not comparison.went_live:
            raise RegressionRefused(comparison.reason, comparison.as_dict())
        return comparison.as_dict()

    return gate


def _number(value: object, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{float(value):+.3f}" if signed else f"{float(value):.3f}"  # type: ignore[arg-type]


def gate_markdown(comparison: GateComparison) -> str:
    """The comparison as Markdown (the Prefect artifact): live vs new, delta, decision."""
    header = "| version | role | photos asked | P@1 | P@5 | mAP@10 |"
    lines = [
        f"# Regression gate — {comparison.space} index",
        "",
        header,
        "|---|---|---|---|---|---|",
    ]
    sides = [
        (comparison.live, "live", comparison.live_scores),
        (comparison.new, "new", comparison.new_scores),
    ]
    for version, role, scores in sides:
        if version is None:
            continue
        cells = [_number((scores or {}).get(name)) for name in _SCORES]
        lines.append(f"| {version} | {role} | " + " | ".join(cells) + " |")
    if comparison.new_scores is not None and comparison.live_scores is not None:
        delta = [
            _number(float(comparison.new_scores[name]) - float(comparison.live_scores[name]), True)
            for name in _SCORES[1:]
        ]
        lines.append("| Δ new − live | | | " + " | ".join(delta) + " |")
    lines += [
        "",
        f"**Decision: {comparison.decision}** (tolerance {comparison.tolerance:.3f} mAP@10)"
        + (f" on {comparison.compared_on}" if comparison.compared_on else ""),
        "",
        comparison.reason,
    ]
    return "\n".join(lines)
