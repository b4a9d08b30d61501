"""Human-readable summaries for the terminal (the JSON forms live on the summaries)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tiefvision_core.catalog.ingest import IngestSummary, read_rejects
from tiefvision_core.storage.stores import open_store

if TYPE_CHECKING:  # torch is heavy: import the type only for checkers
    from tiefvision_core.encoding.catalog import EncodeSummary

__all__ = [
    "print_box_scores",
    "print_encode_summary",
    "print_ingest_summary",
    "print_locate_summary",
    "print_locator_run",
    "print_retrieval",
    "print_search_result",
    "print_similarity_run",
    "progress_bar",
]

_SHOWN_REJECTS = 12


def _size(num: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num < 1024 or unit == "GB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num} B"


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
        ("bytes", _size(summary.bytes_total)),
    ):
        table.add_row(label, str(value))
    console.print(table)
    if summary.rejects_total:
        rejects = read_rejects(open_store(summary.store_url), summary.version)
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

    bars: dict[str, int] = {}
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


def print_locator_run(console: Console, run: dict[str, object]) -> None:
    evaluation = run["evaluation"]
    console.print(
        _measures(
            f"Locator training — {run['version']}",
            [
                ("crops dataset", run["dataset_id"]),
                ("epochs (best)", f"{run['epochs']} ({run['best_epoch']})"),
                ("stopped early", run["stopped_early"]),
                ("held-out images", evaluation["images"]),
                ("fallbacks (no position ≥ threshold)", evaluation["fallbacks"]),
            ],
        )
    )
    print_box_scores(console, "Held-out boxes vs baselines", run["evaluation_table"])
    console.print(f"Model:    {run['model_uri']}")
    console.print(f"Pictures: {run['grid_uri']}\n          {run['histogram_uri']}")


def print_locate_summary(console: Console, summary: dict[str, object]) -> None:
    console.print(
        _measures(
            f"Box inference — locator {summary['locator_version']}",
            [
                ("images in catalog", summary["images"]),
                ("already located", summary["already_located"]),
                ("located now", summary["located"]),
                ("fell back to whole image", summary["fallback"]),
                ("rejected now", summary["rejected"]),
                ("seconds", summary["seconds"]),
            ],
        )
    )
    console.print(f"Boxes: {summary['boxes_uri']}")


def print_search_result(console: Console, result: object) -> None:
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
