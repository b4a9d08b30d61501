"""The choices a device or backend parameter takes, shared by the settings and the stage
models.

Here rather than in :mod:`tiefvision_core.config` so that the CLI builds its options from
the stage models without importing the settings machinery (``pydantic_settings``): what
``tiefvision --help`` loads stays small.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Backend", "Device"]

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "torch", "onnxruntime"]
