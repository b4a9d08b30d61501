"""The index kinds, declared once: what ``--index-kind``, the flows' ``index_kind``
parameter and :class:`~tiefvision_core.vector_index.vectors.IndexConfig` accept.

A module of its own, without FAISS or NumPy, so the command line can name the choices
in its help and check them before a flow runs without paying for those imports (importing
FAISS alone takes most of a second)."""

from __future__ import annotations

from typing import Literal, get_args

from tiefvision_core.errors import ConfigError, one_of

__all__ = [
    "INDEX_KINDS",
    "INDEX_KIND_CHOICES",
    "IndexKind",
    "IndexKindChoice",
    "check_index_kind",
    "spelled_choices",
]

#: What an index is built as: exact inner products, HNSW or IVF-PQ (the compressed one).
IndexKind = Literal["exact", "hnsw", "ivfpq"]
#: What a user may ask for: a kind, or ``auto`` (exact while the vectors fit, else HNSW).
IndexKindChoice = Literal["auto", IndexKind]

INDEX_KINDS: tuple[IndexKind, ...] = get_args(IndexKind)
INDEX_KIND_CHOICES: tuple[IndexKindChoice, ...] = ("auto", *INDEX_KINDS)


def spelled_choices() -> str:
    """``auto, exact, hnsw or ivfpq``: the choices as help texts and errors write them."""
    return f"{', '.join(INDEX_KIND_CHOICES[:-1])} or {INDEX_KIND_CHOICES[-1]}"


def check_index_kind(kind: str, option: str = "--index-kind") -> IndexKindChoice:
    """``kind`` when it is one of :data:`INDEX_KIND_CHOICES`, else a one-line ConfigError
    naming them (before any flow starts: a typo must not cost a run)."""
    checked = one_of(kind, INDEX_KIND_CHOICES)
    if checked is None:
        raise ConfigError(f"{option} {kind!r}: choose {spelled_choices()}")
    return checked
