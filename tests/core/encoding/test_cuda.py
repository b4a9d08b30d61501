"""The CUDA path (skipped without a GPU; `bench/gpu.sh` runs these on a lent one): maps on
the GPU equal the CPU's within a stated tolerance, in float32 and under the autocast dtype
the runtime ships, and a whole-photo stream agrees with the CPU's."""

from __future__ import annotations

import pytest
import torch

from tiefvision_core.encoders import get_encoder
from tiefvision_core.encoding.runtime import EncodingRuntime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")

#: float32 on the GPU (TF32 off) against the CPU; and the shipped autocast (bf16 or fp16):
#: activations reach about 6, so 0.25 is a few bf16 steps at the top of the range.
FP32_TOLERANCE, AUTOCAST_TOLERANCE = 1e-3, 0.25


def _pixels(height: int, width: int, count: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("shape", [(224, 224), (448, 320), (320, 576)])
def test_cuda_float32_maps_equal_the_cpus(shape: tuple[int, int]) -> None:
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    encoder = get_encoder("efficientnet_lite0").eval()
    pixels = _pixels(*shape)
    with torch.inference_mode():
        cpu = encoder.encode_maps(pixels)
        gpu = encoder.to("cuda").encode_maps(pixels.cuda()).float().cpu()
    assert (gpu - cpu).abs().max().item() <= FP32_TOLERANCE


def test_cuda_runtime_under_autocast_stays_close_to_the_cpu() -> None:
    runtime = EncodingRuntime(get_encoder("efficientnet_lite0"), device="cuda", workers=0)
    assert runtime.backend == "torch"
    pixels = _pixels(224, 224, 16)
    gpu = runtime.forward(pixels)
    with torch.inference_mode():
        cpu = get_encoder("efficientnet_lite0").encode_maps(pixels)
    assert (gpu - cpu).abs().max().item() <= AUTOCAST_TOLERANCE
    cosine = torch.nn.functional.cosine_similarity(gpu.flatten(1), cpu.flatten(1))
    assert cosine.min().item() >= 0.999


def test_cuda_out_of_memory_at_a_huge_batch_halves_instead_of_failing() -> None:
    runtime = EncodingRuntime(
        get_encoder("efficientnet_lite0"), device="cuda", workers=0, batch_size=4096
    )
    free, _ = torch.cuda.mem_get_info()
    # Enough 1024-pixel photos that one forward of all of them cannot fit in free memory.
    side = 1024
    per_photo = 3 * side * side * 4 * 40  # activations dwarf the input: ~40 float maps
    count = min(4096, max(8, int(free // per_photo) * 4))
    maps = runtime.forward(torch.zeros((count, 3, side, side), dtype=torch.uint8))
    assert maps.shape[0] == count
