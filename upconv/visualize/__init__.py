"""The classic visualisations, each a function on an ``Encoder``; ``upconv visualize <method>`` writes PNGs."""

from upconv.visualize.activation import channel_images, class_images, neuron_images, prototypes
from upconv.visualize.adversarial import fgsm, fooling_images, pgd
from upconv.visualize.dream import deep_dream
from upconv.visualize.gradcam import grad_cam, guided_backprop, guided_grad_cam, saliency
from upconv.visualize.recipe import Recipe
from upconv.visualize.similar import FeatureIndex

__all__ = [
    "Recipe",
    "class_images",
    "channel_images",
    "neuron_images",
    "prototypes",
    "deep_dream",
    "grad_cam",
    "guided_grad_cam",
    "guided_backprop",
    "saliency",
    "FeatureIndex",
    "fgsm",
    "pgd",
    "fooling_images",
]
