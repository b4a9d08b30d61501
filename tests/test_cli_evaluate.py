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
from tests.core.evaluation.test_evaluate import (
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


def test_evaluate_history_shows_every_version_s_stored_scores_oldest_first(
    tmp_path: Path,
) -> None:
    """Three unsupervised versions — one scored by evaluate, one by the regression gate
    that refused it, one never — and the locator: ``--history`` lists each with the
    numbers its evaluation.json holds, oldest first, the live one marked; no flow runs."""
    from tiefvision_core.evaluation.evaluate import evaluate_locator, evaluate_space
    from tiefvision_core.index.gate import regression_gate
    from tiefvision_core.vector_index.pointer import RegressionRefused
    from tiefvision_core.vector_index.publish import publish_index

    url = (tmp_path / "store").as_uri()
    store = LocalStore(tmp_path / "store")
    truth = truth_of_catalog(tmp_path, store)
    write_locator(store, truth)
    evaluate_locator(store)
    _, first = publish_vectors(store, "unsupervised", truth, seed=4, source={})
    evaluate_space(store, "unsupervised")
    ids = truth[["image_id", "sha256", "product_id"]].assign(box=[[0, 0, 1, 1]] * len(truth))
    vectors = np.eye(len(truth), 32, dtype=np.float32)  # every photo its own direction
    with pytest.raises(RegressionRefused) as refused:  # scored, refused, kept on storage
        publish_index(
            store,
            "unsupervised",
            vectors,
            ids,
            grid=(32, 1, 1),
            source={},
            gate=regression_gate(store, "unsupervised"),
        )
    gated = str(refused.value.comparison["new"])
    _, last = publish_vectors(store, "unsupervised", truth, seed=5, source={})  # unscored

    command = [sys.executable, "-m", "tiefvision_cli.main", "evaluate", "--history"]
    done = subprocess.run(
        [*command, "--store", url, "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)["history"]
    assert [(r["what"], r["version"]) for r in rows] == [
        ("locator", LOCATOR),
        ("index", first),
        ("index", gated),
        ("index", last),
    ]
    assert [r["live"] for r in rows] == [True, False, False, True]
    assert [r["evaluated"] for r in rows] == [True, True, True, False]
    stored = json.loads(store.get_bytes(locator_evaluation_key(LOCATOR)))
    assert rows[0]["mean_iou"] == stored["locator"]["mean_iou"]
    assert rows[0]["fallbacks"] == stored["fallbacks"]
    for row, version in ((rows[1], first), (rows[2], gated)):
        scores = json.loads(store.get_bytes(index_evaluation_key("unsupervised", version)))
        for name in ("map_at_10", "precision_at_1", "precision_at_5", "products", "queries"):
            assert row[name] == scores[name], (version, name)
    assert refused.value.comparison["new_scores"]["map_at_10"] == rows[2]["map_at_10"]

    table = subprocess.run(
        [*command, "--store", url, "--space", "unsupervised"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr[-2000:]
    assert LOCATOR not in table.stdout  # --space: that space only
    assert f"{rows[1]['map_at_10']:.3f}" in table.stdout and "not evaluated" in table.stdout
