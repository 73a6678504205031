"""``EncoderSpec``: one value for an encoder's identity, one rule for which encoder a run uses, the command-line
shortcuts that spell it, and checkpoints written with the older loose fields."""

from __future__ import annotations

import lightning
import pytest
import torch

from upconv.nets.builtin import ARCHITECTURES
from upconv.nets.checkpoints import choose_encoder, load_decoders
from upconv.nets.spec import EncoderSpec
from upconv.nets.zoo import build_encoder

NARROW = {"width": 0.25}


def test_a_spec_is_read_from_a_name_a_mapping_or_older_loose_fields():
    assert EncoderSpec.of("alexnet_cifar") == EncoderSpec(name="alexnet_cifar")
    assert EncoderSpec.of({"name": "alexnet_cifar", "kwargs": NARROW}) == EncoderSpec("alexnet_cifar", kwargs=NARROW)
    spec = EncoderSpec("he2019_cifar", weights="w.pt")
    assert EncoderSpec.of(spec) is spec
    legacy = {"encoder": "alexnet_cifar", "encoder_weights": "w.pt", "encoder_kwargs": NARROW, "pretrained": False}
    assert EncoderSpec.from_legacy(legacy) == EncoderSpec("alexnet_cifar", "w.pt", NARROW, False)
    with pytest.raises(ValueError, match="unknown encoder field.*wieghts"):
        EncoderSpec.of({"name": "alexnet_cifar", "wieghts": "w.pt"})


def test_given_fields_replace_the_recorded_ones_and_a_given_name_replaces_them_all():
    record = {"name": "alexnet_cifar", "weights": "rec.pt", "pretrained": True, "kwargs": NARROW}
    assert EncoderSpec().over(record) == EncoderSpec("alexnet_cifar", "rec.pt", NARROW, True)
    assert EncoderSpec(weights="new.pt").over(record) == EncoderSpec("alexnet_cifar", "new.pt", NARROW, True)
    assert EncoderSpec(kwargs={}).over(record).kwargs == {}  # an empty mapping is given, not absent
    assert EncoderSpec("he2019_cifar").over(record) == EncoderSpec("he2019_cifar")


def test_build_is_build_encoder_and_records_the_same_identity():
    enc = EncoderSpec("alexnet_cifar", kwargs=NARROW).build(device="cpu")
    same = build_encoder("alexnet_cifar", kwargs=NARROW)
    assert enc.weights_hash == same.weights_hash and enc.spec == same.spec and enc.device.type == "cpu"
    with pytest.raises(ValueError, match="no encoder named"):
        EncoderSpec().build()


def _legacy_checkpoint(tmp_path):
    """A decoder checkpoint as written before EncoderSpec: loose encoder fields in its hyperparameters."""
    from upconv.training.module import InversionModule

    torch.manual_seed(3)
    weights = tmp_path / "encoder.pt"
    torch.save(ARCHITECTURES["alexnet_cifar"].build(**NARROW).state_dict(), weights)
    spec = {"name": "alexnet_cifar", "weights": str(weights), "kwargs": NARROW}
    m = InversionModule(encoder=spec, layers=["conv1", "fc6"], width=8, fc_width=32, max_width=32, log_images=0)
    hparams = {k: v for k, v in m.hparams.items() if k != "encoder"}
    hparams.update(encoder="alexnet_cifar", encoder_weights=str(weights), encoder_kwargs=NARROW, pretrained=True)
    ckpt = {
        "state_dict": m.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": lightning.__version__,
    }
    m.on_save_checkpoint(ckpt)
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    return m, path


def test_a_checkpoint_with_the_older_loose_encoder_fields_still_loads(tmp_path):
    from upconv.training.module import InversionModule

    m, path = _legacy_checkpoint(tmp_path)
    dec = load_decoders(path)  # the evaluation's path: the checkpoint's record
    assert dec.encoder.weights_hash == m.encoder.weights_hash and dec.layers == ["conv1", "fc6"]
    resumed = InversionModule.load_from_checkpoint(path)  # Lightning's path: the hyperparameters
    assert resumed.encoder.weights_hash == m.encoder.weights_hash
    saved = resumed.hparams["encoder"]  # one spec now, as plain fields (weights_only loading)
    assert saved == {**m.hparams["encoder"], "pretrained": True} and isinstance(saved, dict)
    for k, v in m.decoders.state_dict().items():
        assert torch.equal(resumed.decoders.state_dict()[k], v), k


def test_one_rule_picks_the_encoder_object_then_a_named_spec_then_the_record(tmp_path):
    m, path = _legacy_checkpoint(tmp_path)
    given = build_encoder("he2019_cifar")
    assert choose_encoder(given, EncoderSpec(), path) is given
    with pytest.raises(ValueError, match="two encoders"):
        choose_encoder(given, EncoderSpec(weights="w.pt"), path)
    assert choose_encoder(None, EncoderSpec("he2019_cifar"), path).name == "he2019_cifar"  # the name wins
    recorded = choose_encoder(None, EncoderSpec(), path)
    assert recorded.weights_hash == m.encoder.weights_hash  # rebuilt from the record, weights file included
    with pytest.raises(ValueError, match="do not fit"):  # given kwargs replace the recorded ones, never dropped
        choose_encoder(None, EncoderSpec(kwargs={"width": 0.5}), path)
    with pytest.raises(ValueError, match="no encoder"):
        choose_encoder(None, EncoderSpec(), None)


@pytest.mark.parametrize(
    "argv, want",
    [
        (["layers", "alexnet_cifar"], ["layers", "--encoder.name", "alexnet_cifar"]),
        (["layers", "--encoder", "he2019_cifar"], ["layers", "--encoder.name", "he2019_cifar"]),
        (["layers", "--encoder=he2019_cifar"], ["layers", "--encoder.name=he2019_cifar"]),
        (["layers", "--encoder", "{name: a}"], ["layers", "--encoder", "{name: a}"]),  # a mapping stays one
        (["layers", "--encoder", "enc.yaml"], ["layers", "--encoder", "enc.yaml"]),  # so does a file
        (
            ["visualize", "class", "a", "--encoder_weights", "w.pt", "--pretrained=false"],
            ["visualize", "class", "--encoder.name", "a", "--encoder.weights", "w.pt", "--encoder.pretrained=false"],
        ),
        (["evaluate", "--limit", "5"], ["evaluate", "--limit", "5"]),  # a config command: no positional name
    ],
)
def test_command_line_shortcuts_spell_out_the_encoder_group(argv, want):
    from upconv.cli.args import encoder_options
    from upconv.cli.main import COMMANDS

    assert encoder_options(argv, COMMANDS) == want


def test_every_spelling_of_an_encoder_parses_to_the_same_spec(tmp_path):
    from jsonargparse import CLI

    from upconv.cli.args import encoder_options
    from upconv.cli.main import COMMANDS

    (tmp_path / "enc.yaml").write_text("name: alexnet_cifar\nkwargs: {width: 0.25}\n")
    spellings = [
        ["deconv", "alexnet_cifar", "conv1", "d", "--encoder.kwargs", "{width: 0.25}"],
        ["deconv", "--encoder.name", "alexnet_cifar", "conv1", "d", "--encoder_kwargs", "{width: 0.25}"],
        ["deconv", "--encoder", "{name: alexnet_cifar, kwargs: {width: 0.25}}", "conv1", "d"],
        ["deconv", "--encoder", str(tmp_path / "enc.yaml"), "conv1", "d"],
    ]
    from jsonargparse import capture_parser

    parser = capture_parser(lambda: CLI(COMMANDS, args=[], as_positional=True))
    for argv in spellings:
        ns = parser.parse_args(encoder_options(argv, COMMANDS))
        spec = parser.instantiate_classes(ns).deconv.encoder
        assert spec == EncoderSpec("alexnet_cifar", kwargs=NARROW), argv
        assert ns.deconv.layer == "conv1" and ns.deconv.root == "d"
