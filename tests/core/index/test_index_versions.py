"""Index versions over their life: a killed build leaves nothing the next one does not
clean, pruning leaves no folders or temporary files behind, and versions can be listed and
switched back and forth only to a version that still passes its self-check."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.core.index.test_index import PREFIX, publish, random_vectors
from tiefvision_core.errors import InputError
from tiefvision_core.storage.stores import LocalStore, Store
from tiefvision_core.vector_index.versions import (
    VersionRefused,
    check_space,
    list_versions,
    open_index,
    use_version,
    versions,
)


@pytest.fixture(autouse=True)
def _private_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder and the S3 cache inside the test: what a build leaves there
    is then visible."""
    temp = tmp_path / "systemp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return temp


def files_on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


_KILLED_BUILD = """
import os, signal, sys
import numpy as np
from tests.core.index.test_index import publish, random_vectors
from tiefvision_core.vector_index.vectors import build_index
from tiefvision_core.storage.stores import LocalStore

def build(stored):
    os.kill(os.getpid(), signal.SIGKILL)  # killed once the vectors are written

publish(LocalStore(sys.argv[1]), random_vectors(64, seed=3), build=build)
"""


def test_a_killed_build_leaves_nothing_the_next_build_keeps(tmp_path: Path, _private_temp):
    root = tmp_path / "store"
    store = LocalStore(root)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_BUILD), str(root)],
        cwd=Path(__file__).parents[3],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    left = files_on_disk(root)
    assert any(name.endswith("vectors.npy") for name in left), left  # it did get that far
    assert not list(_private_temp.iterdir())  # no copy of the vectors in the temp folder
    assert versions(store, "unsupervised") == []

    version = publish(store, random_vectors(32, seed=4))
    assert files_on_disk(root / "indexes") == {
        "unsupervised",
        "unsupervised/CURRENT",
        f"unsupervised/{version.version}",
        *(
            f"unsupervised/{version.version}/{name}"
            for name in ("vectors.npy", "index.faiss", "ids.parquet", "metadata.json")
        ),
        ".staging",
    }
    assert not list((root / "indexes" / ".staging").iterdir())


def test_pruning_leaves_no_folders_and_removes_killed_versions(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    # An earlier release's killed build: a version folder holding only a temporary file.
    killed = root / PREFIX / "20200101T000000000000Z-exact"
    killed.mkdir(parents=True)
    (killed / ".tmp-vectors.npy").write_bytes(b"\0" * 1000)
    # A version being written right now by another machine: young, never pruned.
    running = root / PREFIX / f"{versions_stamp()}-exact"
    running.mkdir(parents=True)
    (running / "vectors.npy").write_bytes(b"\0" * 10)

    made = [publish(store, random_vectors(20, seed=s), keep=2) for s in range(4)]
    folders = {p.name for p in (root / PREFIX).iterdir() if p.is_dir()}
    assert folders == {made[-2].version, made[-1].version, running.name}
    pruned = [name for version in made for name in version.pruned]
    assert sorted(pruned) == sorted([killed.name, made[0].version, made[1].version])


def versions_stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def test_list_shows_sizes_self_check_and_the_live_version(store: Store) -> None:
    first = publish(store, random_vectors(40, seed=1))
    second = publish(store, random_vectors(25, seed=2))
    listed = list_versions(store, "unsupervised")
    assert [v.version for v in listed] == [first.version, second.version]
    assert [v.live for v in listed] == [False, True]
    assert [v.rows for v in listed] == [40, 25]
    assert all(v.finished and v.kind == "exact" for v in listed)
    for info in listed:
        stored = sum(i.size for i in store.list(f"{PREFIX}{info.version}/"))
        assert info.bytes == stored > 0
        assert info.self_check["found_first"] == info.self_check["queries"] > 0
        assert info.created_at


def test_use_rolls_back_and_forward(store: Store) -> None:
    first = publish(store, random_vectors(40, seed=1))
    second = publish(store, random_vectors(25, seed=2))
    switched = use_version(store, "unsupervised", first.version)
    assert switched.live and switched.self_check["found_first"] == switched.self_check["queries"]
    assert store.read_pointer(PREFIX + "CURRENT") == first.version
    assert len(open_index(store, "unsupervised").ids) == 40
    use_version(store, "unsupervised", second.version)
    assert open_index(store, "unsupervised").version == second.version


def test_use_refuses_gone_unfinished_and_failing_versions(store: Store, tmp_path) -> None:
    good = publish(store, random_vectors(40, seed=1))
    bad = publish(store, random_vectors(40, seed=2))
    live = store.read_pointer(PREFIX + "CURRENT")

    with pytest.raises(VersionRefused, match="does not exist"):
        use_version(store, "unsupervised", "20200101T000000000000Z-exact")
    store.put_bytes(f"{PREFIX}20200102T000000000000Z-exact/vectors.npy", b"\0" * 8)
    with pytest.raises(VersionRefused, match="unfinished"):
        use_version(store, "unsupervised", "20200102T000000000000Z-exact")

    # The stored self-check says it passed, but its vectors no longer match its index
    # (overwritten on storage): the check is run again, and refuses.
    path = tmp_path / "other.npy"
    np.save(path, random_vectors(40, seed=9).astype(np.float16))
    store.put_bytes(f"{PREFIX}{bad.version}/vectors.npy", path.read_bytes())
    assert list_versions(store, "unsupervised")[-1].self_check["found_first"] == 40
    use_version(store, "unsupervised", good.version)
    with pytest.raises(VersionRefused, match="fails its self-check") as refused:
        use_version(store, "unsupervised", bad.version)
    assert "\n" not in str(refused.value) and "tiefvision index list" in str(refused.value)
    assert store.read_pointer(PREFIX + "CURRENT") == good.version != live


def test_delete_prefix_leaves_no_empty_folders(tmp_path: Path) -> None:
    """A deleted prefix is gone on a local store as on S3: no empty folder stays."""
    store = LocalStore(tmp_path / "store")
    for key in ("boxes/v1/part-a.parquet", "boxes/v1/_plans/p.parquet", "boxes/v2/part-b.parquet"):
        store.put_bytes(key, b"x")
    assert store.delete_prefix("boxes/v1/") == 2
    assert files_on_disk(store.root) == {"boxes", "boxes/v2", "boxes/v2/part-b.parquet"}


def test_check_space_accepts_the_two_spaces_and_names_them_otherwise() -> None:
    assert check_space("supervised") == "supervised"
    with pytest.raises(InputError, match="choose one of unsupervised, supervised"):
        check_space("semantic")


def test_a_version_pruned_while_it_is_listed_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two rebuilds racing: one prunes a version folder while the other walks it (a CI run
    # once failed a publish there with FileNotFoundError from the walk).
    store = LocalStore(str(tmp_path / "store"))
    kept = publish(store, random_vectors(20, seed=1))
    doomed = publish(store, random_vectors(20, seed=2), keep=2)
    walk = Path.rglob

    def pruned_meanwhile(self: Path, pattern: str):
        if self.name == doomed.version:
            shutil.rmtree(self)  # the other publish's prune, between listing and walking
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return walk(self, pattern)

    monkeypatch.setattr(Path, "rglob", pruned_meanwhile)
    listed = list_versions(store, "unsupervised")
    assert [v.version for v in listed] == [kept.version]
    assert listed[0].rows == 20 and listed[0].bytes > 0
