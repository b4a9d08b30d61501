"""Where the product is in a photo (OverFeat style): the heads and box inference, training
windows (crops), training, runs, models and boxes on storage, box scoring.

Public names are re-exported here and imported on first use (PEP 562): importing
one stage's package must not load the heavy dependencies of its other modules
(a search by id never imports torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiefvision_core._lazy import lazy_exports

if TYPE_CHECKING:
    from tiefvision_core.locator.crops import (  # noqa: F401
        DEFAULT_SCALES,
        WINDOWS_SCHEMA,
        CropConfig,
        CropDataset,
        CropPart,
        CropPlan,
        MapSample,
        build_part,
        finish_crops,
        load_samples,
        map_rows,
        plan_crops,
        window_geometry,
        window_piece,
    )
    from tiefvision_core.locator.evaluation import (  # noqa: F401
        BoxScores,
        LocatorEvaluation,
        centre_median_boxes,
        draw_box_grid,
        evaluate_boxes,
        iou,
        iou_histogram_png,
        png_bytes,
    )
    from tiefvision_core.locator.model import (  # noqa: F401
        BoxF,
        LocatedBox,
        LocatorHeads,
        TargetScaler,
        WindowGeometry,
        average_box,
        box_targets,
        boxes_from_targets,
        inside_fraction,
        locate_in_maps,
        split_by_image,
        window_label,
    )
    from tiefvision_core.locator.runs import (  # noqa: F401
        LocatorRun,
        evaluate_samples,
        fit_locator,
    )
    from tiefvision_core.locator.store import (  # noqa: F401
        LocatedPart,
        LocatePlan,
        LocateSummary,
        LocatorModel,
        load_locator,
        locate_image,
        locate_shard,
        plan_locate,
        save_locator,
    )
    from tiefvision_core.locator.training import (  # noqa: F401
        EpochMetrics,
        TrainConfig,
        TrainedLocator,
        train_heads,
    )

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "BoxF": "model",
    "BoxScores": "evaluation",
    "CropConfig": "crops",
    "CropDataset": "crops",
    "CropPart": "crops",
    "CropPlan": "crops",
    "DEFAULT_SCALES": "crops",
    "EpochMetrics": "training",
    "LocatePlan": "store",
    "LocateSummary": "store",
    "LocatedPart": "store",
    "LocatedBox": "model",
    "LocatorEvaluation": "evaluation",
    "LocatorHeads": "model",
    "LocatorModel": "store",
    "LocatorRun": "runs",
    "MapSample": "crops",
    "TargetScaler": "model",
    "TrainConfig": "training",
    "TrainedLocator": "training",
    "WindowGeometry": "model",
    "average_box": "model",
    "box_targets": "model",
    "boxes_from_targets": "model",
    "build_part": "crops",
    "centre_median_boxes": "evaluation",
    "draw_box_grid": "evaluation",
    "evaluate_boxes": "evaluation",
    "evaluate_samples": "runs",
    "finish_crops": "crops",
    "fit_locator": "runs",
    "inside_fraction": "model",
    "iou": "evaluation",
    "iou_histogram_png": "evaluation",
    "load_locator": "store",
    "load_samples": "crops",
    "locate_image": "store",
    "locate_in_maps": "model",
    "locate_shard": "store",
    "map_rows": "crops",
    "plan_crops": "crops",
    "plan_locate": "store",
    "png_bytes": "evaluation",
    "save_locator": "store",
    "split_by_image": "model",
    "train_heads": "training",
    "window_geometry": "crops",
    "window_piece": "crops",
    "WINDOWS_SCHEMA": "crops",
    "window_label": "model",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
