"""ClassifierModule: train a built-in encoder architecture when no pretrained weights exist.

Recipe: ``upconv.training.recipes.ClassifierRecipe`` (SGD with Nesterov momentum, one-cycle learning rate,
label smoothing), random crop + flip on the device (see ``ImageData``), the architecture's own normalisation. Its
checkpoints load directly as encoder weights
(``build_encoder(name, weights=path)``), and ``on_fit_end`` also exports a plain state dict.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from upconv.nets.zoo import classifier_model
from upconv.training.recipes import ClassifierRecipe


class ClassifierModule(L.LightningModule):
    """Args:
    arch: a built-in architecture (``alexnet_cifar``, ``he2019_cifar``, ``resnet18_cifar``) or a timm model
        trained from scratch (``timm:vit_tiny_patch16_224`` with ``arch_kwargs`` such as ``{img_size: 32}``).
    num_classes: output classes.
    arch_kwargs: extra constructor arguments (e.g. ``{"width": 0.25}``).
    lr, momentum, weight_decay, label_smoothing: the optimisation recipe.
    export: where ``on_fit_end`` writes the trained weights as a plain state dict (None: skip).
    """

    def __init__(
        self,
        arch: str = "alexnet_cifar",
        num_classes: int = 10,
        arch_kwargs: dict[str, Any] | None = None,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.1,
        export: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model, mean, std = classifier_model(arch, num_classes, arch_kwargs)
        self.recipe = ClassifierRecipe(
            lr=lr, momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing
        )
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # The Encoder's normalisation, made once; not saved, so checkpoints hold the model's weights alone.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean) / self.std)  # (B, num_classes)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.recipe.loss(self(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"classifier loss became {loss.item()} at step {self.global_step}; lower model.lr")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc.update(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(x), sync_dist=True)  # weighted by shard
        self.log("val/acc", self.val_acc, prog_bar=True, on_epoch=True)

    test_step = validation_step

    def configure_optimizers(self) -> Any:
        opt, sched = self.recipe.optimizer(self.model.parameters(), self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_end(self) -> None:
        if self.hparams.export and self.trainer.is_global_zero:
            os.makedirs(os.path.dirname(os.path.abspath(self.hparams.export)), exist_ok=True)
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, self.hparams.export)
