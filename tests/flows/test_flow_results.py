"""Result persistence: every flow persists its small result as JSON, no task persists.

Why it matters: a task left at Prefect's default inherits its flow's ``persist_result=True``
and would write its return value (plans with one entry per image) to result storage on
every run; a pickled result breaks on the next upgrade and can carry arrays.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
from prefect import Flow
from prefect.tasks import Task

import flows
import tasks
from flows._results import FLOW_RESULTS
from tiefvision_core.catalog.ingest import IngestSummary
from tiefvision_core.evaluation.evaluate import EvaluationReport
from tiefvision_core.locator.crops import CropDataset
from tiefvision_core.locator.locate import LocateSummary
from tiefvision_core.vector_index.publish import IndexVersion


def _members(package: object, kind: type) -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        found.update(
            {f"{info.name}.{n}": v for n, v in vars(module).items() if isinstance(v, kind)}
        )
    return found


def test_every_flow_persists_json_and_no_task_persists() -> None:
    all_flows = _members(flows, Flow)
    assert {f.name for f in all_flows.values()} >= {
        "ingest",
        "encode",
        "crops",
        "train-locator",
        "locate",
        "rebuild-index",
        "train-triplets",
        "evaluate",
    }
    for name, flow in all_flows.items():
        assert flow.persist_result is True, name
        assert flow.result_serializer is FLOW_RESULTS["result_serializer"], name
    all_tasks = _members(tasks, Task)
    assert all_tasks
    for name, task in all_tasks.items():
        assert task.persist_result is False, name


SERIALIZER = FLOW_RESULTS["result_serializer"]


@pytest.mark.parametrize(
    "result",
    [
        IndexVersion(
            space="unsupervised",
            version="v1",
            kind="exact",
            size=np.int64(8),  # NumPy numbers inside a result are fine: stored as numbers
            dimension=11520,
            build_seconds=np.float32(0.5),
            self_check={"queries": 8, "found_first": np.int64(8)},
            uri="s3://b/indexes/unsupervised/v1/",
            pruned=("v0",),
        ),
        IngestSummary(
            "s3://b/s", "v2", None, 8, 8, 0, 0, 0, 0, 0, 9000, "s3://m", "s3://r", {"empty": 1}
        ),
        CropDataset("d", "p", "e", "ev", "k", "dg", (320, 448), {"kernel": [7, 7]}, {}, {}, 0, {}),
        LocateSummary("v1", 4, 1, np.int64(3), 0, 0, 1.5, "s3://b/boxes/v1/"),
        {"located": np.int64(3), "images": 4},
        EvaluationReport(
            None,
            {"unsupervised": {"version": "v1", "queries": 24, "precision_at_1": 0.5}},
            ("no locator yet",),
            ("s3://b/indexes/unsupervised/v1/evaluation.json",),
        ),
    ],
)
def test_results_round_trip_through_json(result: object) -> None:
    stored = SERIALIZER.dumps(result)
    assert stored.startswith(b"{")  # JSON, not a pickle
    loaded = SERIALIZER.loads(stored)
    assert type(loaded) is type(result)
    assert loaded == result


def test_arrays_are_refused_with_what_to_return_instead() -> None:
    with pytest.raises(TypeError, match="never arrays or tables"):
        SERIALIZER.dumps({"vectors": np.zeros((2, 3))})
