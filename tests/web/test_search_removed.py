"""The deletion promise: once ingest removes a photo (or re-shoots it: other bytes), no
search answers with it, from the command line or the API, whichever index version is live
— while a reindex is between publishing its manifest and switching the index, and after the
regression gate refused the new index version (the live one still holds the photo).

Each test works on its own copy of the session's indexed catalog (real ingest, encoding and
index update); the gate's refusal is a stand-in (its numbers are tested in
``tests/core/index/test_gate.py``): this checks what search does while it stands."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.cli import one_line_error, run_cli
from tiefvision_core.catalog.ingest import ingest_catalog
from tiefvision_core.catalog.manifest import read_manifest
from tiefvision_core.config import load_settings
from tiefvision_core.encoding.encode import encode_catalog
from tiefvision_core.encoding.runtime import EncodingRuntime
from tiefvision_core.index import updates
from tiefvision_core.index.gate import GatePolicy
from tiefvision_core.index.search import search_by_id
from tiefvision_core.index.updates import update_space
from tiefvision_core.storage.layout import index_current
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.storage.urls import open_store
from tiefvision_core.vector_index.pointer import RegressionRefused
from tiefvision_core.vector_index.versions import open_index
from tiefvision_web import create_app


@dataclass(frozen=True)
class Copy:
    """A copy of the indexed catalog: its store, its photo folder and a client over it."""

    root: Path
    store: Store
    url: str
    images: Path
    client: TestClient


@pytest.fixture
def copy(indexed_catalog, tmp_path: Path, lite0) -> Copy:
    shutil.copytree(indexed_catalog.root / "store", tmp_path / "store")
    shutil.copytree(indexed_catalog.photos, tmp_path / "images")
    url = (tmp_path / "store").as_uri()
    settings = load_settings(store_url=url, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    client = TestClient(create_app(settings, encoder=lite0, reload_interval=0))
    return Copy(tmp_path, open_store(url), url, tmp_path / "images", client)


@dataclass(frozen=True)
class Gone:
    removed: frozenset[str]  # ids of a product taken out of the catalog
    reshot: frozenset[str]  # ids of photos whose file now holds other bytes
    removed_file: Path  # one removed photo's bytes, kept to search with

    @property
    def ids(self) -> frozenset[str]:
        return self.removed | self.reshot


def remove_and_reshoot(copy: Copy) -> Gone:
    """What the next reindex's ingest finds: one product gone, one photo re-shot (the
    bytes of another product's photo); then that ingest runs: the manifest moves."""
    ids = {r["rel_path"]: r["image_id"] for r in read_manifest(copy.store).to_pylist()}
    product = sorted({path.split("/")[0] for path in ids})[1]
    removed = frozenset(i for path, i in ids.items() if path.startswith(f"{product}/"))
    kept_file = copy.root / "removed.jpg"
    first = sorted(p for p in ids if p.startswith(f"{product}/"))[0]
    shutil.copy(copy.images / first, kept_file)
    shutil.rmtree(copy.images / product)
    others = sorted(p for p in ids if not p.startswith(f"{product}/"))
    (copy.images / others[0]).write_bytes((copy.images / others[-1]).read_bytes())
    ingest_catalog(LocalStore(copy.images, create=False), copy.store)
    return Gone(removed, frozenset({ids[others[0]]}), kept_file)


def encode_new_bytes(store: Store, lite0) -> None:
    runtime = EncodingRuntime(lite0, device="cpu", batch_size=8, workers=0)
    encode_catalog(store, runtime, kind="box", shard_size=64, flips=True)


def live_ids(copy: Copy) -> list[str]:
    listing = copy.client.get("/api/images", params={"per_page": 200}).json()
    return [image["image_id"] for image in listing["images"]]


def api_hits(copy: Copy, unwanted: frozenset[str]) -> tuple[int, int, int]:
    """Searches by every live photo but ``unwanted`` ones, k = the whole catalog: (answers,
    answers holding an ``unwanted`` photo, hits without the photo's width and height: a
    photo the service cannot show)."""
    holding = unservable = 0
    queries = [q for q in live_ids(copy) if q not in unwanted]
    for query in queries:
        answer = copy.client.get("/api/search", params={"id": query, "k": 100})
        assert answer.status_code == 200, answer.text
        hits = answer.json()["results"]
        holding += any(hit["image_id"] in unwanted for hit in hits)
        unservable += sum(not (hit["width"] and hit["height"]) for hit in hits)
    return len(queries), holding, unservable


def unfiltered_hits(store: Store, gone: Gone) -> int:
    """Hits of ``gone`` photos in the live index searched as it is (no catalog): what the
    service answered before removal held whatever version is live."""
    opened = open_index(store, "unsupervised")
    return sum(
        hit.image_id in gone.ids
        for query in opened.column("image_id")
        if query not in gone.ids
        for hit in search_by_id(opened, query, k=100).results
    )


def cli_hits(copy: Copy, gone: Gone, query: str) -> set[str]:
    """The ids `tiefvision search --id` and `tiefvision search FILE` (the removed photo's
    own bytes) answer with, k = the whole catalog."""
    found: set[str] = set()
    for target in (["--id", query], [str(gone.removed_file)]):
        done = run_cli("search", *target, "-k", "100", "--store", copy.url, "--json")
        assert done.returncode == 0, done.stderr
        found |= {hit["image_id"] for hit in json.loads(done.stdout)["results"]}
    return found


def assert_gone_everywhere(copy: Copy, gone: Gone) -> None:
    """No answer holds a removed or re-shot photo, and asking by one is refused."""
    assert unfiltered_hits(copy.store, gone) > 0  # the live version does rank them
    answers, holding, unservable = api_hits(copy, gone.ids)
    assert answers > 0 and (holding, unservable) == (0, 0)
    live = [q for q in live_ids(copy) if q not in gone.reshot]
    assert not cli_hits(copy, gone, live[0]) & gone.ids
    removed = sorted(gone.removed)[0]
    assert copy.client.get("/api/search", params={"id": removed}).status_code == 404
    line = one_line_error(run_cli("search", "--id", removed, "--store", copy.url))
    assert "is not in the catalog any more" in line
    [reshot] = gone.reshot
    answer = copy.client.get("/api/search", params={"id": reshot})
    assert answer.status_code == 404 and "changed since" in answer.json()["detail"]


def test_during_a_reindex_removed_photos_are_never_answered(copy: Copy, lite0) -> None:
    """Once the manifest moves, removed photos are not answered while the index CURRENT
    still names the version that holds them, nor after the update switches it (where the
    re-shot photo is answered again, with its new bytes)."""
    old = copy.store.read_pointer(index_current("unsupervised"))

    gone = remove_and_reshoot(copy)
    assert copy.store.read_pointer(index_current("unsupervised")) == old  # not moved yet
    assert_gone_everywhere(copy, gone)

    encode_new_bytes(copy.store, lite0)
    update = update_space(copy.store, lite0, "unsupervised", gate=None)
    assert update.after != old and copy.store.read_pointer(index_current("unsupervised")) == (
        update.after
    )
    assert api_hits(copy, gone.removed) == (len(live_ids(copy)), 0, 0)
    [reshot] = gone.reshot
    assert copy.client.get("/api/search", params={"id": reshot}).status_code == 200


def test_a_gate_refusal_keeps_removed_photos_out_of_search(
    copy: Copy, lite0, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reindex that removed the photos had its new index version refused: the live
    version still holds them, and search still never answers with them."""
    old = copy.store.read_pointer(index_current("unsupervised"))
    gone = remove_and_reshoot(copy)
    encode_new_bytes(copy.store, lite0)

    def refuse(store: Store, space: str, policy: GatePolicy | None = None):
        def gate(version: str) -> dict[str, object]:
            raise RegressionRefused(f"index {space} {version} mAP@10 0.100 < live", {})

        return gate

    monkeypatch.setattr(updates, "regression_gate", refuse)
    with pytest.raises(RegressionRefused):
        update_space(copy.store, lite0, "unsupervised")
    assert copy.store.read_pointer(index_current("unsupervised")) == old
    assert_gone_everywhere(copy, gone)
