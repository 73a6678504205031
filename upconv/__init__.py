"""upconv: invert convolutional networks, layer by layer.

The public names load on first use, so ``import upconv`` (and every command) starts without importing
torch's model zoo, Lightning or matplotlib until they are needed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
_PUBLIC = {
    "Encoder": "upconv.nets.encoder",
    "LayerInfo": "upconv.nets.encoder",
    "build_encoder": "upconv.nets.zoo",
    "EncoderSpec": "upconv.nets.spec",
    "UpconvNet": "upconv.nets.upconvnet",
    "load_decoders": "upconv.nets.checkpoints",
    "ImageSource": "upconv.data.source",
    "evaluate": "upconv.evaluation.run",
    "EvalConfig": "upconv.evaluation.config",
    "psnr": "upconv.core.metrics",
    "ssim": "upconv.core.metrics",
    "image_folder": "upconv.data.folders",
    "load_images": "upconv.data.folders",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'upconv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
