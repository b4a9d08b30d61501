"""``tiefvision index list|use``: versions as scripts read them, a rollback that moves
CURRENT, and one-line refusals for versions that cannot be made live."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.core.index.test_index import PREFIX, publish, random_vectors
from tests.test_cli import _one_line_error, _run
from tiefvision_core.storage.stores import LocalStore


def test_list_use_and_refusals(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    url = store.url
    first = publish(store, random_vectors(30, seed=1))
    second = publish(store, random_vectors(20, seed=2))

    listed = _run("index", "list", "--store", url, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["rows"], r["live"]) for r in rows] == [
        (first.version, 30, False),
        (second.version, 20, True),
    ]
    assert all(r["bytes"] > 0 and r["self_check"]["queries"] > 0 for r in rows)
    table = _run("index", "list", "--store", url, "--space", "unsupervised")
    assert first.version in table.stdout and second.version in table.stdout

    used = _run("index", "use", first.version, "--store", url, "--json")
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["before"] == second.version
    assert store.read_pointer(PREFIX + "CURRENT") == first.version

    line = _one_line_error(_run("index", "use", "20200101T000000000000Z-exact", "--store", url))
    assert "does not exist" in line and "tiefvision index list" in line
    other = tmp_path / "other.npy"
    np.save(other, random_vectors(20, seed=9).astype(np.float16))
    store.put_bytes(f"{PREFIX}{second.version}/vectors.npy", other.read_bytes())
    line = _one_line_error(_run("index", "use", second.version, "--store", url))
    assert "fails its self-check" in line
    assert store.read_pointer(PREFIX + "CURRENT") == first.version
    line = _one_line_error(_run("index", "list", "--store", url, "--space", "nope"))
    assert "unknown space" in line
