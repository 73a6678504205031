"""InversionModule: one frozen encoder, one UpconvNet per chosen layer, all trained in the same pass.

Each batch runs the encoder ONCE for every layer; each decoder gets its own MSE loss (plus an optional
feature-space term through the same frozen encoder, as in DeePSiM, Dosovitskiy & Brox NeurIPS 2016). The
losses are summed for one optimizer step. Decoders share no parameters, each has its own parameter group
and its own learning rate, so this is exactly equivalent to training each decoder separately, at a fraction
of the cost. The recipe (optimizer, schedule, clipping, guard) is ``upconv.training.recipes.DecoderRecipe``,
the one the privacy attacks use too. Its ``HealthGuard`` keeps a diverging decoder from training on in
silence: a spike's gradient is tamed on the device, a diverged decoder is restored with a lower learning
rate, or marked failed, and checkpoints record it.

The hot path never reads a value back to the host: losses are watched on the device and read once per
guard check (every ``check_every`` steps) and at the end of every epoch. Under DDP the losses the guard sees
are averaged over ranks, so every rank takes the same decision at the same step.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from upconv.core import metrics as M
from upconv.core.files import load_torch_file
from upconv.nets.checkpoints import CHECKPOINT_KEY, check_identity
from upconv.nets.encoder import Encoder
from upconv.nets.spec import EncoderSpec
from upconv.nets.upconvnet import UpconvNet
from upconv.training.callbacks import log_reconstruction_grid
from upconv.training.health import HealthGuard
from upconv.training.recipes import DecoderRecipe

log = logging.getLogger(__name__)


def mean_over_ranks(values: Tensor) -> Tensor:
    """``values`` averaged over the processes of a data-parallel run (itself in a single process): the health
    guard then sees the whole global batch's losses and every rank takes the same decision."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values / torch.distributed.get_world_size()
    return values


def silent(record: logging.LogRecord) -> bool:
    """A logging filter that drops every record (the guard's warnings on ranks other than 0)."""
    return False


def layer_seed(layer: str) -> int:
    """The seed of ``layer``'s decoder initialisation: the run's seed (``seed_everything``) and the layer's name."""
    return (torch.initial_seed() + zlib.crc32(layer.encode())) % 2**63


def feature_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image ‖Φ(x̂) − Φ(x)‖² / ‖Φ(x)‖², shape (B,): ``metrics.relative_feature_error`` squared, kept in
    the features' own precision because it runs in the training hot path."""
    return M.relative_feature_error(pred, target, squared=True)


class InversionModule(L.LightningModule):
    """Train UpconvNet decoders for several layers of a frozen encoder in one run.

    Args:
        encoder: the frozen encoder (``EncoderSpec``: name, weights, kwargs, pretrained, download).
        layers: layer names, or ``["all"]`` for every layer of the table.
        width, n_convs, fc_width, max_width, norm: UpconvNet shape and normalisation (see ``UpconvNet``).
        recipe: how the decoders train (``upconv.training.recipes.DecoderRecipe``: AdamW at ``lr``, warm-up,
            cosine decay, optional per-decoder ``grad_clip``, and the health guard's settings ``guard``); on the
            command line ``--model.init_args.recipe.lr 1e-3``, ``--model.init_args.recipe.guard.patience 3``.
        feature_loss_weight: weight of the feature-space term ‖Φ_L(x̂) − Φ_L(x)‖² / ‖Φ_L(x)‖² (0 = off).
        log_images: originals shown in the validation reconstruction grid.
        channels_last: NHWC memory format for the decoders (faster convolutions on GPUs and recent CPUs).
        compile: ``torch.compile`` each decoder (worth it on a GPU for long runs; the first steps compile).
    """

    def __init__(
        self,
        encoder: EncoderSpec = EncoderSpec("alexnet_cifar"),
        layers: list[str] | str = "all",
        width: int = 64,
        n_convs: int = 2,
        fc_width: int = 1024,
        max_width: int = 512,
        norm: str = "batch",
        recipe: DecoderRecipe = DecoderRecipe(),
        feature_loss_weight: float = 0.0,
        log_images: int = 8,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        spec, self.recipe = EncoderSpec.of(encoder), DecoderRecipe.of(recipe)
        self.save_hyperparameters(ignore=["encoder", "recipe"])
        # Plain fields, not objects: checkpoints load with weights_only=True.
        self.hparams.update(encoder=spec.as_dict(), recipe=self.recipe.as_dict())
        self.encoder: Encoder = spec.build()
        all_layers = [layers] if isinstance(layers, str) else list(layers)
        self.layers = self.encoder.layers if all_layers == ["all"] else self.encoder.resolve(all_layers)
        image_shape = (self.encoder.channels, *self.encoder.image_size)
        shape = dict(width=width, n_convs=n_convs, fc_width=fc_width, max_width=max_width, norm=norm)
        decoders = {}
        for name in self.layers:  # each from its own seed: a layer's decoder does not depend on the others trained
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(layer_seed(name))
                decoders[name] = UpconvNet(self.encoder.layer(name).shape, image_shape, **shape)
        self.decoders = nn.ModuleDict(decoders)
        if channels_last:
            self.decoders.to(memory_format=torch.channels_last)
        self.health = self.recipe.health_guard(self.decoders)
        self._val_sums: Tensor | None = None  # (L, 4) per-layer sums of PSNR, SSIM, loss; image count

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> InversionModule:
        """Lightning's, reading an older checkpoint's loose fields (``encoder_weights`` …, ``lr``, ``skip_factor``
        …) as one encoder spec and one recipe."""
        hparams = load_torch_file(checkpoint_path, "checkpoint").get("hyper_parameters", {})
        if "encoder" not in kwargs and not isinstance(hparams.get("encoder"), dict):
            kwargs["encoder"] = EncoderSpec.from_legacy(hparams)
        if "recipe" not in kwargs and not isinstance(hparams.get("recipe"), dict):
            kwargs["recipe"] = DecoderRecipe.from_legacy(hparams)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Reconstructions of ``images`` (B, C, H, W in [0, 1]) from every trained layer."""
        with torch.no_grad():
            feats = self.encoder(images, self.layers)
        return {name: self.decoders[name](feats[name]) for name in self.layers}

    def _losses(self, images: Tensor, layers: list[str] | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        layers = self.layers if layers is None else layers
        with torch.no_grad():
            feats = self.encoder(images, layers)  # one encoder pass feeds every decoder
        recon, losses = {}, {}
        for name in layers:
            recon[name] = self.decoders[name](feats[name])  # (B, C, H, W)
            loss = F.mse_loss(recon[name].float(), images)
            if self.hparams.feature_loss_weight > 0:
                refeat = self.encoder(recon[name], [name])[name]
                loss = (
                    loss + self.hparams.feature_loss_weight * feature_loss(refeat.float(), feats[name].float()).mean()
                )
            losses[name] = loss
        return losses, recon

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        losses, _ = self._losses(images)  # every decoder, failed ones too: the same graph on every rank
        per_layer = torch.stack([losses[n] for n in self.layers])  # (L,)
        weight = self.health.gate(mean_over_ranks(per_layer.detach()))  # on the device: no host synchronisation
        return torch.where(weight > 0, per_layer * weight, 0.0).sum()  # 0 × NaN would be NaN

    def on_train_start(self) -> None:
        sched = self.lr_schedulers()
        planned, now = sched.lr_lambdas[0].total_steps, max(1, self.trainer.estimated_stepping_batches)
        if planned != now:  # only after --ckpt_path: the restored schedule's length
            raise ValueError(
                f"the resumed run's learning-rate schedule was planned for {planned} steps, but this run has {now}: "
                f"resume with the run's own max_epochs, data and batch size (a cosine schedule cannot be "
                f"stretched mid-way); to train longer, start a new run"
            )
        self.health.bind(self.optimizers().optimizer, sched)
        if self.trainer.world_size > 1:
            self._data_parallel()

    def _data_parallel(self) -> None:
        """Every rank takes the guard's decisions (losses averaged over ranks): rank 0 alone tells of them.
        Batch-normalised decoders normalise over their own device's images unless synchronised: say so."""
        if self.trainer.global_rank != 0:
            logging.getLogger(HealthGuard.__module__).addFilter(silent)  # added once: a no-op after that
        if any(isinstance(m, nn.BatchNorm2d) for m in self.decoders.modules()):  # SyncBatchNorm is not one
            rank_zero_warn(
                "decoders with norm=batch normalise over each device's own batch, not the global one, "
                "and keep per-rank running statistics: pass --trainer.sync_batchnorm true (GPUs) to "
                "train as one process with the global batch would, or use norm=group "
                "(docs/scale-out.md)"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        last = self.trainer.is_last_batch or 0 < self.trainer.max_steps <= self.global_step
        fresh = self.global_step != self.health.checked_step  # once per optimizer step (gradient accumulation)
        if fresh and (last or self.health.due(self.global_step)):
            self._check_health()

    def _check_health(self) -> None:
        """The guard's check (one small read-back), then the per-layer losses it read, logged for free."""
        self.health.check(self.global_step)
        # on_epoch as well: a run shorter than trainer.log_every_n_steps still writes these to metrics.csv
        every = dict(on_step=True, on_epoch=True, sync_dist=False)  # identical on every rank: nothing to reduce
        smoothed = {n: v for n, v in self.health.smoothed.items() if n in self.health.active}
        if smoothed:
            self.log_dict({f"train/loss_{n}": v for n, v in smoothed.items()}, **every)
            self.log("train/loss", sum(smoothed.values()), prog_bar=True, **every)
        self.log("train/failed_decoders", float(len(self.health.failed)), **every)
        self.log("train/recoveries", float(sum(self.health.recoveries.values())), **every)
        self.log("train/skipped_steps", float(sum(self.health.skipped.values())), **every)
        if not self.health.active:
            self.trainer.should_stop = True

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val:
            raise ValueError(
                "trainer.gradient_clip_val clips all decoders' gradients together, so one decoder's spike would "
                "shrink every other decoder's step; remove it and use model.init_args.recipe.grad_clip (each decoder "
                "on its own)"
            )
        self.recipe.clip_gradients(self.decoders)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        losses, recon = self._losses(images)
        n = images.new_tensor(float(len(images)))
        rows = []
        for name in self.layers:
            x_hat = recon[name].float().clamp(0, 1)
            # The evaluation's definitions: mean of per-image PSNR (capped) and of per-image SSIM.
            rows.append(
                torch.stack(
                    [M.psnr(x_hat, images).sum(), M.ssim(x_hat, images).float().sum(), losses[name].float() * n, n]
                )
            )
        sums = torch.stack(rows)  # (L, 4): sums of PSNR, SSIM and loss over the images, and their count
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums
        if batch_idx == 0 and self.hparams.log_images > 0:
            log_reconstruction_grid(self, images, recon)

    def on_validation_epoch_end(self) -> None:
        """The whole held-out split's means: each process holds the sums of its own shard (no image twice,
        see ``ImageData``), so summing over processes first gives the exact figure, whatever the shards' sizes."""
        sums = self._val_sums if self._val_sums is not None else torch.zeros(len(self.layers), 4, device=self.device)
        self._val_sums = None
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()  # (L, 4), read back once per validation
        for name, (psnr, ssim, loss, n) in zip(self.layers, sums):
            if n == 0:
                return
            psnr, ssim, loss = psnr / n, ssim / n, loss / n
            # Already the same on every process: sync_dist averages equal numbers (and keeps Lightning from
            # warning that epoch-level metrics are unsynchronised).
            self.log(f"val/loss_{name}", loss, sync_dist=True)
            self.log(f"val/psnr_{name}", psnr, prog_bar=name == self.layers[-1], sync_dist=True)
            self.log(f"val/ssim_{name}", ssim, sync_dist=True)

    def setup(self, stage: str) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            for decoder in self.decoders.values():
                decoder.compile()  # in place: parameter names (and so checkpoints) are unchanged
            self._compiled = True

    def configure_optimizers(self) -> Any:
        groups = [{"params": list(self.decoders[n].parameters())} for n in self.layers]  # group i = decoder i
        opt, sched = self.recipe.optimizer(groups, max(1, self.trainer.estimated_stepping_batches), self.device)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The encoder is frozen and rebuilt from its spec: store its identity, not its weights.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}
        checkpoint[CHECKPOINT_KEY] = {
            "encoder": self.encoder.identity,
            "layers": list(self.layers),
            "image_shape": [self.encoder.channels, *self.encoder.image_size],
            "decoder": {k: self.hparams[k] for k in ("width", "n_convs", "fc_width", "max_width", "norm")},
            "health": self.health.record(),
            "health_step": int(self.global_step),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(CHECKPOINT_KEY)
        if meta is None:
            raise ValueError("not an upconv decoder checkpoint (no 'upconv' entry)")
        check_identity(meta, self.encoder, self.layers, source="checkpoint")
        checkpoint["state_dict"].update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        if meta.get("health"):
            self.health.load_record(meta["health"])
