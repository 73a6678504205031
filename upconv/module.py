"""InversionModule: one frozen encoder, one UpconvNet per chosen layer, all trained in the same pass.

Each batch runs the encoder ONCE for every layer; each decoder gets its own MSE loss (plus an optional
feature-space term through the same frozen encoder, as in DeePSiM, Dosovitskiy & Brox NeurIPS 2016). The
losses are summed for one optimizer step: decoders share no parameters, so Adam's per-parameter updates
make this exactly equivalent to training them separately, at a fraction of the cost.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from .checkpoints import CHECKPOINT_KEY, check_identity
from .encoders import Encoder, build_encoder
from .upconvnet import UpconvNet



def feature_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image ‖Φ(x̂) − Φ(x)‖² / ‖Φ(x)‖², shape (B,): the square of ``metrics.feature_error``, kept in
    the features' own precision because it runs in the training hot path."""
    diff = (pred - target).flatten(1).pow(2).sum(1)
    return diff / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)


class InversionModule(L.LightningModule):
    """Train UpconvNet decoders for several layers of a frozen encoder in one run.

    Args:
        encoder: encoder name (see ``upconv layers``) or class path.
        layers: layer names, or ``["all"]`` for every layer of the table.
        encoder_weights: state-dict / classifier-checkpoint file for the encoder.
        encoder_kwargs: keyword arguments for the encoder's constructor (e.g. ``{"width": 0.25}``).
        pretrained / download: torchvision encoders: cached ImageNet weights; allow fetching them.
        width, n_convs, fc_width, max_width: UpconvNet shape (see ``UpconvNet``).
        lr, weight_decay: AdamW; the rate follows a one-cycle schedule over the whole run.
        feature_loss_weight: weight of the feature-space term ‖Φ_L(x̂) − Φ_L(x)‖² / ‖Φ_L(x)‖² (0 = off).
        log_images: originals shown in the validation reconstruction grid.
        channels_last: NHWC memory format for the decoders (faster convolutions on GPUs and recent CPUs).
    """

    def __init__(self, encoder: str = "alexnet_cifar", layers: Union[list[str], str] = "all",
                 encoder_weights: Optional[str] = None, encoder_kwargs: Optional[dict[str, Any]] = None,
                 pretrained: bool = True, download: bool = False, width: int = 64, n_convs: int = 2,
                 fc_width: int = 1024, max_width: int = 512, lr: float = 1e-3, weight_decay: float = 1e-4,
                 feature_loss_weight: float = 0.0, log_images: int = 8, channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder: Encoder = build_encoder(encoder, encoder_weights, download=download,
                                              pretrained=pretrained, kwargs=encoder_kwargs)
        all_layers = [layers] if isinstance(layers, str) else list(layers)
        self.layers = self.encoder.layers if all_layers == ["all"] else self.encoder.resolve(all_layers)
        image_shape = (self.encoder.channels, *self.encoder.image_size)
        self.decoders = nn.ModuleDict({
            name: UpconvNet(self.encoder.layer(name).shape, image_shape, width=width, n_convs=n_convs,
                            fc_width=fc_width, max_width=max_width)
            for name in self.layers
        })
        if channels_last:
            self.decoders.to(memory_format=torch.channels_last)
        self.val_metrics = nn.ModuleDict({
            name: MetricCollection({"psnr": PeakSignalNoiseRatio(data_range=1.0),
                                    "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)})
            for name in self.layers
        })

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Reconstructions of ``images`` (B, C, H, W in [0, 1]) from every trained layer."""
        with torch.no_grad():
            feats = self.encoder(images, self.layers)
        return {name: self.decoders[name](feats[name]) for name in self.layers}

    def _losses(self, images: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        with torch.no_grad():
            feats = self.encoder(images, self.layers)  # one encoder pass feeds every decoder
        recon, losses = {}, {}
        for name in self.layers:
            recon[name] = self.decoders[name](feats[name])  # (B, C, H, W)
            loss = F.mse_loss(recon[name].float(), images)
            if self.hparams.feature_loss_weight > 0:
                refeat = self.encoder(recon[name], [name])[name]
                loss = loss + self.hparams.feature_loss_weight * feature_loss(refeat.float(), feats[name].float()).mean()
            losses[name] = loss
        return losses, recon

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        losses, _ = self._losses(images)
        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            bad = [n for n, v in losses.items() if not torch.isfinite(v)]
            raise FloatingPointError(
                f"training loss became {total.item()} at step {self.global_step} for layer(s) "
                f"{', '.join(bad)}; lower model.lr or check the data for NaNs"
            )
        self.log_dict({f"train/loss_{n}": v.detach() for n, v in losses.items()}, on_step=True, on_epoch=False)
        self.log("train/loss", total.detach(), prog_bar=True)
        return total

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        losses, recon = self._losses(images)
        for name in self.layers:
            self.val_metrics[name].update(recon[name].float().clamp(0, 1), images)
            self.log(f"val/loss_{name}", losses[name], on_epoch=True, batch_size=len(images))
        if batch_idx == 0 and self.hparams.log_images > 0:
            self._log_grid(images, recon)

    def on_validation_epoch_end(self) -> None:
        for name in self.layers:
            for key, value in self.val_metrics[name].compute().items():
                self.log(f"val/{key}_{name}", value, prog_bar=name == self.layers[-1] and key == "psnr")
            self.val_metrics[name].reset()

    def _log_grid(self, images: Tensor, recon: dict[str, Tensor]) -> None:
        """Originals in the first row, then one row per layer; saved as PNG beside the logs."""
        from torchvision.utils import make_grid, save_image

        n = min(self.hparams.log_images, len(images))
        rows = [images[:n]] + [recon[name][:n].float().clamp(0, 1) for name in self.layers]
        grid = make_grid(torch.cat(rows).cpu(), nrow=n, padding=1)
        if self.trainer is None or self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # wandb
                logger.log_image("val/reconstructions", [grid], caption=["originals, " + ", ".join(self.layers)])
        log_dir = self.trainer.log_dir or "."
        os.makedirs(log_dir, exist_ok=True)
        save_image(grid, os.path.join(log_dir, f"reconstructions_epoch{self.current_epoch:03d}.png"))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.decoders.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, pct_start=0.1,
                                                    total_steps=max(1, self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The encoder is frozen and rebuilt from its spec: store its identity, not its weights.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}
        checkpoint[CHECKPOINT_KEY] = {
            "encoder": self.encoder.identity,
            "layers": list(self.layers),
            "image_shape": [self.encoder.channels, *self.encoder.image_size],
            "decoder": {k: self.hparams[k] for k in ("width", "n_convs", "fc_width", "max_width")},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            raise ValueError("not an upconv decoder checkpoint (no 'upconv' entry)")
        check_identity(meta, self.encoder, self.layers, source="checkpoint")
        checkpoint["state_dict"].update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
