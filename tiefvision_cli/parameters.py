"""A command's options derived from its stage's parameters model.

Why: the options of ``rebuild-index``, ``reindex``, ``encode`` … are the flow's
parameters; writing them again as Typer options (with their help and bounds) is how they
drifted apart before. :func:`stage_options` turns each field of the model into one
option (``lock_ttl`` → ``--lock-ttl``, its description as help, its bounds as
``min``/``max``) and hands the command one validated model; the command declares only what
is its own (``--json``, a query photo).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Concatenate, TypeVar

import annotated_types
import typer
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from tiefvision_core.errors import ConfigError
from tiefvision_core.parameters.groups import StageParameters

__all__ = ["option_flag", "stage_options"]

P = TypeVar("P", bound=StageParameters)


def option_flag(name: str) -> str:
    """A field's option: ``lock_ttl`` → ``--lock-ttl``."""
    return "--" + name.replace("_", "-")


def _without_none(annotation: Any) -> Any:
    """``X | None`` → ``X``: on the command line the default says "not given"."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _choices(annotation: Any) -> tuple[str, ...]:
    """A ``Literal``'s values (also inside a list), else none."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) in (tuple, list):
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(value) for value in typing.get_args(annotation))
    return ()


def _option_type(annotation: Any) -> Any:
    """The type Typer parses the option as: a secret or a choice read as text (the model
    checks a choice and names the valid ones, see :func:`_invalid`), a variable-length
    tuple as a repeated option."""
    annotation = _without_none(annotation)
    if typing.get_origin(annotation) in (tuple, list):
        item = str if _choices(annotation) else typing.get_args(annotation)[0]
        return list[item]  # type: ignore[valid-type]
    if annotation is SecretStr or _choices(annotation):
        return str
    return annotation


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """A field's closed numeric bounds as Typer's ``min``/``max`` (shown in ``--help``);
    an open bound (``gt``, ``lt``) is left to the model, which names the option too."""
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
    return bounds


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """One field as a Typer option; a required field is a required option."""
    option_type = _option_type(field.annotation)
    flag = option_flag(name)
    default: Any = inspect.Parameter.empty
    if not field.is_required():
        value = field.get_default(call_default_factory=True)
        default = None if isinstance(value, tuple | list) else value  # None: the model's
    if option_type is bool:  # both spellings, as the commands always took them
        flag = f"{flag}/--no-{flag[2:]}"
    choices = _choices(field.annotation)
    metavar = f"[{'|'.join(choices)}]" if choices else None
    info = typer.Option(flag, help=field.description, metavar=metavar, **_bounds(field))
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[option_type, info],
    )


def _invalid(error: ValidationError, parameters: type[StageParameters]) -> ConfigError:
    """A model's refusal as one line naming the option and the value (and for a choice,
    the valid ones), like every other bad flag."""
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    where = f"{option_flag(name)} {first['input']!r}" if name else "options"
    choices = _choices(parameters.model_fields[name].annotation) if name else ()
    if choices:
        return ConfigError(f"{where}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    return ConfigError(f"{where}: {first['msg']}")


def stage_options(
    parameters: type[P],
) -> Callable[[Callable[Concatenate[P, ...], None]], Callable[..., None]]:
    """Decorate a command whose first parameter takes ``parameters``: the command gets one
    option per field (before its own) and is called with the validated model."""

    def decorate(command: Callable[Concatenate[P, ...], None]) -> Callable[..., None]:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            parameter.replace(
                kind=inspect.Parameter.KEYWORD_ONLY,
                annotation=hints.get(parameter.name, parameter.annotation),
            )
            for parameter in list(inspect.signature(command).parameters.values())[1:]
        ]
        fields = parameters.model_fields
        options = [_option(name, fields[name]) for name in parameters.field_order()]

        signature = inspect.Signature([*options, *own])

        def run(**arguments: Any) -> None:
            bound = signature.bind(**arguments)  # called as a function too (tests, demo)
            bound.apply_defaults()
            values = dict(bound.arguments)
            given = {name: values.pop(name) for name in fields}
            given = {
                name: value
                for name, value in given.items()
                if value is not None or fields[name].get_default(call_default_factory=True) is None
            }
            try:
                model = parameters.model_validate(given)
            except ValidationError as error:
                raise _invalid(error, parameters) from None
            command(model, **values)

        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        run.__name__, run.__qualname__ = command.__name__, command.__qualname__
        run.__module__, run.__doc__ = command.__module__, command.__doc__
        return run

    return decorate
