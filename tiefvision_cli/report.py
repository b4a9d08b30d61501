"""Human-readable summaries for the terminal, every command's in this one module (the JSON
forms live on the summaries: ``as_dict()``).

Heavy types (torch behind the encoding and locator modules) are imported for checkers only:
printing a summary must not load a model's dependencies."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tiefvision_core.catalog.ingest import IngestSummary
from tiefvision_core.catalog.manifest import read_rejects
from tiefvision_core.storage.urls import open_store

if TYPE_CHECKING:  # torch is heavy: import the type only for checkers
    from pathlib import Path

    from deployments.client import TriggeredRun
    from flows.pipeline import PipelineRun
    from tiefvision_core.encoding.encode import EncodeSummary
    from tiefvision_core.evaluation.evaluate import EvaluationReport
    from tiefvision_core.index.search import SearchResult
    from tiefvision_core.locator.locate import LocateSummary
    from tiefvision_core.locator.model import LocatedBox
    from tiefvision_core.locator.runs import LocatorRun
    from tiefvision_core.pipeline.gc import GcReport
    from tiefvision_core.pipeline.reindex import ReindexSummary
    from tiefvision_core.vector_index.versions import VersionInfo

__all__ = [
    "BINARY_UNITS",
    "human_size",
    "print_box_scores",
    "print_encode_summary",
    "print_evaluation",
    "print_evaluation_history",
    "print_gate",
    "print_gc_report",
    "print_index_switch",
    "print_index_version",
    "print_index_versions",
    "print_ingest_summary",
    "print_lines",
    "print_locate_summary",
    "print_located",
    "print_locator_run",
    "print_pipeline",
    "print_reindex",
    "print_retrieval",
    "print_search_result",
    "print_setup_prefect",
    "print_similarity_run",
    "print_triggered",
    "progress_bar",
]

_SHOWN_REJECTS = 12

#: Units of 1024 as ``index list`` and ``gc`` write them (the ingest table says KB, MB, GB).
BINARY_UNITS = ("B", "KiB", "MiB", "GiB")


def human_size(num: float, units: tuple[str, ...] = ("B", "KB", "MB", "GB")) -> str:
    """``num`` bytes in the largest of ``units`` (steps of 1024) below 1024 of it."""
    for unit in units:
        if num < 1024 or unit == units[-1]:
            return f"{num:.0f} {unit}" if unit == units[0] else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num} B"


def print_lines(console: Console, text: str) -> None:
    """Plain text as is: no Rich markup or highlighting (paths and ids contain brackets),
    and long lines are not wrapped (they stay greppable)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_ingest_summary(console: Console, summary: IngestSummary) -> None:
    table = Table(title=f"Catalog ingest — manifest {summary.version}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in (
        ("images (usable)", summary.images),
        ("new", summary.new),
        ("changed", summary.changed),
        ("unchanged", summary.unchanged),
        ("removed", summary.removed),
        ("rejected this run", summary.rejected),
        ("rejects in catalog", summary.rejects_total),
        ("listed (usable + rejected)", summary.listed),
        ("skipped, no row", summary.skipped),
        *((f"  skipped: {reason}", n) for reason, n in summary.skipped_reasons.items()),
        ("bytes", human_size(summary.bytes_total)),
    ):
        table.add_row(label, str(value))
    console.print(table)
    rejects = (
        read_rejects(open_store(summary.store_url), summary.version)
        if summary.rejects_total
        else None
    )
    if rejects is not None:
        shown = Table(title="Rejected images (reason)", title_justify="left")
        shown.add_column("image")
        shown.add_column("reason")
        shown.add_column("detail", overflow="fold")
        for row in rejects.slice(0, _SHOWN_REJECTS).to_pylist():
            shown.add_row(row["rel_path"], row["reason"], row["detail"] or "")
        console.print(shown)
        if rejects.num_rows > _SHOWN_REJECTS:
            console.print(f"… and {rejects.num_rows - _SHOWN_REJECTS} more")
    console.print(f"Manifest: {summary.manifest_uri}")
    console.print(f"Rejects:  {summary.rejects_uri}")


@contextmanager
def progress_bar(console: Console, *, enabled: bool = True) -> Iterator[None]:
    """A terminal bar driven by the flows' progress events (see ``tasks.progress``)."""
    if not enabled:
        yield
        return
    from tasks.progress import listen

    bars: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=total)
            progress.update(bars[stage], completed=done, total=total)

        stop = listen(update)
        try:
            yield
        finally:
            stop()


def print_encode_summary(console: Console, summary: EncodeSummary) -> None:
    table = Table(title=f"Encoding — {summary.encoder_version}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in (
        ("images in catalog", summary.images),
        ("already encoded", summary.already_encoded),
        ("encoded now", summary.encoded),
        ("rejected now", summary.rejected),
        ("throughput", f"{summary.images_per_s:.1f} images/s"),
        ("device", summary.device),
        (
            "batch, layout",
            f"{summary.batch_size}, {'channels_last' if summary.channels_last else 'NCHW'}",
        ),
        ("shards written / skipped", f"{summary.shards_written} / {summary.shards_skipped}"),
    ):
        table.add_row(label, str(value))
    console.print(table)
    for reason, count in summary.reject_reasons.items():
        console.print(f"  rejected ({reason}): {count}")
    console.print(f"Shards: {summary.shards_uri}")


def _measures(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def print_box_scores(console: Console, title: str, rows: list[dict[str, object]]) -> None:
    """Locator and baselines side by side: mean IoU and the shares above 0.5 and 0.7."""
    table = Table(title=title, title_justify="left")
    for column in ("boxes", "mean IoU", "IoU ≥ 0.5", "IoU ≥ 0.7"):
        table.add_column(column, justify="left" if column == "boxes" else "right")
    for row in rows:
        table.add_row(
            str(row["boxes"]),
            f"{row['mean_iou']:.3f}",
            f"{row['share_iou_05']:.1%}",
            f"{row['share_iou_07']:.1%}",
        )
    console.print(table)


def print_locator_run(console: Console, run: LocatorRun) -> None:
    evaluation = run.evaluation
    console.print(
        _measures(
            f"Locator training — {run.version}",
            [
                ("crops dataset", run.dataset_id),
                ("epochs (best)", f"{run.epochs} ({run.best_epoch})"),
                ("stopped early", run.stopped_early),
                (
                    "input sides (measured on validation photos)",
                    f"{list(run.locate_sides)} of {list(run.trained_sides)}",
                ),
                ("held-out images", evaluation["images"]),
                ("fallbacks (no window: whole photo)", evaluation["fallbacks"]),
                (
                    "low confidence (best positions, none ≥ threshold)",
                    evaluation.get("low_confidence", 0),
                ),
            ],
        )
    )
    print_box_scores(console, "Held-out boxes vs baselines", run.evaluation_table)
    if run.all_sides_iou is not None and run.locate_sides != run.trained_sides:
        console.print(f"Held-out mean IoU with every trained side: {run.all_sides_iou:.3f}")
    console.print(f"Model:    {run.model_uri}")
    console.print(f"Pictures: {run.grid_uri}\n          {run.histogram_uri}")


def print_locate_summary(console: Console, summary: LocateSummary) -> None:
    console.print(
        _measures(
            f"Box inference — locator {summary.locator_version}",
            [
                ("images in catalog", summary.images),
                ("already located", summary.already_located),
                ("located now", summary.located),
                ("fell back to whole image (no window)", summary.fallback),
                ("low confidence (best positions)", summary.low_confidence),
                ("rejected now", summary.rejected),
                ("seconds", summary.seconds),
            ],
        )
    )
    console.print(f"Boxes: {summary.boxes_uri}")


def print_located(console: Console, image: Path, located: LocatedBox, version: str) -> None:
    """One photo's located box, how it was found, and the locator that found it."""
    left, top, right, bottom = located.box
    if located.fallback:
        how = "whole image (smaller than one window at every scale)"
    elif located.low_confidence:
        kept = located.positions_kept
        how = f"low confidence: no position passed the threshold, best {kept} averaged"
    else:
        how = f"{located.positions_kept} positions averaged"
    console.print(
        f"{image}: box left={left} top={top} right={right} bottom={bottom}, "
        f"score {located.score:.3f}, {how}; locator {version}"
    )


def print_search_result(console: Console, result: SearchResult) -> None:
    table = Table(
        title=f"{result.space} index {result.index_version}"
        + (f" — query box {result.query_box}" if result.query_box else ""),
        title_justify="left",
    )
    for column in ("#", "image_id", "score", "box"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, hit in enumerate(result.results, 1):
        table.add_row(str(rank), hit.image_id, f"{hit.score:.4f}", str(hit.box))
    console.print(table)


def print_similarity_run(console: Console, run: dict[str, object]) -> None:
    table = Table(
        title=f"Deep Ranking — {run['version']} (best epoch {run['best_epoch']} of "
        f"{run['epochs']}; {run['test_products']} held-out products)",
        title_justify="left",
    )
    for column in ("space", "held-out triplet accuracy", "held-out mAP@10"):
        table.add_column(column, justify="left" if column == "space" else "right")
    table.add_row(
        "unsupervised", f"{run['unsupervised_accuracy']:.3f}", f"{run['unsupervised_map10']:.3f}"
    )
    table.add_row(
        "supervised", f"{run['supervised_accuracy']:.3f}", f"{run['supervised_map10']:.3f}"
    )
    console.print(table)
    console.print(f"Model: {run['model_uri']}")


def print_retrieval(console: Console, rows: list[dict[str, object]]) -> None:
    """Retrieval quality side by side (same product = relevant)."""
    table = Table(title="Retrieval (same product = relevant)", title_justify="left")
    for column in ("crop", "space", "photos", "queries", "P@1", "P@5", "mAP@10"):
        table.add_column(column, justify="right" if column[0] in "qPm" else "left")
    for row in rows:
        table.add_row(
            str(row["crop"]),
            str(row["space"]),
            str(row["photos"]),
            str(row["queries"]),
            f"{row['precision_at_1']:.3f}",
            f"{row['precision_at_5']:.3f}",
            f"{row['map_at_10']:.3f}",
        )
    console.print(table)


def print_pipeline(console: Console, run: PipelineRun) -> None:
    """Each stage's summary of a ``flows.pipeline`` run, then why a stage was skipped."""
    print_ingest_summary(console, run.ingest)
    print_encode_summary(console, run.encode)
    if run.locator is not None:
        print_locator_run(console, run.locator)
        print_locate_summary(console, run.locate)
    else:
        console.print(f"Locator skipped: {run.plan.locator_reason}; search uses whole photos.")
    version = run.unsupervised_index
    console.print(f"unsupervised index {version.version}: {version.size} photos")
    print_gate(console, version.gate)
    if run.similarity is not None:
        print_similarity_run(console, run.similarity.as_dict())
    else:
        console.print(f"Deep Ranking skipped: {run.plan.similarity_reason}.")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.seconds.items())
    console.print(f"Pipeline stages: {stages}")


def print_reindex(console: Console, summary: ReindexSummary) -> None:
    """The run summary in a few lines: changes, work per stage, index versions."""
    located = (
        f"{summary.located} located with {summary.locator_version}"
        if summary.locator_version
        else "no locator: whole photos"
    )
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.stages.items())
    lines = [
        f"Reindex of {summary.store_url} (manifest {summary.manifest_version}): "
        f"{summary.images} photos",
        f"  new {summary.new}, changed {summary.changed}, removed {summary.removed}, "
        f"rejected {summary.rejected + summary.encode_rejected}",
        f"  {located}; {summary.encoded} encoded (each with its mirror)",
        f"  stages: {stages}; total {summary.seconds:.1f} s "
        f"(waited {summary.lock_waited_s:.1f} s for the lock); gc freed "
        f"{summary.garbage_bytes:,} bytes",
    ]
    for update in summary.indexes:
        lines.append(
            f"  {update.space} index: {update.before or 'none'} → {update.after} "
            f"({update.action}: {update.reason}); {update.size} photos, "
            f"{update.vectors_computed} vectors computed"
        )
    for gate in summary.gates:
        lines.append(f"  regression gate, {gate['space']}: {gate['decision']} — {gate['reason']}")
    if summary.gc_skipped:
        lines.append(f"  gc skipped: {summary.gc_skipped}")
    print_lines(console, "\n".join(lines))


def print_index_version(console: Console, version: Mapping[str, Any]) -> None:
    """A freshly built index version (``rebuild-index``): size, kind, build time, self-check,
    and the regression gate's verdict."""
    check = version["self_check"]
    console.print(
        f"{version['space']} index {version['version']}: {version['size']} photos, "
        f"{version['kind']} search over {version['dimension']} numbers each, built in "
        f"{version['build_seconds']:.1f} s; self-check {check['found_first']}/"
        f"{check['queries']} found themselves first\nIndex: {version['uri']}"
    )
    print_gate(console, version.get("gate"))


def print_gate(console: Console, gate: Mapping[str, Any] | None) -> None:
    """The regression gate's decision and why, one line (nothing when no gate ran)."""
    if gate:
        print_lines(console, f"Regression gate: {gate['decision']} — {gate['reason']}")


def print_index_versions(console: Console, listed: list[VersionInfo]) -> None:
    """``index list``: plain aligned text, readable in any terminal width, easy to grep."""
    if not listed:
        console.print("No index versions yet: run `tiefvision rebuild-index`.")
        return
    rows = [("space", "version", "live", "rows", "size", "created", "self-check")]
    for info in listed:
        check = info.self_check or {}
        rows.append(
            (
                info.space,
                info.version,
                "yes" if info.live else "",
                "—" if info.rows is None else f"{info.rows:,}",
                human_size(info.bytes, BINARY_UNITS),
                (info.created_at or "unfinished")[:19],
                f"{check['found_first']}/{check['queries']}" if check else "—",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip())


def print_index_switch(console: Console, space: str, before: str | None, info: VersionInfo) -> None:
    """``index use``: which version was live, which is now, and its self-check."""
    check = info.self_check or {}
    console.print(
        f"{space} index: {before or 'none'} → {info.version} (self-check "
        f"{check.get('found_first')}/{check.get('queries')} found themselves first)"
    )


def print_gc_report(console: Console, report: GcReport, *, dry_run: bool) -> None:
    """What gc freed (or, with ``--dry-run``, each object it would delete and the total)."""
    if dry_run:
        for item in report.items:
            size = human_size(item.bytes, BINARY_UNITS)
            console.print(f"{item.action:7} {item.what:9} {size:>10}  {item.key}")
    verb = "would free" if dry_run else "freed"
    parts = ", ".join(f"{k} {v['objects']}" for k, v in report.totals.items()) or "nothing"
    size = human_size(report.bytes, BINARY_UNITS)
    console.print(f"gc {verb} {size} ({report.bytes:,} bytes): {parts}")


def print_evaluation(console: Console, report: EvaluationReport) -> None:
    """What ``tiefvision evaluate`` scored (held-out data only), what it skipped and why,
    and where the scores were written."""
    table = Table(title="Quality of what is live (held-out data)", title_justify="left")
    for column in ("what", "on", "score"):
        table.add_column(column)
    for row in report.rows():
        table.add_row(*(escape(str(row[c])) for c in ("what", "on", "score")))
    console.print(table)
    for note in report.notes:
        console.print(f"skipped: {note}", markup=False, highlight=False, soft_wrap=True)
    for uri in report.written:
        console.print(f"written: {uri}", markup=False, highlight=False, soft_wrap=True)


def _history_scores(row: Mapping[str, Any]) -> str:
    """One version's stored numbers, as the history table shows them."""
    if not row["evaluated"]:
        return "not evaluated (`tiefvision evaluate` scores the live version)"
    if row["what"] == "locator":
        text = (
            f"IoU {row['mean_iou']:.3f} · ≥0.5 {row['share_iou_05']:.0%} · ≥0.7 "
            f"{row['share_iou_07']:.0%} · {row['fallbacks']} fallbacks"
        )
        if row.get("low_confidence"):
            text += f" · {row['low_confidence']} low-confidence"
        return f"{text} ({row['images']} photos)"
    return (
        f"mAP@10 {row['map_at_10']:.3f} · P@1 {row['precision_at_1']:.3f} · P@5 "
        f"{row['precision_at_5']:.3f} ({row['queries']} queries, {row['products']} products)"
    )


def print_evaluation_history(console: Console, rows: list[dict[str, Any]]) -> None:
    """``evaluate --history``: each version's stored scores, oldest first per kind."""
    if not rows:
        console.print("No locator or index versions yet: nothing was evaluated.")
        return
    table = Table(title="Evaluation history (held-out data)", title_justify="left")
    for column in ("what", "version", "live", "scores"):
        table.add_column(column)
    for row in rows:
        what = "locator" if row["what"] == "locator" else f"index {row['space']}"
        table.add_row(
            what,
            escape(str(row["version"])),
            "yes" if row["live"] else "",
            escape(_history_scores(row)),
        )
    console.print(table)


def print_setup_prefect(console: Console, done: dict[str, str]) -> None:
    """What ``setup-prefect`` created or updated, and the next two commands to run."""
    done = dict(done)
    lines = [f"Flow results: {done.pop('result_storage')} (block s3-bucket/tiefvision-results)"]
    lines += [f"Work pool {pool}: {what}" for pool, what in done.items()]
    lines += [
        "Next: prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml",
        "      prefect worker start --pool tiefvision-cpu   (with TIEFVISION_* and AWS_* set)",
    ]
    print_lines(console, "\n".join(lines))


def print_triggered(console: Console, run: TriggeredRun, *, waited: bool, failed: bool) -> None:
    """A triggered deployment run: its state (and time, when waited for) and where its
    logs are; a failed run as the one-line error scripts look for (give the error console)."""
    if failed:
        console.print(
            f"[bold red]error:[/] {escape(run.deployment)} run {escape(run.flow_run_name)} "
            f"ended {run.state.title()}: {escape(run.message or 'no message')}; "
            f"logs: {run.url or run.flow_run_id}",
            highlight=False,
            soft_wrap=True,
        )
        return
    how = f"{run.state.title()} in {run.seconds:.0f} s" if waited else run.state.title()
    console.print(
        f"{run.deployment} run {run.flow_run_name}: {how} ({run.url or run.flow_run_id})",
        markup=False,
        highlight=False,
    )
