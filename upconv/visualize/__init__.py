"""The classic visualisations, each a function on an ``Encoder``; ``upconv visualize <method>`` writes PNGs."""

from .activation import channel_images, class_images, neuron_images, prototypes
from .adversarial import fgsm, fooling_images, pgd
from .dream import deep_dream
from .gradcam import grad_cam, guided_backprop, guided_grad_cam, saliency
from .recipe import Recipe
from .similar import FeatureIndex

__all__ = [
    "Recipe", "class_images", "channel_images", "neuron_images", "prototypes", "deep_dream", "grad_cam",
    "guided_grad_cam", "guided_backprop", "saliency", "FeatureIndex", "fgsm", "pgd", "fooling_images",
]
