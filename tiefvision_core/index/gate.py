"""No regression goes live: a new index version is scored before ``CURRENT`` moves to it.

Why a gate of its own: a rebuild or the nightly reindex switches ``CURRENT`` as soon as a
version passes its self-check, which only proves that the index finds its own photos. A
similarity model that learned its training products rather than a better similarity (or an
encoder, a locator, an index configuration that does worse) would go live unnoticed. So,
between the version's files being placed and the switch, :func:`regression_gate` scores the
new version as ``tiefvision evaluate`` does
(:func:`tiefvision_core.evaluation.spaces.score_version`: P@1, P@5, mAP@10, same
``product_id`` relevant, the supervised space on its model's held-out products) and
compares it with the live one.

What is compared: the photos that ask in *both* versions (same image id and bytes) — each
version answering them from its own gallery. A catalog that gained a hard product, or lost
an easy one, changes the numbers of a version without the search getting worse; comparing
on the photos both versions ask about keeps the gate from blocking every catalog update.
Both versions are searched on those photos (the live one's ``evaluation.json`` is left
alone); the new version's scores on its own asking photos are written as its
``evaluation.json`` (the history ``tiefvision evaluate --history`` shows).

Noise: the difference comes with a 95 % interval, bootstrapped over products (each drawn
product brings all its photos; ``evaluate.paired_difference``, the interval ``tiefvision
evaluate`` reports). A drop beyond the tolerance is refused only when the interval lies
below zero — a real regression; on a catalog of a few products a drop of a few points whose
interval includes no change goes live, and the comparison says so.

A first supervised version has no live supervised one, but it has a baseline that matters
more: no training at all. When the unsupervised space is live, the new supervised version is
compared with it on the products the similarity model held out (each version answering from
its own gallery), with the same tolerance and the same refusal: a model that learned its
training products rather than a better similarity (on the grocery photos, held-out P@1
0.875 unsupervised → 0.775 supervised) does not go live. Later supervised versions are
compared with the live supervised one only (one search less per rebuild; the first one
passed against the unsupervised space, or was forced).

Cost: exact search of every asking photo is quadratic in the catalog, so above
``GatePolicy.max_queries`` (:data:`DEFAULT_MAX_QUERIES`) photos asked in both versions, both
are asked the same sample, drawn by a stable hash of image id and bytes — the same photos in
both versions and in every run; the new version's ``evaluation.json`` is then a sample too
(``sampled_from``), and so is the comparison (``GateComparison.sampled_from``).

Decisions: **first** (no live version, nor a live unsupervised one for a supervised
version), **skipped** (no product ids, a supervised model that
does not say what it held out, no photo asked in both: said so, and the version goes live),
**passed**, **forced** (a drop beyond the tolerance, let through by ``allow_regression``),
**refused**: :class:`RegressionRefused`, the live version stays, the new one stays on
storage (``tiefvision index use`` makes it live by hand).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from tiefvision_core.errors import ConfigError, TiefVisionError
from tiefvision_core.evaluation.spaces import (
    SpaceQueries,
    VersionScores,
    paired_difference,
    sample_mask,
    search_queries,
    space_queries,
    write_scores,
)
from tiefvision_core.storage.layout import current_key
from tiefvision_core.storage.stores import Store
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.versions import OpenedIndex, open_index, space_prefix

__all__ = [
    "DEFAULT_GATE",
    "DEFAULT_MAX_QUERIES",
    "DEFAULT_TOLERANCE",
    "GateComparison",
    "GateDecision",
    "GatePolicy",
    "GateRule",
    "compare_with_live",
    "gate_markdown",
    "regression_gate",
]

GateDecision = Literal["first", "skipped", "passed", "forced", "refused"]
GateRule = Literal["tolerance", "interval"]

#: How much mAP@10 a new version may lose against the live one and still go live: below
#: the noise of a few dozen held-out queries, above a real regression.
DEFAULT_TOLERANCE = 0.02
#: Most photos the gate asks in each version. Exact search of every asking photo costs
#: (photos asked × gallery): quadratic in the catalog. 2,000 queries put the noise of mAP@10
#: near ±0.01 (a standard error of about 0.35/√2000 ≈ 0.008 per version, less on their
#: difference, the photos being the same), under the default tolerance, and keep a
#: 100,000-photo exact check to 2·10⁸ inner products per version.
DEFAULT_MAX_QUERIES = 2000
_SCORES = ("queries", "precision_at_1", "precision_at_5", "map_at_10")
_EPSILON = 1e-9  # the scores are rounded to 4 decimals: a drop equal to the tolerance passes


@dataclass(frozen=True)
class GatePolicy:
    """How far a new version's mAP@10 may fall below the live one's, and whether a larger
    drop is let through anyway (``--allow-regression``)."""

    tolerance: float = DEFAULT_TOLERANCE
    allow_regression: bool = False
    #: Above this many photos asked in both versions, both are asked the same stable
    #: sample of that many (:func:`tiefvision_core.evaluation.spaces.sample_mask`); None: all.
    max_queries: int | None = DEFAULT_MAX_QUERIES
    #: ``tolerance``: refuse any drop beyond the tolerance; ``interval``: only one whose
    #: 95 % interval (products resampled) lies below zero — a real regression.
    rule: GateRule = "tolerance"

    def __post_init__(self) -> None:
        if self.max_queries is not None and self.max_queries < 1:
            raise ConfigError(
                f"the gate's max_queries {self.max_queries!r} must be at least 1 (or None)"
            )
        if self.rule not in ("tolerance", "interval"):
            raise ConfigError(f"regression rule {self.rule!r}: choose tolerance or interval")
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
    #: The space of the ``live`` version compared with, when not ``space``: a first
    #: supervised version is compared with the live unsupervised one.
    live_space: str | None = None
    #: How many photos both versions ask about, when the comparison asked a sample of them
    #: (``new_scores["queries"]`` photos); None: all of them were asked.
    sampled_from: int | None = None
    #: 95 % interval of new − live mAP@10 on the compared photos, products resampled
    #: (``evaluate.paired_difference``): a drop is refused only when it lies below zero.
    delta_interval: list[float] | None = None

    @property
    def went_live(self) -> bool:
        return self.decision != "refused"

    @property
    def baseline(self) -> str | None:
        """What the new version was compared with: the live version, named with its space
        when that is another one (``unsupervised <version>``)."""
        if self.live is None or self.live_space is None:
            return self.live
        return f"{self.live_space} {self.live}"

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


def _refusal(comparison: GateComparison, new_map: float, live_map: float) -> str:
    """The one line a refused run fails with: both numbers, what stays live, what to do."""
    space, new, tol = comparison.space, comparison.new, comparison.tolerance
    kept = (
        f"kept {comparison.live} live"
        if comparison.live_space is None
        else f"no {space} version goes live (the trained model answers its held-out products "
        f"worse than no training; search keeps the {comparison.live_space} space)"
    )
    return (
        f"index {space} {new} mAP@10 {new_map:.3f} < live {comparison.baseline} "
        f"{live_map:.3f} − tolerance {tol:.3f}: {kept}; the new version stays on storage for "
        f"inspection: `tiefvision index use {new} --space {space}` to force it live (or rerun "
        "with --allow-regression)"
    )


def _mask(photos: list[tuple[str, str]], chosen: set[tuple[str, str]]) -> np.ndarray:
    return np.array([photo in chosen for photo in photos], bool)


def _scores(scored: VersionScores, keep: np.ndarray) -> dict[str, Any]:
    return scored.on(keep).as_dict()


def _baseline(store: Store, space: str, new_version: str) -> tuple[str, str] | None:
    """(space, version) the new version is compared with: the space's live version; for a
    first supervised version, the live unsupervised one — a trained model must not answer
    the products it never saw worse than no training (the grocery photos' P@1 0.875 →
    0.775); None: nothing to compare with (the first version goes live)."""
    live = store.read_pointer(current_key(space_prefix(space)))
    if live is not None and live != new_version:
        return space, live
    if live is None and space == "supervised":
        unsupervised = store.read_pointer(current_key(space_prefix("unsupervised")))
        if unsupervised is not None:
            return "unsupervised", unsupervised
    return None


def _open_live(store: Store, space: str, version: str) -> tuple[OpenedIndex, SpaceQueries] | str:
    """The live version and who asks in it, or why it cannot be compared with."""
    try:
        live = open_index(store, space, version)
    except (OSError, ValueError, KeyError, TiefVisionError) as error:
        return f"the live version {version} cannot be opened ({type(error).__name__})"
    queries = space_queries(store, live)
    if isinstance(queries, str):
        return f"the live version {version} cannot be scored ({queries})"
    return live, queries


def _compared_on(asked: int, common: int, every: bool, scope: str) -> str:
    """Which photos the numbers are on, in words (the artifact, the reason)."""
    if asked < common:
        return (
            f"a sample of {asked} of the {common} photos both versions ask about ({scope}; "
            "the same photos every run, drawn by a stable hash of image id and bytes)"
        )
    if every:
        return f"{common} photos ({scope})"
    return f"the {common} photos both versions ask about ({scope})"


def compare_with_live(
    store: Store, space: str, new_version: str, policy: GatePolicy | None = None
) -> GateComparison:
    """Score ``new_version`` (written as its ``evaluation.json``) and judge it against the
    live version of ``space`` — or, for a first supervised version, the live unsupervised
    one (see the module docstring); raises nothing of its own."""
    policy = policy or GatePolicy()
    current = store.read_pointer(current_key(space_prefix(space)))
    baseline = _baseline(store, space, new_version)
    live_space, live_version = baseline if baseline is not None else (space, current)
    other_space = live_space if live_space != space else None

    def verdict(decision: GateDecision, reason: str, **scores: Any) -> GateComparison:
        return GateComparison(
            space,
            new_version,
            live_version,
            decision,
            reason,
            policy.tolerance,
            live_space=other_space,
            **scores,
        )

    new = open_index(store, space, new_version)
    queries = space_queries(store, new)
    if isinstance(queries, str):
        return verdict("skipped", f"{queries}; the gate is skipped: the new version goes live")
    new_photos = queries.photos(new)
    own = sample_mask(new_photos, policy.max_queries)  # its evaluation.json's photos
    opened = (
        "no live version to compare with"
        if baseline is None
        else _open_live(store, live_space, str(live_version))
    )
    chosen: set[tuple[str, str]] = set()
    common: list[tuple[str, str]] = []
    if not isinstance(opened, str):
        live, live_queries = opened
        live_photos = live_queries.photos(live)
        common = sorted(set(new_photos) & set(live_photos))
        chosen = {
            p
            for p, keep in zip(common, sample_mask(common, policy.max_queries), strict=True)
            if keep
        }
    # One search of the new version answers its own evaluation and the comparison.
    compared = _mask(new_photos, chosen)
    searched = own | compared
    scored = search_queries(new, queries.subset(searched), len(queries.rows))
    write_scores(store, new, scored.summary(own[searched], asking=len(queries.rows)))
    if baseline is None:
        result = scored.summary(own[searched])
        return verdict(
            "first",
            "no live version to compare with: the first one goes live",
            compared_on=_compared_on(int(own.sum()), len(new_photos), True, queries.scope),
            new_scores={name: result[name] for name in _SCORES},
            sampled_from=len(new_photos) if own.sum() < len(new_photos) else None,
        )
    if isinstance(opened, str):
        return verdict("skipped", f"{opened}; the gate is skipped: the new version goes live")
    if not common:
        return verdict(
            "skipped",
            "no photo asks in both versions (no held-out product in common); the gate is "
            "skipped: the new version goes live",
        )
    new_scores = _scores(scored, compared[searched])
    # The live version searched on the compared photos (its own evaluation.json is left
    # alone): the per-photo figures the interval of the difference needs.
    live_keep = _mask(live_photos, chosen)
    live_scored = search_queries(live, live_queries.subset(live_keep))
    live_scores = _scores(live_scored, np.ones(int(live_keep.sum()), bool))
    new_compared = replace(
        scored,
        queries=scored.queries.subset(compared[searched]),
        neighbours=scored.neighbours[compared[searched]],
    )
    paired = paired_difference((new, new_compared), (live, live_scored))
    interval = None if paired is None else [float(b) for b in paired["interval"]]  # type: ignore[attr-defined]
    every = len(common) == len(new_photos) == len(live_photos)
    compared_on = _compared_on(len(chosen), len(common), every, queries.scope)
    new_map, live_map = float(new_scores["map_at_10"]), float(live_scores["map_at_10"])
    numbers: dict[str, Any] = {
        "compared_on": compared_on,
        "new_scores": new_scores,
        "live_scores": live_scores,
        "sampled_from": len(common) if len(chosen) < len(common) else None,
        "delta_interval": interval,
    }
    against = "live" if other_space is None else f"live {other_space} {live_version}"
    bounds = "" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
    spread = "" if interval is None else f", 95 % {bounds}"
    summary = (
        f"mAP@10 {new_map:.3f} vs {against} {live_map:.3f} ({new_map - live_map:+.3f}"
        f"{spread}; tolerance {policy.tolerance:.3f}) on {compared_on}"
    )
    if live_map - new_map <= policy.tolerance + _EPSILON:
        return verdict("passed", f"{summary}: the new version goes live", **numbers)
    noise = interval is not None and interval[1] >= 0
    if noise and policy.rule == "interval":
        return verdict(
            "passed",
            f"{summary}: a drop beyond the tolerance, but within noise (its interval includes "
            "no change; regression rule `interval`): the new version goes live",
            **numbers,
        )
    if policy.allow_regression:
        return verdict(
            "forced",
            f"{summary}: a regression beyond the tolerance, let through (--allow-regression)",
            **numbers,
        )
    refused = verdict("refused", "", **numbers)
    reason = _refusal(refused, new_map, live_map)
    if noise:
        reason += (
            f" (its 95 % interval {bounds} includes no change: it may be noise; "
            "TIEFVISION_REGRESSION_RULE=interval refuses only a real drop)"
        )
    return replace(refused, reason=reason)


def regression_gate(
    store: Store, space: str, policy: GatePolicy | None = None
) -> Callable[[str], dict[str, object]]:
    """What :func:`tiefvision_core.vector_index.publish.publish_index` calls with a placed new
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
    live_role = "live" if comparison.live_space is None else f"live {comparison.live_space}"
    sides = [
        (comparison.live, live_role, comparison.live_scores),
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
    if comparison.delta_interval is not None:
        low, high = comparison.delta_interval
        lines += ["", f"95 % interval of Δ mAP@10 (products resampled): [{low:+.3f}, {high:+.3f}]"]
    lines += [
        "",
        f"**Decision: {comparison.decision}** (tolerance {comparison.tolerance:.3f} mAP@10)"
        + (f" on {comparison.compared_on}" if comparison.compared_on else ""),
    ]
    if comparison.live_space is not None and comparison.live is not None:
        lines += [
            "",
            f"Compared with the live {comparison.baseline}: no {comparison.space} version is "
            "live yet, and a trained model must answer the products it never saw no worse "
            "than no training.",
        ]
    if comparison.sampled_from is not None and comparison.new_scores is not None:
        lines += [
            "",
            f"Sample: {comparison.new_scores['queries']} of the {comparison.sampled_from} "
            "photos both versions ask about, the same ones in both.",
        ]
    lines += ["", comparison.reason]
    return "\n".join(lines)
