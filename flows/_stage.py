"""A flow whose parameters are a stage's parameters model (:mod:`tiefvision_core.parameters`).

Why: a stage's parameters used to be written in the CLI command, the flow's signature and
docstring, and the task. Here the model is the one declaration: :func:`stage_flow` gives
the flow a keyword signature derived from it (one parameter per field, with its type,
bounds and default), so Prefect's parameter schema, the deployment's form in the UI and
the validation of a triggered run all follow the model, the field names stay the
deployment parameters they always were, and the flow's body receives one validated model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from prefect import Flow, flow
from prefect.utilities.hashing import file_hash

from tiefvision_core.parameters.groups import StageParameters

__all__ = ["stage_flow", "stage_signature"]

P = TypeVar("P", bound=StageParameters)
R = TypeVar("R")


def stage_signature(parameters: type[StageParameters]) -> inspect.Signature:
    """One keyword parameter per field, in the form's order; each annotation carries the
    field's bounds (``Annotated[float, Ge(1)]``), which Prefect's schema keeps."""
    fields = parameters.model_fields
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=(
                    inspect.Parameter.empty
                    if fields[name].is_required()
                    else fields[name].get_default(call_default_factory=True)
                ),
                annotation=(
                    Annotated[(fields[name].annotation, *fields[name].metadata)]
                    if fields[name].metadata
                    else fields[name].annotation
                ),
            )
            for name in parameters.field_order()
        ]
    )


def _docstring(summary: str | None, parameters: type[StageParameters]) -> str:
    """The body's docstring with an ``Args:`` section written from the field descriptions
    (Prefect reads it for the form's help texts)."""
    fields = parameters.model_fields
    lines = [f"    {name}: {fields[name].description or ''}" for name in parameters.field_order()]
    return "\n".join([inspect.cleandoc(summary or ""), "", "Args:", *lines])


def stage_flow(parameters: type[P], **options: Any) -> Callable[[Callable[[P], R]], Flow[..., R]]:
    """``@flow(**options)`` for a body that takes the stage's parameters model.

    The flow is called, deployed and triggered with keyword arguments named after the
    model's fields; they are validated into the model before the body runs.
    """

    def decorate(body: Callable[[P], R]) -> Flow[..., R]:
        def entry(**values: Any) -> R:
            return body(parameters.model_validate(values))

        entry.__signature__ = stage_signature(parameters)  # type: ignore[attr-defined]
        entry.__doc__ = _docstring(body.__doc__, parameters)
        entry.__name__, entry.__qualname__ = body.__name__, body.__qualname__
        entry.__module__ = body.__module__
        source = inspect.getsourcefile(body)
        if source and "version" not in options:
            options["version"] = file_hash(source)  # the stage's module, not this one
        return flow(**options)(entry)

    return decorate
