"""Errors a user can cause, one type per kind.

Why: the CLI prints ``str(error)`` of a :class:`TiefVisionError` as one line and exits
non-zero, without a traceback. So every message must say what went wrong *and what to do*;
anything that is not a ``TiefVisionError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

__all__ = [
    "ConfigError",
    "ImageRejected",
    "IncompatibleModel",
    "InputError",
    "StorageAuthError",
    "StorageError",
    "StorageNotFound",
    "StorageUnreachable",
    "TiefVisionError",
    "WeightsNotFound",
    "one_of",
]

Choice = TypeVar("Choice", bound=str)


def one_of(value: str, choices: Iterable[Choice]) -> Choice | None:
    """The member of ``choices`` that ``value`` equals, else None (the caller raises the
    error that names them): a user's string checked into the choices' Literal type, no cast.
    Here, beside the errors, because the command line checks its flags with it before it
    imports anything heavier."""
    return next((choice for choice in choices if choice == value), None)


class TiefVisionError(Exception):
    """Base of every error caused by user input, settings or the environment."""


class ConfigError(TiefVisionError):
    """A setting or parameter is invalid; the message names it and what is allowed."""


class WeightsNotFound(TiefVisionError):
    """Pretrained weights are not on this machine; the message says where to put them.

    Never answered by a silent fallback to random weights: features from a random network
    look like features, so a missing file would otherwise surface only as bad search results.
    """


class IncompatibleModel(TiefVisionError):
    """A stored model or encoding was made with another encoder version than requested."""


class InputError(TiefVisionError):
    """An input path or file given by the user does not exist or cannot be used."""


class StorageError(TiefVisionError):
    """Storage failed in a way retrying will not fix. Never carries credentials."""


class StorageUnreachable(StorageError):
    """The storage endpoint does not answer (wrong URL, server down)."""


class StorageAuthError(StorageError):
    """The storage server refused the credentials or the bucket does not allow access."""


class StorageNotFound(StorageError, KeyError):
    """An object or bucket that must exist does not."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class ImageRejected(TiefVisionError):
    """An image cannot be used; recorded as a reject with ``reason`` and the run goes on.

    ``reason`` is a short stable code (see :data:`tiefvision_core.catalog.imaging.REJECT_REASONS`),
    ``detail`` a human sentence.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
