"""upconv: invert convolutional networks, layer by layer."""

from upconv.nets.encoder import Encoder, LayerInfo, build_encoder

__all__ = ["Encoder", "LayerInfo", "build_encoder"]
__version__ = "0.1.0"
