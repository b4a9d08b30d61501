"""Where the forward pass runs: PyTorch eager (the reference, and the CUDA path) or ONNX
Runtime on the CPU.

Why a second runtime: on the small CPUs most users start with, PyTorch eager runs
EfficientNet-Lite0 at a quarter to half of what the cores allow, while ONNX Runtime's fused
CPU kernels run the same graph, in float32, 2-3x faster with maps equal to PyTorch's within
:data:`ONNX_TOLERANCE` (measured in ``docs/benchmarks.md``). OpenVINO was measured too: its
float32 path was no faster than ONNX Runtime here, and its default bf16 moves activations
by up to 1.5, so it is not shipped.

The exported graph is cached in the user cache, named by the encoder's version and a digest
of its parameters (random ``--weights none`` encoders differ per build), so a process pays
the export (a few seconds) once per machine, not per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import torch

from tiefvision_core.encoders import Encoder
from tiefvision_core.errors import ConfigError
from tiefvision_core.paths import user_cache_dir

__all__ = [
    "BACKENDS",
    "ONNX_TOLERANCE",
    "BackendName",
    "Forward",
    "OnnxForward",
    "backend_candidates",
    "onnx_available",
    "onnx_model_path",
]

log = logging.getLogger(__name__)

# ONNX Runtime's Linux wheels carry Microsoft's 1DS telemetry: at import it writes a session
# file (``$TMPDIR/.ses``) and may post events to an internet address. Nothing here may reach
# the network, and a killed run must leave no file behind: off before the library loads
# (``disable_telemetry_events()`` comes too late for the file). A user's own setting wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

BackendName = Literal["auto", "torch", "onnxruntime"]
BACKENDS: tuple[BackendName, ...] = ("auto", "torch", "onnxruntime")

#: Largest absolute difference allowed between ONNX Runtime's float32 maps and PyTorch's
#: (activations of the built-in encoders reach about 6; measured differences are ~3e-5).
ONNX_TOLERANCE = 1e-3

#: Bumped when the export itself changes (opset, the graph's input), so cached files of an
#: older export are never reused.
_EXPORT_REVISION = "1"

Forward = Callable[[torch.Tensor], torch.Tensor]


def onnx_available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package the exporter needs) are installed.

    Found, not imported: importing ``onnx`` takes about 0.8 s here (its ``ml_dtypes``), and
    every command that builds a runtime asks — a one-photo query or a no-op ``encode``
    that never exports or runs a graph must not pay it."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def backend_candidates(backend: str, device: torch.device) -> tuple[str, ...]:
    """The backends worth measuring for ``backend`` on ``device``: ``auto`` means every one
    that can run there (ONNX Runtime only on the CPU), a forced one just itself."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError("--backend onnxruntime runs on the CPU only; use --device cpu")
        if not onnx_available():
            raise ConfigError(
                "--backend onnxruntime: the packages onnxruntime and onnx are not installed; "
                "pip install onnxruntime onnx, or use --backend torch"
            )
        return ("onnxruntime",)
    if backend == "torch" or device.type != "cpu" or not onnx_available():
        return ("torch",)
    return ("torch", "onnxruntime")


def _parameters_digest(encoder: Encoder) -> str:
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def onnx_model_path(encoder: Encoder) -> Path:
    """Where the exported graph of ``encoder`` lives in the user cache."""
    name = (
        f"{encoder.version}-{_parameters_digest(encoder)}-t{torch.__version__}-r{_EXPORT_REVISION}"
    )
    return user_cache_dir() / "onnx" / f"{name.replace('/', '_').replace('+', '_')}.onnx"


def _export(encoder: Encoder, path: Path) -> None:
    """uint8 (N, 3, H, W) → float32 maps, batch and both sides dynamic. Written to a
    temporary name and renamed: concurrent processes never read half a file."""
    size = encoder.preprocessing.crop_size
    example = torch.zeros((1, 3, size, size), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    was_training = encoder.training
    encoder.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic
        torch.onnx.export(
            encoder.cpu(),
            (example,),
            str(tmp),
            input_names=["pixels"],
            output_names=["maps"],
            dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}, "maps": {0: "n", 2: "gh", 3: "gw"}},
            opset_version=17,
            dynamo=False,  # the dynamo exporter takes minutes for this graph; tracing, seconds
        )
    encoder.train(was_training)
    os.replace(tmp, path)


@dataclass
class OnnxForward:
    """The encoder's forward pass through an ONNX Runtime session on the CPU.

    Inputs whose sides are not multiples of the encoder's stride go through PyTorch: the
    exported graph fixes the "same" padding that such sides would change (every input the
    pipeline builds — 224-pixel crops, whole photos sized by ``whole_input_size`` — is a
    multiple).
    """

    encoder: Encoder
    threads: int

    def __post_init__(self) -> None:
        import onnxruntime as ort

        path = onnx_model_path(self.encoder)
        if not path.exists():
            log.info("exporting %s to ONNX (once per machine): %s", self.encoder.name, path)
            _export(self.encoder, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, self.threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # a corrupt cache file: export again, once
            path.unlink(missing_ok=True)
            _export(self.encoder, path)
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        self._stride = self.encoder.geometry.stride

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        if height % self._stride or width % self._stride:
            with torch.inference_mode():
                return self.encoder.encode_maps(pixels)
        array = np.ascontiguousarray(pixels.numpy(), dtype=np.uint8)
        (maps,) = self._session.run(None, {"pixels": array})
        return torch.from_numpy(cast(np.ndarray, maps))


def build_forward(name: str, encoder: Encoder, threads: int) -> Forward:
    """The forward pass of backend ``name`` (``torch`` or ``onnxruntime``) for ``encoder``."""
    if name == "onnxruntime":
        with contextlib.suppress(AttributeError):
            encoder = encoder.to(memory_format=torch.contiguous_format)
        return OnnxForward(encoder, threads)
    return encoder.encode_maps
