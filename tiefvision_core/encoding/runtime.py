"""The encoding runtime: a stream of thousands of crops through one encoder, as fast as the
device allows.

:class:`EncodingRuntime` decodes in ``DataLoader`` worker processes (requests and their
decoding: :mod:`tiefvision_core.encoding.requests`; the inputs themselves:
:mod:`tiefvision_core.encoding.pixels`), runs batched forward passes in ``inference_mode``
with a batch size and memory layout chosen by measurement, autocast and non-blocking copies
on CUDA, and splits a batch that runs out of GPU memory in half instead of failing the run.
The processes it starts exit with the command that owns them.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, lru_cache, partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from tiefvision_core.catalog.imaging import DEFAULT_MAX_PIXELS
from tiefvision_core.encoders import Encoder, get_encoder
from tiefvision_core.encoding.backends import Forward, backend_candidates, build_forward
from tiefvision_core.encoding.requests import (
    CropDataset,
    CropRequest,
    EncodedBatch,
    Groups,
    collate,
)
from tiefvision_core.errors import ConfigError
from tiefvision_core.paths import user_cache_dir
from tiefvision_core.processes import exit_with
from tiefvision_core.storage.urls import DEFAULT_MAX_BYTES

__all__ = [
    "EncodingRuntime",
    "RuntimeConfig",
    "may_start_processes",
    "resolve_device",
    "shared_runtime",
]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present; ``cuda`` without a GPU fails with what to do."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device(device)


def may_start_processes() -> bool:
    """Whether this process may start child processes: a daemonic one may not (Python
    refuses), e.g. a Dask worker under its nanny or a ``multiprocessing.Pool`` worker. There
    the runtime decodes in its own thread instead of in worker processes."""
    return not multiprocessing.current_process().daemon


@cache
def _decoding_context() -> multiprocessing.context.BaseContext:
    """Decoding workers start from a fork server that has this module (torch, Pillow)
    loaded: cheap to start for every shard, and never forked from a process whose other
    threads (Prefect's API client, CUDA) may hold locks — a plain ``fork`` after a Prefect
    flow had run in the same process killed the workers at start.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything that decides how encodings are computed; small, hashable, loggable.

    Flows pass this (not a model) to tasks; each process builds its runtime once from it.
    ``batch_size=None`` means "measure the best one for this device". On a multi-core CPU,
    streams of at least ``pool_min_images`` run on ``cpu_processes`` single-threaded
    encoding processes (default: one per thread allowed; 0 or 1 = decode in a DataLoader
    worker, forward here). ``backend``: ``auto`` measures PyTorch against ONNX Runtime on
    the CPU (see :mod:`~tiefvision_core.encoding.backends`) and keeps the faster.
    """

    encoder: str = "efficientnet_lite0"
    weights: str = "default"
    device: str = "auto"
    batch_size: int | None = None
    threads: int | None = None
    workers: int | None = None
    compile: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    cpu_processes: int | None = None
    pool_min_images: int = 64
    max_bytes: int = DEFAULT_MAX_BYTES
    backend: str = "auto"

    def build(self) -> EncodingRuntime:
        return EncodingRuntime(
            get_encoder(self.encoder, self.weights),
            device=self.device,
            backend=self.backend,
            batch_size=self.batch_size,
            threads=self.threads,
            workers=self.workers,
            compile=self.compile,
            max_pixels=self.max_pixels,
            max_bytes=self.max_bytes,
            processes_from=self,
        )


@lru_cache(maxsize=2)
def shared_runtime(config: RuntimeConfig) -> EncodingRuntime:
    """One runtime per process and configuration: building and tuning it takes seconds, and
    a command that checks for work before its flow runs hands the flow the same one."""
    return config.build()


@dataclass(frozen=True)
class LayoutChoice:
    batch_size: int
    channels_last: bool
    images_per_s: float
    backend: str = "torch"


_TUNE_CACHE: dict[tuple, LayoutChoice] = {}


def _tune_cache_file() -> Path:
    return user_cache_dir() / "layout-choices.json"


class EncodingRuntime:
    """An encoder placed on a device, with the fastest batch size and layout for it.

    Why measured: on a small CPU the best batch is small (cache-resident activations) and
    channels-last often wins; on a GPU it is large. A fixed "batch 32" is 4× slower on this
    2-core machine than batch 4 channels-last. The backend (PyTorch or ONNX Runtime) is one
    more measured choice. Choices are cached per encoder version, device, thread count and
    candidate backends in ``~/.cache/tiefvision``.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        device: str = "auto",
        backend: str = "auto",
        batch_size: int | None = None,
        threads: int | None = None,
        workers: int | None = None,
        compile: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        processes_from: RuntimeConfig | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.cuda = self.device.type == "cuda"
        self._backends = backend_candidates(backend, self.device)
        if not self.cuda and threads:
            torch.set_num_threads(threads)
        cores = threads or torch.get_num_threads()
        # CPU: one decoding process is enough to feed a forward pass that uses every core.
        self.workers = (
            workers if workers is not None else (min(8, os.cpu_count() or 1) if self.cuda else 1)
        )
        if self.workers and not may_start_processes():
            log.info(
                "daemonic process: decoding in the encoding thread, not in %d workers", self.workers
            )
            self.workers = 0
        self.max_pixels, self.max_bytes = max_pixels, max_bytes
        self.encoder = encoder.to(self.device)
        self.amp_dtype = (
            torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        )
        self._cores = cores
        self._onnx: Forward | None = None
        choice = self._choose_layout(batch_size, cores)
        self.batch_size, self.channels_last = choice.batch_size, choice.channels_last
        self.backend = choice.backend
        if self.backend != "onnxruntime":
            self._onnx = None  # measured and lost: give its session's memory back
        if self.channels_last:
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        self._model: Callable[[torch.Tensor], torch.Tensor] = self.encoder.encode_maps
        if self.backend == "onnxruntime":
            self._model = self._onnx_forward()
        elif compile:
            self._model = torch.compile(self.encoder.encode_maps, dynamic=False)
        self.max_forward = self.batch_size  # shrinks when CUDA runs out of memory
        self._pool_config = processes_from
        self._pool: _EncoderPool | None = None

    # -- batch size and layout, by measurement --------------------------------------------
    def _choose_layout(self, batch_size: int | None, cores: int) -> LayoutChoice:
        sizes = (
            [batch_size]
            if batch_size
            else ([8, 16, 32, 64, 128] if self.cuda else [1, 2, 4, 8, 16])
        )
        key = (
            self.encoder.version,
            str(self.device),
            cores,
            torch.__version__,
            tuple(sizes),
            # PyTorch alone keeps the key it had before backends existed (cached choices stay)
            *(() if self._backends == ("torch",) else self._backends),
        )
        if key in _TUNE_CACHE:
            return _TUNE_CACHE[key]
        disk = _tune_cache_file()
        disk_key = json.dumps(key)
        try:
            stored = json.loads(disk.read_text())
        except (OSError, ValueError):
            stored = {}
        if disk_key in stored:
            choice = LayoutChoice(**stored[disk_key])
        else:
            choice = max(self._measurements(sizes), key=lambda c: c.images_per_s)
            stored[disk_key] = choice.__dict__
            try:
                disk.parent.mkdir(parents=True, exist_ok=True)
                tmp = disk.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(stored, indent=1))
                os.replace(tmp, disk)
            except OSError:
                log.warning("could not cache the layout choice in %s", disk)
        log.info(
            "encoder %s on %s through %s: batch %d, %s (%.1f images/s measured)",
            self.encoder.name,
            self.device,
            choice.backend,
            choice.batch_size,
            "channels_last" if choice.channels_last else "NCHW",
            choice.images_per_s,
        )
        _TUNE_CACHE[key] = choice
        return choice

    def _measurements(self, sizes: Sequence[int]) -> Iterator[LayoutChoice]:
        """Every candidate: PyTorch at each batch size in both layouts, ONNX Runtime (whose
        layout is its own) at each batch size."""
        if "torch" in self._backends:
            for size in sizes:
                for layout in (False, True):
                    yield self._measure(size, layout)
        if "onnxruntime" in self._backends:
            for size in sizes:
                yield self._measure_onnx(size)

    def _onnx_forward(self) -> Forward:
        if self._onnx is None:
            self._onnx = build_forward("onnxruntime", self.encoder, self._cores)
        return self._onnx

    def _measure_onnx(self, batch_size: int, seconds: float = 0.6) -> LayoutChoice:
        size = self.encoder.preprocessing.crop_size
        forward = self._onnx_forward()
        batch = torch.randint(0, 255, (batch_size, 3, size, size), dtype=torch.uint8)
        forward(batch)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or done < 2 * batch_size:
            forward(batch)
            done += batch_size
        rate = done / (time.perf_counter() - started)
        return LayoutChoice(batch_size, False, rate, "onnxruntime")

    def _measure(self, batch_size: int, channels_last: bool, seconds: float = 0.6) -> LayoutChoice:
        size = self.encoder.preprocessing.crop_size
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = self.encoder.to(memory_format=memory_format)
        batch = torch.randint(
            0, 255, (batch_size, 3, size, size), dtype=torch.uint8, device=self.device
        )
        batch = batch.contiguous(memory_format=memory_format)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, self.amp_dtype, enabled=self.cuda),
        ):
            model.encode_maps(batch)  # warm-up: allocations, kernel selection
            self._sync()
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds or done < 2 * batch_size:
                model.encode_maps(batch)
                done += batch_size
            self._sync()
        self.encoder.to(memory_format=torch.contiguous_format)
        return LayoutChoice(batch_size, channels_last, done / (time.perf_counter() - started))

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) on the host → float32 maps on the host; halves on CUDA OOM."""
        outputs = []
        start = 0
        while start < len(pixels):
            part = pixels[start : start + self.max_forward]
            try:
                outputs.append(self._forward_once(part))
                start += len(part)
            except torch.cuda.OutOfMemoryError:
                if self.max_forward == 1:
                    raise
                self.max_forward = max(1, self.max_forward // 2)
                torch.cuda.empty_cache()
                log.warning("CUDA out of memory: forward batch halved to %d", self.max_forward)
        return torch.cat(outputs)

    def _forward_once(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.backend == "onnxruntime":
            return self._model(pixels).float()
        x = pixels.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, self.amp_dtype, enabled=self.cuda),
        ):
            maps = self._model(x)
        return maps.float().cpu()

    def stream(
        self, requests: Sequence[CropRequest], *, flips: bool = False
    ) -> Iterator[EncodedBatch]:
        """Decode (in worker processes) and encode ``requests`` batch by batch, in order.

        With ``flips`` each decoded crop is also encoded mirrored (flipped on the device: the
        image is decoded once).
        """
        pool = self._cpu_pool(len(requests))
        if pool is not None:
            results = pool.map_batches(requests, self.batch_size, flips)
        else:
            results = self._loader_batches(requests, flips)
        for parts in results:
            for chosen, maps, rejects in parts:
                flipped = np.zeros(len(chosen), bool)
                if flips and len(chosen):
                    chosen = chosen + chosen
                    flipped = np.concatenate([flipped, np.ones(len(flipped), bool)])
                yield EncodedBatch(chosen, maps, flipped, rejects)

    def _cpu_pool(self, images: int) -> _EncoderPool | None:
        """The CPU process pool, started on the first stream big enough to repay its start
        (each process builds its model: seconds)."""
        config = self._pool_config
        if self._pool is None and config is not None and images >= config.pool_min_images:
            self._pool = _EncoderPool.for_cpu(config, self)
            if self._pool is None:
                self._pool_config = None  # a GPU or a single core: never ask again
        return self._pool

    def start_processes(self) -> None:
        """Boot the CPU encoding processes now, without waiting for them, so that their start
        (seconds: each imports torch and builds its model) overlaps whatever the caller
        waits on next — a command waiting for Prefect's server. Streams then use them
        whatever their size. Nothing happens where there would be no pool (GPU, one core)."""
        config = self._pool_config
        pool = self._cpu_pool(config.pool_min_images) if config is not None else None
        if pool is not None:
            pool.boot()

    def _dataset(self, requests: Sequence[CropRequest]) -> CropDataset:
        return CropDataset(
            requests,
            self.encoder.preprocessing.crop_size,
            self.max_pixels,
            self.encoder.geometry.stride,
            self.max_bytes,
        )

    def _loader_batches(
        self, requests: Sequence[CropRequest], flips: bool
    ) -> Iterator[list[_Encoded]]:
        """Decoding in DataLoader worker processes, forward here (the GPU path)."""
        dataset = self._dataset(requests)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=self.cuda,
            prefetch_factor=4 if self.workers else None,
            multiprocessing_context=_decoding_context() if self.workers else None,
            worker_init_fn=partial(_exit_with_owner, os.getpid()) if self.workers else None,
        )
        for groups, bad in loader:
            yield _encode_collated(self, dataset.requests, groups, bad, flips)

    def close(self) -> None:
        """Stop the CPU encoding processes (they also stop with this process)."""
        if self._pool is not None:
            self._pool.close()


_Encoded = tuple[list[CropRequest], np.ndarray, list[tuple[CropRequest, str, str]]]


def _encode_collated(
    runtime: EncodingRuntime,
    requests: Sequence[CropRequest],
    groups: Groups,
    bad: list[tuple[int, str, str]],
    flips: bool,
) -> list[_Encoded]:
    """Forward each same-shape group of one decoded batch (and its mirror); rejects keep
    their reasons and travel with the first part."""
    rejects = [(requests[i], reason, detail) for i, reason, detail in bad]
    parts: list[_Encoded] = []
    for indices, pixels in groups:
        maps = runtime.forward(pixels)
        if flips:
            maps = torch.cat([maps, runtime.forward(pixels.flip(3))])
        parts.append(([requests[i] for i in indices], maps.numpy(), rejects if not parts else []))
    return parts or [([], np.empty((0,), np.float32), rejects)]


_PROCESS_RUNTIME: list[EncodingRuntime] = []


def _exit_with_owner(owner_pid: int, _worker_id: int | None = None) -> None:
    """First thing in every decoding or encoding process: exit when the process that
    started it does, even by SIGKILL. Its fork server and multiprocessing's resource
    tracker then end too (see :mod:`tiefvision_core.processes`); without this a killed run
    left them all running, the workers waiting forever on a queue nobody writes (torch's
    own check looks at the worker's parent, which is the fork server, not the owner).

    The second argument is the worker id a ``DataLoader`` passes to its ``worker_init_fn``.
    """
    exit_with(owner_pid)


def _start_encoder_process(config: RuntimeConfig, owner_pid: int) -> None:
    """Each CPU encoding process: one thread, its own model, its own measured layout."""
    _exit_with_owner(owner_pid)
    torch.set_num_threads(1)
    single = replace(config, device="cpu", threads=1, workers=0, cpu_processes=0)
    _PROCESS_RUNTIME.append(
        EncodingRuntime(
            get_encoder(single.encoder, single.weights),
            device="cpu",
            backend=single.backend,
            batch_size=single.batch_size,
            threads=1,
            workers=0,
            max_pixels=single.max_pixels,
            max_bytes=single.max_bytes,
        )
    )


def _booted() -> None:
    """A no-op job: running it means the process has started and built its model."""


def _encode_in_process(requests: list[CropRequest], flips: bool) -> list[_Encoded]:
    runtime = _PROCESS_RUNTIME[0]
    dataset = runtime._dataset(requests)
    groups, bad = collate([dataset[i] for i in range(len(dataset))])
    return _encode_collated(runtime, requests, groups, bad, flips)


class _EncoderPool:
    """CPU path: one single-threaded process per core, each decoding *and* encoding whole
    batches.

    Why not decode in a worker and run a 2-thread forward here: on a small CPU the forward
    already fills every core, and each time the decoder takes a core one OpenMP thread stops
    while the other waits at the next barrier — measured ~20 % slower than the decoding
    work itself. Processes with one thread each have no barriers to stall: decoding simply
    adds its own time. The processes live as long as the runtime (model built once).
    """

    def __init__(self, config: RuntimeConfig, processes: int) -> None:
        self.processes = processes
        self._executor = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=_decoding_context(),
            initializer=_start_encoder_process,
            initargs=(config, os.getpid()),
        )

    @classmethod
    def for_cpu(cls, config: RuntimeConfig, runtime: EncodingRuntime) -> _EncoderPool | None:
        if runtime.cuda or not may_start_processes():
            return None
        processes = (
            config.cpu_processes
            if config.cpu_processes is not None
            else (config.threads or os.cpu_count() or 1)
        )
        return cls(config, processes) if processes > 1 else None

    def boot(self) -> None:
        """Start every process (the executor starts one per submitted job, lazily)."""
        for _ in range(self.processes):
            self._executor.submit(_booted)

    def map_batches(
        self, requests: Sequence[CropRequest], batch_size: int, flips: bool
    ) -> Iterator[list[_Encoded]]:
        """Batches in order, ``2 × processes`` in flight so no process waits for work."""
        pending: deque[Future[list[_Encoded]]] = deque()
        batches = (list(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size))
        for batch in batches:
            pending.append(self._executor.submit(_encode_in_process, batch, flips))
            if len(pending) >= 2 * self.processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)
