"""``--database`` reaches the training flows as an argument, never through ``os.environ``.

The CLI once set ``TIEFVISION_DATABASE_URL`` for the flow to find: a parameter nobody could
see, which outlived the command's call. Now the flow takes ``database`` as a pydantic
``SecretStr`` (Prefect records it masked among the run's parameters, the URL may hold a
password) and hands it to the task that reads the annotations.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tiefvision_cli.main import app

#: Each training command: the module and name of the flow it runs, and its own module.
TRAINING = {
    "train-locator": ("flows.train_locator", "train_locator", "tiefvision_cli.commands.locator"),
    "train-triplets": (
        "flows.train_triplets",
        "train_triplets",
        "tiefvision_cli.commands.similarity",
    ),
}


@pytest.fixture
def ingested(tmp_path: Path) -> tuple[Path, str]:
    """A small synthetic catalog ingested into a local store: (catalog folder, store URL)."""
    from tiefvision_core.catalog.ingest import ingest_catalog
    from tiefvision_core.catalog.synthetic import generate_catalog
    from tiefvision_core.storage.stores import LocalStore

    out = tmp_path / "cat"
    generate_catalog(out, products=2, views=2, size=(120, 150))
    ingest_catalog(LocalStore(out / "images", create=False), LocalStore(tmp_path / "store"))
    return out, (tmp_path / "store").as_uri()


@pytest.mark.parametrize("command", sorted(TRAINING))
@pytest.mark.parametrize("given", [True, False])
def test_training_commands_pass_the_database_to_their_flow_as_a_secret(
    command: str, given: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, name, cli_module = TRAINING[command]
    monkeypatch.delenv("TIEFVISION_DATABASE_URL", raising=False)
    monkeypatch.setenv("TIEFVISION_DEVICE", "cpu")
    calls: list[dict[str, object]] = []

    def flow(**kwargs: object) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(as_dict=lambda: {"version": "v1"})

    monkeypatch.setattr(f"{module}.{name}", flow)
    monkeypatch.setattr(f"{cli_module}.start_early", lambda: None)  # no Prefect server
    database = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    args = [command, "--store", (tmp_path / "store").as_uri(), "--json"]
    result = CliRunner().invoke(app, [*args, *(["--database", database] if given else [])])

    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    if given:
        assert isinstance(kwargs["database"], SecretStr)
        assert kwargs["database"].get_secret_value() == database
        assert database not in repr(kwargs)  # what a log line or a run record would show
    else:  # the flow reads its settings (TIEFVISION_DATABASE_URL) as it always did
        assert kwargs["database"] is None
    assert "TIEFVISION_DATABASE_URL" not in os.environ


def _import(kind: str, rows: str, tmp_path: Path, store: str, database: str) -> None:
    from tiefvision_cli.commands.annotation_files import run_import

    file = tmp_path / f"{kind}.csv"
    file.write_text(rows)
    assert run_import(kind, file, store, database).refused == []  # type: ignore[arg-type]


def test_snapshot_tasks_read_the_database_they_are_given(
    ingested: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The argument wins over the environment; without it, the environment's database."""
    from tasks import locator, similarity

    out, store = ingested
    given = f"sqlite:///{tmp_path / 'given.sqlite'}"
    _import("boxes", (out / "boxes.csv").read_text(), tmp_path, store, given)
    triplets = "reference,positive,negative\np0000/view-1.jpg,p0000/view-2.jpg,p0001/view-1.jpg\n"
    _import("triplets", triplets, tmp_path, store, given)
    monkeypatch.setenv("TIEFVISION_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite'}")
    monkeypatch.setattr(locator, "get_run_logger", lambda: logging.getLogger("test"))

    assert locator.export_box_snapshot.fn(store, SecretStr(given)).rows == 4
    assert similarity.export_triplet_snapshot.fn(store, SecretStr(given)).rows == 1
    assert locator.export_box_snapshot.fn(store).rows == 0  # the environment's, empty
    assert similarity.export_triplet_snapshot.fn(store, None).rows == 0
