"""The ``tiefvision`` command line: one subcommand per flow, plus ``demo`` and ``synth``.

Scripts and schedulers depend on this contract (see docs/cli.md): errors a user can cause
print one line saying what to do and exit with code 2; ``--debug`` shows the traceback.
The commands live in :mod:`tiefvision_cli.commands`, one module per group; this module
lists them in the order ``--help`` shows them and is the console script's entry point.
Flows are imported lazily (inside the commands) so ``tiefvision --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from tiefvision_cli.commands import (
    annotation_files,
    catalog,
    demo,
    deployments,
    err_console,
    evaluate,
    index,
    locator,
    maintenance,
    register,
    serve,
    similarity,
)
from tiefvision_cli.prefect_server import first_word, start_early_for
from tiefvision_core.errors import TiefVisionError

# Defaults for Prefect, which reads them when it is imported (lazily, later): these are a
# library's settings, not a hand-off of ours (a flow gets our values as its arguments).
# Without PREFECT_API_URL each command starts Prefect's temporary server, which gets 20 s by
# default: a busy 2-core machine (a test run, an encoding beside it) can take longer, and
# the command then dies before doing anything.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

app = typer.Typer(
    name="tiefvision",
    help="TiefVision: visual search for product catalogs, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs.")] = False,
) -> None:
    _state["debug"] = debug
    if not verbose:
        _quiet_prefect_console()


def _quiet_prefect_console() -> None:
    """Quiet the terminal only: the Prefect API (and so the UI) still gets every log line,
    and a failing run's traceback goes there, not over the user's one-line error. Read when
    Prefect is imported, so set before :func:`start_early_for` imports it."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


#: Every command, in the order ``tiefvision --help`` lists them; each is named after its
#: function (``import_boxes`` is ``import-boxes``) and its docstring is its help.
COMMANDS = (
    catalog.synth,
    catalog.ingest,
    catalog.encode,
    demo.demo,
    annotation_files.import_boxes,
    annotation_files.import_triplets,
    locator.train_locator,
    locator.locate,
    evaluate.evaluate,
    index.rebuild_index,
    index.reindex,
    index.search,
    similarity.train_triplets,
    deployments.setup_prefect,
    deployments.trigger,
    serve.serve,
    maintenance.gc,
)
for _command in COMMANDS:
    register(app, _command)
app.add_typer(index.index_app, name="index")


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2; anything
    else one line naming the command, our stage and the exception type, and exit code 1.

    Usage errors (unknown option, missing argument) are handled by Typer itself (exit 2).
    """
    argv = sys.argv[1:]
    if not {"--verbose", "-v"} & set(argv[: first_word(argv)]):
        _quiet_prefect_console()
    try:
        start_early_for(argv)
        app()
    except TiefVisionError as error:
        if _state["debug"]:
            raise
        message = escape(str(error))
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:  # a bug or a case nobody checks for: one line, never its text
        if _state["debug"]:
            raise
        from tiefvision_cli.unexpected import unexpected_error_line

        at = first_word(argv)
        line = unexpected_error_line(argv[at] if at < len(argv) else None, error)
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
