"""The commands behave alike: one image reader, one rule for existing output folders, one-line errors."""

import os

import pytest
import torch
from PIL import Image


def _photo(root, size=(48, 30)):
    """One non-square photograph (W × H = ``size``) in ``root/test/a`` and ``root/train/a``; left and right
    halves differ, so a stretch and an aspect-preserving crop give different pixels."""
    g = torch.Generator().manual_seed(0)
    w, h = size
    pixels = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
    pixels[:, : w // 4] = 0
    for split in ("train", "test"):
        os.makedirs(root / split / "a", exist_ok=True)
        Image.fromarray(pixels.numpy()).save(root / split / "a" / "photo.png")
    return root


def test_evaluate_deconv_and_visualize_read_a_photo_as_the_same_tensor(tmp_path):
    from upconv.data.folders import load_images
    from upconv.data.source import ImageSource
    from upconv.visualize.deconv import image_folder

    root = _photo(tmp_path)
    evaluate = next(ImageSource("folder", str(root), image_size=16, num_workers=0).images("val"))[0][0]
    deconv = image_folder(str(root / "test"), (16, 16))[0][0]
    visualize = load_images([str(root / "test")], (16, 16))[0][0]
    single_file = load_images([str(root / "test" / "a" / "photo.png")], (16, 16))[0][0]
    assert evaluate.shape == (3, 16, 16)
    for other in (deconv, visualize, single_file):
        assert torch.equal(other, evaluate)


# ---------------------------------------------------------------- output folders
SMALL = ["--encoder.kwargs", '{"width": 0.25}', "--device", "cpu"]


def _commands(data, out):
    return {
        "deconv": [
            "deconv",
            "alexnet_cifar",
            "conv1",
            data,
            "--channels",
            "[0]",
            "--top",
            "2",
            "--images",
            "1",
            "--out",
            out,
            *SMALL,
        ],
        "visualize": ["visualize", "saliency", "alexnet_cifar", f"[{data}]", "--out", out, *SMALL],
    }


@pytest.mark.parametrize("command", ["deconv", "visualize"])
def test_an_existing_output_folder_is_refused_unless_overwritten(command, tmp_path, capsys, image_folder):
    from upconv.cli.main import main

    data = image_folder(tmp_path / "data", per_class=2, size=(40, 36))
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.png").write_bytes(b"an earlier run's figure")
    with pytest.raises(SystemExit) as e:
        main(_commands(data, str(out))[command])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"output folder {out} already exists" in err and "--overwrite true" in err
    assert os.listdir(out) == ["earlier.png"]
    main(_commands(data, str(out))[command] + ["--overwrite", "true"])
    written = os.listdir(out)
    assert "earlier.png" not in written and written and all(f.endswith(".png") for f in written)  # not mixed
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


@pytest.mark.parametrize("command", ["deconv", "visualize"])
def test_a_corrupt_image_leaves_no_output_folder(command, tmp_path, capsys, image_folder):
    from upconv.cli.main import main

    data = image_folder(tmp_path / "data", per_class=2, size=(40, 36))
    (tmp_path / "data" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(SystemExit):
        main(_commands(data, str(tmp_path / "out"))[command])
    assert "cannot decode image" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no folder, no hidden partial one


# ---------------------------------------------------------------- arguments and causes
def test_evaluate_accepts_one_checkpoint_path_as_well_as_a_list(tmp_path, monkeypatch):
    from upconv.cli import main as cli
    from upconv.evaluation.config import EvalConfig

    seen = []
    monkeypatch.setitem(cli.RUNS, EvalConfig, seen.append)
    cli.main(["evaluate", "--checkpoints", "runs/demo/decoders.ckpt", "--out", str(tmp_path / "a")])
    cli.main(["evaluate", "--checkpoints", "[a.ckpt, b.ckpt]", "--out", str(tmp_path / "b")])
    assert [c.checkpoints for c in seen] == ["runs/demo/decoders.ckpt", ["a.ckpt", "b.ckpt"]]


def test_an_unreadable_file_s_cause_is_cut_at_a_word_never_mid_word(tmp_path, monkeypatch):
    from upconv.core.files import UnreadableFileError, load_torch_file

    cause = (
        "PytorchStreamReader failed reading zip archive: failed finding central directory. If you saved this "
        "file with an older release, load it there and save it again"
    )  # 160 characters
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"PK not really")

    def fail(*args, **kwargs):
        raise RuntimeError(cause)

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(UnreadableFileError) as e:
        load_torch_file(path, "decoder checkpoint")
    assert f"({cause})" in str(e.value)
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(cause * 3)))
    with pytest.raises(UnreadableFileError) as e:
        load_torch_file(path, "decoder checkpoint")
    shown = str(e.value).split("(", 1)[1].split(");")[0]
    assert shown.endswith(" …") and (cause * 3).startswith(shown[:-2]) and (cause * 3)[len(shown) - 2] == " "


def test_the_readme_evaluates_the_demo_decoders_on_the_demo_s_data(monkeypatch):
    """The README's command for the demo's decoders reads the data the demo trained with (same crops per
    photograph), so its held-out split is the demo's, not a 16-image one."""
    import re
    import shlex

    import yaml

    from upconv.cli import main as cli
    from upconv.evaluation.config import EvalConfig

    here = os.path.dirname(__file__)
    import glob

    pages = [os.path.join(here, "..", "README.md"), *glob.glob(os.path.join(here, "..", "docs", "*.md"))]
    readme = "\n".join(open(p).read() for p in pages).replace("\\\n", " ")
    lines = [
        line for line in readme.splitlines() if re.match(r"upconv evaluate --checkpoints \[checkpoints/demo/", line)
    ]
    demo = yaml.safe_load(open(os.path.join(here, "..", "configs", "demo.yaml")))["data"]["images"][
        "embedded_per_class"
    ]
    seen = []
    monkeypatch.setitem(cli.RUNS, EvalConfig, seen.append)
    for line in lines:
        cli.main(shlex.split(line.split("#")[0])[1:])
    assert lines and [c.embedded_per_class for c in seen] == [demo] * len(lines)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--lmit", "5"], "unknown config key lmit; did you mean limit?"),
        (["evaluate", "--config", "TYPO"], "unknown config key lmit; did you mean limit?"),
        (["privacy", "--n_evl", "3"], "unknown config key n_evl; did you mean n_eval?"),
        (["evaluate", "--encoder.nme", "x"], "unknown config key encoder.nme; did you mean encoder.name?"),
        (
            ["layers", "timm:test_resnet", "--encoder.pretrained", "false", "--encoder.kwargs", "{drop_rat: 0.1}"],
            "timm:test_resnet cannot be built with kwargs {'drop_rat': 0.1}: ",
        ),
        (
            ["layers", "resnet18", "--encoder.pretrained", "false", "--encoder.kwargs", "{num_clases: 10}"],
            "resnet18 cannot be built with kwargs {'num_clases': 10}: ",
        ),
    ],
    ids=["option typo", "config typo", "privacy typo", "encoder field typo", "timm kwargs typo", "torchvision typo"],
)
def test_a_mistake_on_the_command_line_or_in_a_config_is_one_line(argv, message, tmp_path, capsys):
    """Not the parser's 19–31 lines of usage, not a constructor's traceback: one line, exit status 2."""
    from upconv.cli.main import main

    pytest.importorskip("timm")
    typo = tmp_path / "typo.yaml"
    typo.write_text("lmit: 5\n")
    with pytest.raises(SystemExit) as e:
        main([str(typo) if a == "TYPO" else a for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"upconv: error: {message}")


def test_torchvision_encoders_are_built_with_their_kwargs(capsys):
    from upconv.cli.main import main
    from upconv.nets.zoo import build_encoder

    enc = build_encoder("resnet18", pretrained=False, kwargs={"num_classes": 10})
    assert enc.layer(enc.layers[-1]).shape == (10,) and enc.spec["kwargs"] == {"num_classes": 10}
    main(["layers", "vgg11", "--encoder.pretrained", "false", "--encoder.kwargs", "{num_classes: 7}"])
    assert capsys.readouterr().out.splitlines()[-1].split()[-2:] == ["7", "7"]  # fc8: 7 class scores
