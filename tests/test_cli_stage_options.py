"""A stage command's options are its stage's parameters model (tiefvision_core.parameters):
every field is an option with the model's help and bounds, and a value the model refuses
is one line naming the option, like every other bad flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from tests.cli import one_line_error, run_cli
from tiefvision_cli.main import app
from tiefvision_cli.parameters import option_flag
from tiefvision_core.parameters import stages

#: Each stage command and the model its options come from.
STAGE_COMMANDS = {
    "ingest": stages.IngestParameters,
    "encode": stages.EncodeParameters,
    "locate": stages.LocateParameters,
    "train-locator": stages.TrainLocatorParameters,
    "rebuild-index": stages.RebuildIndexParameters,
    "reindex": stages.ReindexParameters,
    "train-triplets": stages.TrainTripletsParameters,
    "gc": stages.GcParameters,
}

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(STAGE_COMMANDS))
def test_every_parameter_of_the_stage_is_an_option_with_its_help(name: str) -> None:
    model = STAGE_COMMANDS[name]
    options = {opt: param for param in COMMANDS[name].params for opt in getattr(param, "opts", [])}
    for field, info in model.model_fields.items():
        flag = option_flag(field)
        assert flag in options, f"{name} lacks {flag}"
        assert options[flag].help == info.description, (name, flag)


def test_bounds_of_the_model_bound_the_option() -> None:
    lock_ttl = next(p for p in COMMANDS["rebuild-index"].params if p.name == "lock_ttl")
    assert lock_ttl.min == 1


def test_a_refused_choice_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli("rebuild-index", "--space", "both", "--store", str(tmp_path / "s"))
    )
    assert "--space 'both': choose unsupervised or supervised" in line
    assert not (tmp_path / "s").exists()  # refused before the store was opened
