"""``tiefvision evaluate --json`` in a subprocess, as a script runs it: on a store with a
catalog (product ids), a live locator and a live unsupervised index, but no supervised one
and no annotations in the database, it scores the locator on its crops dataset's test
photos and the index, says why the rest was skipped, and writes the scores next to the
versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import harness_api_url
from tests.core.test_evaluate import (
    LOCATOR,
    expected_retrieval,
    publish_vectors,
    truth_of_catalog,
    write_locator,
)
from tiefvision_core.storage.layout import index_evaluation_key, locator_evaluation_key
from tiefvision_core.storage.stores import LocalStore


@pytest.mark.usefixtures("prefect_harness")
def test_evaluate_json_scores_the_live_index_and_says_what_it_skipped(tmp_path: Path) -> None:
    url = (tmp_path / "store").as_uri()
    store = LocalStore(tmp_path / "store")
    truth = truth_of_catalog(tmp_path, store)
    vectors, version = publish_vectors(store, "unsupervised", truth, seed=4, source={})
    train, test, scored = write_locator(store, truth)
    done = subprocess.run(
        [sys.executable, "-m", "tiefvision_cli.main", "evaluate", "--store", url, "--json"],
        env={**os.environ, "PREFECT_API_URL": harness_api_url()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    # No annotations in the database: the boxes the locator's dataset was planned from,
    # of which only the test split is held out (the photos outside it were never annotated).
    locator = report["locator"]
    test_ious = scored.loc[scored["image_id"].isin(test), "iou"].to_numpy()
    assert (locator["images"], locator["never_seen"], locator["trained_on"]) == (
        len(test),
        0,
        len(train),
    )
    assert locator["locator"]["mean_iou"] == pytest.approx(test_ious.mean(), abs=1e-4)
    assert json.loads(store.get_bytes(locator_evaluation_key(LOCATOR))) == locator
    assert report["notes"] == [
        "no supervised index: `tiefvision rebuild-index --space supervised` builds it"
    ]
    got = report["retrieval"]["unsupervised"]
    labels = truth["product_id"].to_numpy()
    p1, p5, map10 = expected_retrieval(vectors, labels, np.arange(len(truth)))
    assert (got["queries"], got["version"]) == (len(truth), version)
    assert got["precision_at_1"] == pytest.approx(p1, abs=1e-4)
    assert got["precision_at_5"] == pytest.approx(p5, abs=1e-4)
    assert got["map_at_10"] == pytest.approx(map10, abs=1e-4)
    key = index_evaluation_key("unsupervised", version)
    assert json.loads(store.get_bytes(key)) == got
    assert report["written"] == [store.uri(locator_evaluation_key(LOCATOR)), store.uri(key)]
