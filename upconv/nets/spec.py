"""``EncoderSpec``: an encoder's identity as one value (name, weights, constructor arguments, pretrained), the
way commands, configs, the Lightning module and checkpoints pass it around, and the one rule that says which
encoder a run uses when several are named (``choose_encoder`` in ``upconv.nets.checkpoints``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from upconv.core.runtime import resolve_device
from upconv.nets.encoder import Encoder
from upconv.nets.zoo import build_encoder

LEGACY_FIELDS = {"encoder_weights": "weights", "encoder_kwargs": "kwargs", "pretrained": "pretrained"}


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder: ``--encoder NAME`` alone, or ``--encoder.name NAME --encoder.weights FILE …`` (YAML:
    ``encoder: {name: NAME, weights: FILE}``).

    Args:
        name: alexnet_cifar, he2019_cifar, resnet18_cifar, a torchvision model (alexnet, vgg11/13/16/19,
            resnet18/34/50), timm:<model> (any timm model, e.g. timm:resnet18) or the class path of your own
            nn.Module (package.module.Class); see `upconv layers`. Default where a checkpoint is read: the one
            it records.
        weights: state-dict or classifier checkpoint file (default: torchvision's cached ImageNet weights, timm's
            cached default weights, seeded random weights for the others; where a checkpoint is read: the one it
            records).
        kwargs: keyword arguments for the encoder's constructor (timm: for timm.create_model), e.g. {width: 0.25}
            for the demo's narrow alexnet_cifar.
        pretrained: torchvision and timm models: load their default weights from the local cache (false: seeded
            random weights). Default: true, or as the checkpoint records.
        download: torchvision and timm models: allow fetching default weights that are not in the local cache.
    """

    name: str | None = None
    weights: str | None = None
    kwargs: dict[str, Any] | None = None
    pretrained: bool | None = None
    download: bool = False

    def __post_init__(self) -> None:
        if self.weights in ("None", "null"):  # how LightningCLI hands over `--model.init_args.encoder.weights=null`
            object.__setattr__(self, "weights", None)

    @classmethod
    def of(cls, value: EncoderSpec | str | dict[str, Any] | None) -> EncoderSpec:
        """A spec from a spec, a name, or a mapping of its fields (a checkpoint's hyperparameters or record)."""
        if isinstance(value, EncoderSpec):
            return value
        if value is None or isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - known - {"weights_hash"})
            if unknown:
                raise ValueError(f"unknown encoder field(s) {', '.join(unknown)}; an encoder takes {', '.join(known)}")
            return cls(**{k: v for k, v in value.items() if k in known})
        raise TypeError(
            f"an encoder is a name, a mapping of {EncoderSpec.__name__} fields or an EncoderSpec; got {value!r}"
        )

    @classmethod
    def from_legacy(cls, params: dict[str, Any]) -> EncoderSpec:
        """The spec of the loose parameters older configs and checkpoints spelled out (``encoder`` a name beside
        ``encoder_weights``, ``encoder_kwargs``, ``pretrained``, ``download``)."""
        fields = {new: params[old] for old, new in LEGACY_FIELDS.items() if old in params}
        return cls(name=params.get("encoder"), download=bool(params.get("download", False)), **fields)

    @property
    def given(self) -> bool:
        """Whether any field other than ``download`` was set."""
        return any(v is not None for v in (self.name, self.weights, self.kwargs, self.pretrained))

    def over(self, record: dict[str, Any]) -> EncoderSpec:
        """This spec's given fields in place of a recorded identity's (``Encoder.spec``, a checkpoint's record):
        a given name starts a new identity, so nothing else is taken from the record."""
        if self.name is not None:
            return self
        return EncoderSpec(
            name=record["name"],
            weights=record.get("weights") if self.weights is None else self.weights,
            kwargs=record.get("kwargs") if self.kwargs is None else self.kwargs,
            pretrained=record.get("pretrained", True) if self.pretrained is None else self.pretrained,
            download=self.download,
        )

    def build(self, device: str | None = None) -> Encoder:
        """The frozen encoder, on ``device`` (``auto``: the GPU when there is one) when given."""
        if not self.name:
            raise ValueError("no encoder named: pass --encoder NAME (see `upconv layers`) or encoder: {name: NAME}")
        enc = build_encoder(
            self.name,
            self.weights,
            download=self.download,
            pretrained=True if self.pretrained is None else self.pretrained,
            kwargs=self.kwargs,
        )
        return enc if device is None else enc.to(resolve_device(device))

    def as_dict(self) -> dict[str, Any]:
        """Plain fields (for hyperparameters and YAML)."""
        return dataclasses.asdict(self)
