"""End-to-end evaluation: the report folder, its consistency, determinism, methods side by side, bad input."""

import csv
import json
import os
import re

import pytest
import torch
import yaml

from upconv.data.source import ImageSource
from upconv.evaluation import figures, tables
from upconv.evaluation.config import EvalConfig
from upconv.evaluation.figures import MARK as FIG_MARK
from upconv.evaluation.result import METRICS
from upconv.evaluation.run import evaluate
from upconv.methods.base import Method
from upconv.nets.checkpoints import load_decoders
from upconv.training.datamodule import ImageData

FILES = {"report.md", "metrics.csv", "metrics.json", "depth.png", "grid.png"}
LAYERS = ["conv1", "pool2", "fc6"]
ENC_KWARGS = {"width": 0.25, "num_classes": 8}  # 8 classes, as the embedded photographs


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """Untrained tiny decoders saved through the module's own checkpoint hook (what Lightning calls)."""
    from upconv.training.module import InversionModule

    torch.manual_seed(0)
    model = InversionModule(
        encoder={"name": "alexnet_cifar", "kwargs": ENC_KWARGS}, layers=LAYERS, width=8, fc_width=64
    )
    state = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(state)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="session")
def data():
    d = ImageData(images=ImageSource(source="embedded", embedded_per_class=12, seed=0), batch_size=32)  # 9 val images
    d.setup()
    return d


def _no_partials(parent):
    return [p for p in os.listdir(parent) if ".partial-" in p or ".old-" in p] == []


def _csv_rows(path, floors=False):
    """The (method, layer) rows of metrics.csv; with ``floors``, every row, the two floor rows last."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return rows if floors else [r for r in rows if not r["method"].startswith("floor: ")]


def _md_tables(md):
    """Every markdown table of a report, in order: (header cells, body rows as lists of cells)."""
    found, current = [], None
    for line in md.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if current is None:
            current = (cells, [])
            found.append(current)
        elif not set(line) <= set("|-: "):  # not the alignment row
            current[1].append(cells)
    return found


def _main_table(md):
    """The results table (the first one after "## Results") as {(method, layer): {column: cell}}."""
    head, body = _md_tables(md.split("## Results")[1])[0]
    return {(c[0], c[1]): dict(zip(head, c)) for c in body}


class Oracle:
    """Returns the originals: every figure is known exactly."""

    name = "oracle"

    def __call__(self, images, layer):
        return images.clone()


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torch cache of the test's own (LPIPS's AlexNet trunk absent until a test places one)."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch"


def _place_random_alexnet_trunk():
    """A seeded random-weight AlexNet where LPIPS looks for its trunk: the metric runs (its values mean nothing)."""
    import torchvision

    from upconv.core import metrics as M

    path = M.lpips_backbone_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)


def test_report_folder_is_complete_and_csv_matches_table(ckpt, data, tmp_path, torch_cache):
    out = tmp_path / "run"
    res = evaluate(EvalConfig(checkpoints=[ckpt], out=str(out), n_boot=100, seed=0, grid_images=4), data=data)
    assert set(os.listdir(out)) == FILES and _no_partials(tmp_path)
    floors = _csv_rows(out / "metrics.csv", floors=True)[-2:]
    rows = _csv_rows(out / "metrics.csv")
    assert [(r["method"], r["layer"]) for r in rows] == [("upconvnet", L) for L in LAYERS]  # network order
    assert [r["method"] for r in floors] == ["floor: mean image", "floor: class mean"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["rows"] == res.rows and saved["floor_rows"] == res.floor_rows
    found = [t for t in _md_tables((out / "report.md").read_text()) if t[0][:2] == ["method", "layer"]]
    assert found[0][0] == ["method", "layer", "n", "PSNR dB ↑", "SSIM ↑", "floor verdict", "decoder"]
    shown = [k for k in METRICS if rows[0][k] != ""]
    labels = [label for head, _ in found for label in head[2:]]  # each metric in exactly one column
    assert sorted(labels) == sorted([tables.LABELS[k] for k in shown] + ["n", "floor verdict", "decoder"])
    columns = {}
    for head, body in found:
        assert [c[:2] for c in body] == [[r["method"], r["layer"]] for r in rows]
        columns.update({label: [c[i] for c in body] for i, label in enumerate(head[2:], 2)})
    assert [int(n) for n in columns["n"]] == [int(r["n"]) for r in rows] == [9] * len(LAYERS)
    assert columns["decoder"] == [r["decoder_health"] for r in rows] == ["ok"] * len(LAYERS)
    for k in shown:
        for text, row in zip(columns[tables.LABELS[k]], rows):
            mean, lo, hi = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", text).groups())
            tol = 0.006 if k == "psnr" else 6e-5  # table rounds to 2 / 4 decimals
            assert mean == pytest.approx(float(row[k]), abs=tol)
            assert (lo, hi) == (
                pytest.approx(float(row[k + "_lo"]), abs=tol),
                pytest.approx(float(row[k + "_hi"]), abs=tol),
            )
            assert float(row[k + "_lo"]) <= float(row[k]) <= float(row[k + "_hi"])
    md = (out / "report.md").read_text()
    assert "![metrics against depth](depth.png)" in md and "![originals and reconstructions](grid.png)" in md
    assert "‖x̂_i − x_i‖₂ / d̄" in md and "100 dB" in md
    assert rows[0]["lpips"] == "" and res.settings["lpips"] == "skipped"  # no AlexNet trunk in this torch cache
    assert sum("LPIPS skipped: place alexnet-owt-7be5be79.pth" in line for line in md.splitlines()) == 1


def test_lpips_with_a_cached_trunk_is_the_lpips_package_on_each_image(ckpt, data, torch_cache):
    import lpips

    from upconv.core import metrics as M

    _place_random_alexnet_trunk()
    res = evaluate(EvalConfig(out=None, checkpoints=[ckpt], layers=["conv1"], n_boot=5), data=data)
    assert res.settings["lpips"] == "computed (v0.1, AlexNet trunk)" and not any("LPIPS" in n for n in res.notes)
    model, _ = M.load_lpips()
    assert isinstance(model, lpips.LPIPS)
    x = torch.cat([b for b, _ in data.images("val")])  # (9, 3, 32, 32)
    xh = load_decoders(ckpt)(x, "conv1").clamp(0, 1)
    with torch.no_grad():  # the package's own call on images rescaled to [-1, 1] by hand
        want = model(2 * xh - 1, 2 * x - 1).flatten().double().mean().item()
    assert res.rows[0]["lpips"] == pytest.approx(want, rel=1e-5) and want > 0


def test_lpips_package_missing_is_one_clear_line_and_the_other_metrics_stay(ckpt, data, torch_cache, monkeypatch):
    import sys

    _place_random_alexnet_trunk()  # the trunk is there: only the package is missing
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` now raises ImportError
    res = evaluate(EvalConfig(out=None, checkpoints=[ckpt], layers=["conv1"], n_boot=5), data=data)
    said = [n for n in res.notes if "LPIPS" in n]
    assert said == ["LPIPS skipped: the lpips package is not installed (pip install 'upconv[lpips]')"]
    assert res.rows[0]["lpips"] is None and res.settings["lpips"] == "skipped"
    assert all(res.rows[0][k] is not None for k in ("mse", "psnr", "ssim", "db_error", "feature_error"))


def test_figures_agree_with_metrics_computed_directly(ckpt, data, tmp_path):
    res = evaluate(EvalConfig(out=None, checkpoints=[ckpt], layers=["pool2"], n_boot=10, lpips=False), data=data)
    dec = load_decoders(ckpt)
    x = torch.cat([b for b, _ in data.images("val")])  # (9, 3, 32, 32)
    xh = dec(x, "pool2")
    row = res.rows[0]
    assert row["mse"] == pytest.approx((xh - x).pow(2).mean().item(), rel=1e-5)
    feats = dec.encoder(x, ["pool2"])["pool2"]
    refeats = dec.encoder(xh, ["pool2"])["pool2"]
    ratio = (refeats - feats).flatten(1).norm(dim=1) / feats.flatten(1).norm(dim=1)
    assert row["feature_error"] == pytest.approx(ratio.mean().item(), rel=1e-5)
    d = torch.cdist(x.flatten(1).double(), x.flatten(1).double())  # (9, 9)
    d_bar = d.sum() / (9 * 8)
    db = ((xh - x).flatten(1).double().norm(dim=1) / d_bar).mean()
    assert row["db_error"] == pytest.approx(db.item(), rel=1e-6)


def test_same_seed_gives_byte_identical_csv(ckpt, data, tmp_path):
    a = evaluate(EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "a"), n_boot=50, seed=1), data=data).out
    b = evaluate(EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "b"), n_boot=50, seed=1), data=data).out
    read = lambda p: open(os.path.join(p, "metrics.csv"), "rb").read()  # noqa: E731
    assert read(a) == read(b)
    other = evaluate(
        EvalConfig(out=None, checkpoints=[ckpt], n_boot=50, seed=2, lpips=False), data=data
    ).rows  # the seed
    # drives the bootstrap
    assert [r["mse_lo"] for r in other] != [float(r["mse_lo"]) for r in _csv_rows(os.path.join(a, "metrics.csv"))]


def test_methods_side_by_side_with_an_exact_oracle(ckpt, data, tmp_path):
    res = evaluate(
        EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "run"), n_boot=20), data=data, methods=["upconvnet", Oracle()]
    )
    oracle = [r for r in res.rows if r["method"] == "oracle"]
    assert [r["layer"] for r in oracle] == LAYERS
    for r in oracle:
        assert r["mse"] == 0 and r["psnr"] == 100.0 and r["db_error"] == 0 and r["feature_error"] == 0
        assert r["ssim"] == pytest.approx(1, abs=1e-5) and r["class_agreement"] == 1
        assert r["recon_accuracy"] == pytest.approx(res.settings["encoder_accuracy_on_originals"][0])
    main = _main_table((tmp_path / "run" / "report.md").read_text())
    assert list(main) == [(m, L) for m in ("upconvnet", "oracle") for L in LAYERS]  # each method's layers together
    assert {main[("oracle", L)]["PSNR dB ↑"] for L in LAYERS} == {"100.00 [100.00, 100.00]"}
    assert len(_csv_rows(tmp_path / "run" / "metrics.csv")) == 2 * len(LAYERS)


def test_no_table_of_the_report_is_wider_than_eight_columns(ckpt, data, tmp_path, torch_cache):
    """Every metric computed, three methods, a floor flagged: each table still reads in a terminal, and every
    metric still has its column (the tables are split, not cut)."""
    _place_random_alexnet_trunk()
    blank = Constant("blank", torch.zeros(3, 32, 32))
    evaluate(
        EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "run"), layers=["conv1", "fc6"], n_boot=5),
        data=data,
        methods=["upconvnet", "deconvnet", blank],
    )
    md = (tmp_path / "run" / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("|")]
    widths = [len(line.strip().strip("|").split("|")) for line in rows]
    assert rows and max(widths) <= 8, max(zip(widths, rows))
    headers = [label for head, _ in _md_tables(md) for label in head]
    assert all(label in headers for label in tables.LABELS.values())  # LPIPS and accuracy included


@pytest.mark.parametrize(
    "case, match",
    [
        ("other_encoder", "trained for encoder"),
        ("missing_layer", "cannot reconstruct from layer"),
        ("image_size", r"expects images of shape \(B, 3, 32, 32\)"),
        ("empty_split", "no images found"),
        ("unknown_method", "unknown method 'nope'; choose one of: .*upconvnet"),
    ],
)
def test_bad_input_fails_clearly_and_writes_nothing(ckpt, tmp_path, case, match):
    kwargs, data = dict(out=str(tmp_path / "run"), data="embedded", embedded_per_class=2, n_boot=5), None
    if case == "other_encoder":
        kwargs["encoder"] = "alexnet_cifar"  # full width: other weights than the decoders were trained on
    elif case == "missing_layer":
        kwargs["layers"] = ["conv3"]
    elif case == "image_size":
        data = ImageData(images=ImageSource(source="embedded", embedded_per_class=2, image_size=24))
    elif case == "empty_split":
        for split in ("train", "test"):
            (tmp_path / "imgs" / split).mkdir(parents=True)
        kwargs.update(data="folder", root=str(tmp_path / "imgs"))
    else:
        kwargs["methods"] = ["upconvnet", "nope"]
    with pytest.raises(ValueError, match=match):
        evaluate(EvalConfig(checkpoints=[ckpt], **kwargs), data=data)
    assert not (tmp_path / "run").exists() and _no_partials(tmp_path)


def test_failure_while_writing_leaves_no_folder(ckpt, data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "grid_plot", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        evaluate(EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "run"), layers=["fc6"], n_boot=5), data=data)
    assert os.listdir(tmp_path) == []


def test_existing_report_is_kept_unless_overwrite(ckpt, data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists"):
        evaluate(EvalConfig(checkpoints=[ckpt], out=str(out), layers=["fc6"], n_boot=5), data=data)
    assert os.listdir(out) == ["keep.txt"]
    evaluate(EvalConfig(checkpoints=[ckpt], out=str(out), layers=["fc6"], n_boot=5, overwrite=True), data=data)
    assert set(os.listdir(out)) == FILES and _no_partials(tmp_path)


def test_cli_runs_from_a_config_and_reports_errors(ckpt, tmp_path, capsys):
    from upconv.cli.main import main

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "checkpoints": [ckpt],
                "out": str(tmp_path / "run"),
                "layers": ["fc6", "conv1"],
                "embedded_per_class": 4,
                "n_boot": 10,
                "device": "cpu",
            }
        )
    )
    main(["evaluate", "--config", str(cfg)])
    assert capsys.readouterr().out.splitlines() == [
        "evaluated split val = a seeded 10 % hold-out of the embedded photographs' crops: 3 of 32 images",
        str(tmp_path / "run" / "report.md"),
    ]
    assert [r["layer"] for r in _csv_rows(tmp_path / "run" / "metrics.csv")] == ["conv1", "fc6"]
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--config", str(cfg), "--out", str(tmp_path / "run2"), "--methods", "[nope]"])
    assert e.value.code == 2 and "upconv: error: unknown method 'nope'" in capsys.readouterr().err


def test_cli_passes_method_options_and_writes_to_runs_eval_by_default(ckpt, tmp_path, capsys, monkeypatch):
    from upconv.cli.main import main
    from upconv.evaluation import plan

    built = []
    real = plan.build_method

    def recording(name, encoder, **options):
        built.append((name, options))
        return real(name, encoder, **options)

    monkeypatch.setattr(plan, "build_method", recording)
    monkeypatch.chdir(tmp_path)
    main(
        [
            "evaluate",
            "--checkpoints",
            f"[{ckpt}]",
            "--layers",
            "[fc6]",
            "--methods",
            "[upconvnet,mahendran_vedaldi]",
            "--method_options",
            "{mahendran_vedaldi: {steps: 1}}",
            "--embedded_per_class",
            "4",
            "--n_boot",
            "5",
            "--lpips",
            "false",
            "--device",
            "cpu",
        ]
    )
    assert built == [("upconvnet", {"checkpoints": [ckpt]}), ("mahendran_vedaldi", {"steps": 1})]
    assert capsys.readouterr().out.splitlines()[-1] == os.path.join(str(tmp_path), "runs", "eval", "report.md")
    assert set(os.listdir(tmp_path / "runs" / "eval")) == FILES


@pytest.mark.parametrize(
    "options, match",
    [
        ("{mahendran_vedaldi: {stepz: 1}}", r"method 'mahendran_vedaldi' cannot be built with options \{'stepz': 1\}"),
        ("{deconvnet: {}}", r"method_options names deconvnet, which is not among the methods \(upconvnet\)"),
    ],
)
def test_method_options_that_cannot_apply_are_one_line(ckpt, tmp_path, capsys, options, match):
    from upconv.cli.main import main

    methods = "[upconvnet,mahendran_vedaldi]" if "mahendran" in options else "[upconvnet]"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(
            [
                "evaluate",
                "--checkpoints",
                f"[{ckpt}]",
                "--methods",
                methods,
                "--method_options",
                options,
                "--out",
                str(tmp_path / "run"),
            ]
        )
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and re.search(match, err)
    assert not (tmp_path / "run").exists()


def test_an_encoder_object_beside_an_encoder_name_is_refused(ckpt, data):
    from upconv.nets.zoo import build_encoder

    enc = build_encoder("alexnet_cifar", kwargs=ENC_KWARGS)
    with pytest.raises(ValueError, match=r"two encoders: EncoderSpec\(name='alexnet_cifar'.* and an Encoder object"):
        evaluate(
            EvalConfig(out=None, checkpoints=[ckpt], encoder="alexnet_cifar", n_boot=5, lpips=False),
            encoder=enc,
            data=data,
        )
    res = evaluate(
        EvalConfig(out=None, checkpoints=[ckpt], layers=["fc6"], n_boot=5, lpips=False), encoder=enc, data=data
    )
    assert res.settings["encoder_weights_hash"] == enc.weights_hash  # the object given is the one evaluated


def test_benchmark_config_covers_every_alexnet_cifar_layer_in_order():
    from jsonargparse import CLI

    from upconv.nets.zoo import build_encoder

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "eval", "alexnet_cifar_depth.yaml")
    cfg = CLI(EvalConfig, args=["--config", path])  # what `upconv evaluate --config` reads: every name known
    assert isinstance(cfg, EvalConfig) and cfg.batch_size == yaml.safe_load(open(path))["batch_size"]
    assert cfg.layers == build_encoder("alexnet_cifar", kwargs={"width": 0.25}).layers
    assert len(cfg.layers) == 11 and cfg.data == "folder" and cfg.split == "val"


# ---------------------------------------------------------------- what the report says about its numbers
class Figures:
    """Records each figure's legend texts and y tick labels as it is saved (depth.png, grid.png)."""

    def __init__(self, monkeypatch):
        import matplotlib.figure

        self.saved = {}
        real = matplotlib.figure.Figure.savefig

        def savefig(fig, path, *args, **kwargs):
            legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
            texts = [t.get_text() for leg in legends for t in leg.get_texts()]
            ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
            fig.canvas.draw()
            clipped = [
                t.get_text()
                for ax in fig.axes
                for t in ax.get_yticklabels()
                if t.get_text() and t.get_window_extent().x0 < 0
            ]  # drawn left of the figure's edge
            marked = {ax.get_title(): any(line.get_marker() == "x" for line in ax.get_lines()) for ax in fig.axes}
            marks = {
                ax.get_title(): {ln.get_marker() for ln in ax.get_lines() if ln.get_linestyle() == "None"}
                for ax in fig.axes
            }
            boxes = [leg.get_window_extent() for leg in legends]
            covers = any(b.overlaps(ax.get_window_extent()) for b in boxes for ax in fig.axes if ax.axison)
            self.saved[os.path.basename(str(path))] = {
                "legend": texts,
                "yticks": ticks,
                "clipped": clipped,
                "marked": marked,
                "marks": marks,
                "legend_covers_a_panel": covers,
            }
            return real(fig, path, *args, **kwargs)

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)


def test_a_method_that_reads_the_true_image_is_labelled_an_optimistic_bound(ckpt, data, tmp_path, monkeypatch):
    figures = Figures(monkeypatch)
    out = tmp_path / "run"
    res = evaluate(
        EvalConfig(
            checkpoints=[ckpt],
            out=str(out),
            layers=["conv1"],
            methods=["upconvnet", "deconvnet", "deconvnet+minmax"],
            n_boot=5,
            lpips=False,
        ),
        data=data,
    )
    # Both DeconvNet variants replay the true image's switches; min-max scaling reads no pixel of it, but that
    # does not make it blind to the image.
    assert {r["method"]: r["reads_target"] for r in res.rows} == {
        "upconvnet": False,
        "deconvnet": True,
        "deconvnet+minmax": True,
    }
    assert list(res.settings["method_caveats"]) == ["deconvnet", "deconvnet+minmax"]
    assert {r["method"]: r["reads_target"] for r in _csv_rows(out / "metrics.csv", floors=True)} == {
        "upconvnet": "False",
        "deconvnet": "True",
        "deconvnet+minmax": "True",
        "floor: mean image": "False",
        "floor: class mean": "False",
        **{f"floor: deconvnet, {k}": "True" for k in ("constant signal", "shuffled signal", "fitted constant")},
        **{f"floor: deconvnet+minmax, {k}": "True" for k in ("constant signal", "shuffled signal")},
    }
    assert (
        json.loads((out / "metrics.json").read_text())["settings"]["method_caveats"] == res.settings["method_caveats"]
    )
    md = (out / "report.md").read_text()
    for _head, body in _md_tables(md.split("## Results")[1].split("### No-information floors")[0]):
        assert [c[0] for c in body] == ["upconvnet", "deconvnet†", "deconvnet+minmax†"]  # † beside its numbers
    note = [line for line in md.splitlines() if line.startswith("† **deconvnet**")]
    assert len(note) == 1 and "fitted to the true image" in note[0] and "optimistic bound" in note[0]
    assert "switches" in note[0]
    note = [line for line in md.splitlines() if line.startswith("† **deconvnet+minmax**")]
    assert len(note) == 1 and "switches" in note[0]
    methods = [t for t in figures.saved["depth.png"]["legend"] if not t.startswith(("×", "▾", "□", "floor: "))]
    methods = [t for t in methods if "own floor" not in t]
    assert methods == ["upconvnet", "deconvnet† (optimistic bound)", "deconvnet+minmax† (optimistic bound)"]
    assert figures.saved["grid.png"]["clipped"] == []  # the long labels fit: none is cut at the left edge
    ticks = [t.removeprefix("⚠ ") for t in figures.saved["grid.png"]["yticks"]]
    assert ticks == [
        "original",
        "floor: mean image",
        "floor: class mean",
        "upconvnet: conv1",
        "deconvnet† (optimistic bound): conv1",
        "deconvnet+minmax† (optimistic bound): conv1",
    ]


def test_encoder_weights_or_kwargs_without_encoder_rebuild_the_recorded_encoder(ckpt, data, tmp_path, capsys):
    from upconv.cli.main import main
    from upconv.nets.builtin import ARCHITECTURES
    from upconv.nets.zoo import build_encoder

    same = tmp_path / "same.pt"  # the seeded weights the decoders were trained on, as a file
    torch.save(build_encoder("alexnet_cifar", kwargs=ENC_KWARGS).model.state_dict(), same)
    res = evaluate(
        EvalConfig(out=None, checkpoints=[ckpt], encoder={"weights": str(same)}, layers=["fc6"], n_boot=5, lpips=False),
        data=data,
    )
    assert res.settings["encoder_spec"]["weights"] == str(same)  # used, and it fits the decoders
    torch.manual_seed(5)
    other = tmp_path / "other.pt"
    torch.save(ARCHITECTURES["alexnet_cifar"].build(**ENC_KWARGS).state_dict(), other)
    with pytest.raises(ValueError, match=r"trained for encoder alexnet_cifar \(weights [0-9a-f]+\), not alexnet_cifar"):
        evaluate(
            EvalConfig(
                out=None, checkpoints=[ckpt], encoder={"weights": str(other)}, layers=["fc6"], n_boot=5, lpips=False
            ),
            data=data,
        )
    with pytest.raises(ValueError, match="trained for encoder"):
        evaluate(
            EvalConfig(
                out=None,
                checkpoints=[ckpt],
                encoder={"kwargs": {"width": 0.5, "num_classes": 8}},
                layers=["fc6"],
                n_boot=5,
                lpips=False,
            ),
            data=data,
        )
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--checkpoints", f"[{ckpt}]", "--encoder.weights", str(other), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "trained for encoder" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a checkpoint", "truncated"])
def test_unreadable_checkpoint_is_one_line_naming_it(ckpt, tmp_path, capsys, content):
    from upconv.cli.main import main

    capsys.readouterr()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(open(ckpt, "rb").read()[:5000] if content == "truncated" else content)
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--checkpoints", f"[{bad}]", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and str(bad) in err
    assert not (tmp_path / "run").exists() and _no_partials(tmp_path)


class NaNData:
    """A data source whose second batch holds a NaN pixel."""

    class_names = [str(k) for k in range(8)]

    def images(self, split, batch_size=None, device="cpu"):
        for k in range(2):
            x = torch.rand(4, 3, 32, 32)
            if k == 1:
                x[2, 1, 5, 5] = float("nan")
            yield x, torch.arange(4)


def test_non_finite_images_are_refused(ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"1 of 4 input images contain NaN or infinite pixels \(batch positions 2\)"):
        evaluate(
            EvalConfig(checkpoints=[ckpt], out=str(tmp_path / "run"), n_boot=5, lpips=False),
            data=NaNData(),
            methods=["upconvnet", Oracle()],
        )
    assert os.listdir(tmp_path) == []


def test_progress_goes_to_stderr_and_stdout_stays_clean(ckpt, tmp_path, capfd, monkeypatch):
    from upconv.cli.main import main

    monkeypatch.setenv("UPCONV_PROGRESS", "1")

    def evaluate(out: str) -> None:
        main(
            ["evaluate", "--checkpoints", f"[{ckpt}]", "--layers", "[fc6]", "--embedded_per_class", "4"]
            + ["--n_boot", "5", "--lpips", "false", "--device", "cpu", "--out", str(tmp_path / out)]
        )

    evaluate("run")
    out, err = capfd.readouterr()
    assert "evaluate" in err and "step" in err  # the bar: batches × methods × layers
    assert out.splitlines()[-1] == str(tmp_path / "run" / "report.md") and len(out.splitlines()) == 2
    monkeypatch.setenv("UPCONV_PROGRESS", "0")
    evaluate("run2")
    assert "evaluate" not in capfd.readouterr().err


# ---------------------------------------------------------------- folders: split, labels, grid
COLOURS = [
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (128, 128, 128),
    (255, 255, 255),
]


def _solid_folder(root, n_classes, per_class):
    """One colour per class (plus noise, so no two images are equal), so an image's class can be read off it."""
    from PIL import Image

    g = torch.Generator().manual_seed(len(str(root)))
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            noise = torch.randint(-20, 21, (32, 32, 3), generator=g)
            pixels = (torch.tensor(COLOURS[c]) + noise).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / f"class{c}" / f"{i}.png")


def _class_of(image):
    rgb = image.mean((1, 2)) * 255  # (3,)
    return int((torch.tensor(COLOURS, dtype=torch.float32) - rgb).norm(dim=1).argmin())


def test_plain_folder_says_which_split_and_skips_accuracy_against_foreign_labels(ckpt, tmp_path, capsys):
    from upconv.cli.main import main

    _solid_folder(tmp_path / "imgs", 2, 10)  # 2 classes; the encoder has 8 outputs
    main(
        [
            "evaluate",
            "--checkpoints",
            f"[{ckpt}]",
            "--data",
            "folder",
            "--root",
            str(tmp_path / "imgs"),
            "--layers",
            "[fc6]",
            "--n_boot",
            "5",
            "--lpips",
            "false",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    said = "split val = a seeded 10 % hold-out of a folder without train/ and test/: 2 of 20 images"
    assert capsys.readouterr().out.splitlines()[0] == f"evaluated {said}"
    md = (tmp_path / "run" / "report.md").read_text()
    assert said in md and "n = 2 images" in md
    assert (
        sum("accuracy skipped: the data has 2 classes but alexnet_cifar outputs 8" in line for line in md.splitlines())
        == 1
    )
    assert "accuracy on x̂ ↑" not in md  # no column of numbers against foreign labels
    row = _csv_rows(tmp_path / "run" / "metrics.csv")[0]
    assert row["recon_accuracy"] == "" and row["class_agreement"] != ""
    res = evaluate(
        EvalConfig(
            out=None,
            checkpoints=[ckpt],
            data="folder",
            root=str(tmp_path / "imgs"),
            split="all",
            layers=["fc6"],
            n_boot=5,
            lpips=False,
        )
    )
    assert res.settings["n_images"] == 20
    assert (
        res.settings["split_description"] == "split all = every image of a folder without train/ and test/: 20 images"
    )


def test_matching_folder_labels_are_labelled_as_an_assumption(ckpt, tmp_path):
    _solid_folder(tmp_path / "imgs", 8, 3)
    res = evaluate(
        EvalConfig(
            checkpoints=[ckpt],
            out=str(tmp_path / "run"),
            data="folder",
            root=str(tmp_path / "imgs"),
            split="all",
            layers=["fc6"],
            n_boot=5,
            lpips=False,
        )
    )
    md = (tmp_path / "run" / "report.md").read_text()
    assert "against the folder's labels, assumed to be the encoder's classes in sorted folder order" in md
    assert res.rows[0]["recon_accuracy"] is not None


def test_chance_level_accuracy_is_flagged():
    from upconv.evaluation.run import chance_note

    assert chance_note((0.10, 0.05, 0.16), 10) is not None  # interval reaches 1/10: no better than chance
    assert chance_note((0.30, 0.101, 0.5), 10) is None
    assert "1/4 = 0.250" in chance_note((0.25, 0.25, 0.25), 4)


def test_grid_images_are_sampled_across_classes(tmp_path):
    _solid_folder(tmp_path / "imgs" / "train", 4, 2)
    _solid_folder(tmp_path / "imgs" / "test", 4, 5)  # class-ordered: the first 4 images are all class 0
    kw = dict(
        encoder={"name": "alexnet_cifar", "kwargs": {"width": 0.25, "num_classes": 4}},
        layers=["conv1"],
        n_boot=5,
        lpips=False,
    )
    objects = dict(
        methods=[Oracle()],
        data=ImageData(images=ImageSource(source="folder", root=str(tmp_path / "imgs"), num_workers=0), batch_size=3),
    )
    res = evaluate(EvalConfig(out=None, batch_size=3, grid_images=4, **kw), **objects)
    assert [_class_of(x) for x in res.originals] == [0, 1, 2, 3]  # one per class, in class order
    assert torch.equal(res.grid[("oracle", "conv1")], res.originals)  # each reconstruction beside its original
    res8 = evaluate(EvalConfig(out=None, batch_size=7, grid_images=8, **kw), **objects)
    assert sorted(_class_of(x) for x in res8.originals) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_grid_picks_equal_a_choice_made_with_every_label_known():
    from upconv.evaluation.grid_picks import GridPicks

    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 3, (n,), generator=g) for n in (5, 1, 7, 4)]
    picks = GridPicks(5, seed=3)
    for b, y in enumerate(batches):
        x = torch.full((len(y), 1, 1, 1), float(b)) + torch.arange(len(y)).view(-1, 1, 1, 1) / 100
        picks.store(("m", "L"), -x, picks.admit(x, y))
        picks.end_batch()
    got, grid = picks.result()
    # Oracle: the same seeded keys drawn for all images at once, ranks per class, smallest (rank, key) first.
    keys_g = torch.Generator().manual_seed(3)
    keys = torch.cat([torch.rand(len(y), generator=keys_g) for y in batches]).tolist()
    labels = torch.cat(batches).tolist()
    ids = [b + i / 100 for b, y in enumerate(batches) for i in range(len(y))]
    order = sorted(range(len(ids)), key=lambda i: keys[i])
    rank, seen = {}, {}
    for i in order:
        rank[i] = seen[labels[i]] = seen.get(labels[i], -1) + 1
    chosen = sorted(sorted(range(len(ids)), key=lambda i: (rank[i], keys[i]))[:5], key=lambda i: (rank[i], labels[i]))
    assert got.flatten().tolist() == pytest.approx([ids[i] for i in chosen])
    assert torch.equal(grid[("m", "L")], -got)


def test_cli_vocabulary_is_shared_and_documented():
    import inspect

    from docstring_parser import parse

    from upconv.privacy.config import PrivacyConfig as privacy  # the dataclass `upconv privacy` is built from

    shared = {"encoder", "data", "root", "out", "device"}
    for fn in (EvalConfig, privacy):  # EvalConfig's fields are the options of `upconv evaluate`
        params = inspect.signature(fn).parameters
        assert shared <= set(params), fn.__name__
        assert params["device"].default == "auto"
        documented = {p.arg_name: p.description for p in parse(fn.__doc__).params}
        assert [p for p in params if not documented.get(p)] == [], fn.__name__  # every argument has help text
    from upconv.cli.main import DEFAULTS

    assert DEFAULTS["evaluate.out"] == privacy().out.replace("privacy", "eval")  # the same kind of default folder
    limit = next(p.description for p in parse(EvalConfig.__doc__).params if p.arg_name == "limit")
    assert "seeded random subset" in limit  # limit means one thing; evenly spaced files are per_folder


def test_from_python_the_default_writes_nothing_and_the_command_writes_runs_eval(ckpt, data, tmp_path, monkeypatch):
    """The README's Python example after step 3: runs/eval/ exists, and ``EvalConfig(...)`` without ``out`` must
    neither refuse it nor write there; ``upconv evaluate`` without ``--out`` still writes runs/eval."""
    from jsonargparse import capture_parser

    from upconv.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "eval" / "cifar10_cpu").mkdir(parents=True)  # what step 3 left
    res = evaluate(EvalConfig(checkpoints=[ckpt], layers=["fc6"], n_boot=5, lpips=False), data=data)
    assert res.out is None and os.listdir(tmp_path / "runs" / "eval") == ["cifar10_cpu"]
    parsed = capture_parser(lambda: main([])).parse_args(["evaluate"])
    assert parsed.evaluate.out == "runs/eval"


def test_a_corrupt_image_in_the_data_folder_is_one_line(ckpt, tmp_path, capsys, monkeypatch):
    from upconv.cli.main import main

    monkeypatch.setenv("UPCONV_PROGRESS", "0")
    _solid_folder(tmp_path / "imgs", 2, 3)
    bad = tmp_path / "imgs" / "class1" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(
            [
                "evaluate",
                "--checkpoints",
                f"[{ckpt}]",
                "--data",
                "folder",
                "--root",
                str(tmp_path / "imgs"),
                "--split",
                "all",
                "--out",
                str(tmp_path / "run"),
            ]
        )
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and f"cannot decode image {bad}" in err
    assert not (tmp_path / "run").exists() and _no_partials(tmp_path)


# ---------------------------------------------------------------- no-information floors and decoder health
class Constant:
    """Reconstructs every image as one fixed image (None: the class-mean image of its label)."""

    def __init__(self, name, image=None, class_means=None, labels=None):
        self.name, self.image, self.class_means, self.labels = name, image, class_means, labels

    def __call__(self, images, layer):
        return self.image.expand_as(images).clone().to(images)


def test_floors_are_the_training_mean_images_scored_like_any_method(ckpt, data):
    train = list(data.images("train"))
    x_tr, y_tr = torch.cat([b for b, _ in train]).double(), torch.cat([y for _, y in train])
    val = list(data.images("val"))
    x, y = torch.cat([b for b, _ in val]), torch.cat([l for _, l in val])
    mean = x_tr.mean(0)  # the oracle: the floors by brute force
    class_mean = torch.stack([x_tr[y_tr == k].mean(0) for k in range(8)])
    res = evaluate(
        EvalConfig(out=None, checkpoints=[ckpt], layers=["conv1"], n_boot=5, lpips=False), data=data, methods=[Oracle()]
    )
    floors = {r["method"]: r for r in res.floor_rows}
    from upconv.core import metrics as M

    want_mean = M.psnr(mean.float().expand_as(x), x).double().mean().item()
    want_class = M.psnr(class_mean[y].float(), x).double().mean().item()
    assert floors["floor: mean image"]["psnr"] == pytest.approx(want_mean, abs=1e-4)
    assert floors["floor: class mean"]["psnr"] == pytest.approx(want_class, abs=1e-4)
    assert want_class > want_mean  # knowing the class helps
    assert res.settings["floors"]["n_images"] == len(x_tr)
    assert res.rows[0]["floor_verdict"] is None  # the exact oracle clears both floors


def test_a_row_at_or_below_a_floor_is_flagged_in_every_output(ckpt, data, tmp_path, monkeypatch):
    figures = Figures(monkeypatch)
    train = torch.cat([b for b, _ in data.images("train")])
    blank = Constant("blank", torch.zeros(3, 32, 32))  # knows nothing and is worse than the mean image
    mean = Constant("mean", train.double().mean(0).float())  # exactly the mean-image floor
    out = tmp_path / "run"
    res = evaluate(
        EvalConfig(checkpoints=[ckpt], out=str(out), layers=["conv1"], n_boot=5, lpips=False),
        data=data,
        methods=[blank, mean, Oracle()],
    )
    verdicts = {r["method"]: r["floor_verdict"] for r in res.rows}
    assert "no-information" in verdicts["blank"] and "no-information" in verdicts["mean"]  # at counts as below
    assert verdicts["oracle"] is None
    csv_rows = {r["method"]: r for r in _csv_rows(out / "metrics.csv")}
    assert "no-information" in csv_rows["blank"]["floor_verdict"] and csv_rows["oracle"]["floor_verdict"] == ""
    assert json.loads((out / "metrics.json").read_text())["rows"][0]["floor_verdict"] == verdicts["blank"]
    md = (out / "report.md").read_text()
    main = _main_table(md)
    assert main[("blank", "conv1")]["floor verdict"] == "⚠ at/below the mean-image floor"
    assert (
        main[("blank", "conv1")]["decoder"] == "—" and main[("oracle", "conv1")]["floor verdict"] == "above the floors"
    )
    assert any(
        line.startswith("> ⚠ blank at conv1: PSNR") and "does not measure the layer's information" in line
        for line in md.splitlines()
    )
    assert "### No-information floors" in md and "| mean image |" in md and "| class mean |" in md
    assert FIG_MARK in figures.saved["depth.png"]["legend"]
    marked = figures.saved["depth.png"]["marked"]  # the verdict is by PSNR: its × on that panel alone
    assert marked["PSNR dB ↑"] and not marked["SSIM ↑"] and not marked["MSE ↓"]
    assert figures.saved["grid.png"]["clipped"] == []  # every row label inside the figure
    assert {"floor: mean image", "floor: class mean"} <= set(figures.saved["depth.png"]["legend"])
    assert (
        "⚠ blank: conv1" in figures.saved["grid.png"]["yticks"]
        and "oracle: conv1" in figures.saved["grid.png"]["yticks"]
    )


class SwitchReader(Method):
    """Reads the true image beyond its features (as DeconvNet's switches do) and nothing of the features: a
    blurred copy of the image, far above the mean-image floors. Its own floor is itself."""

    name, reads_target, floor_kinds = "switches", True, ("constant signal", "slightly off")

    def reconstruct(self, batch, layer):
        return torch.nn.functional.avg_pool2d(batch.images, 3, 1, 1, count_include_pad=False)

    def reconstruct_with_floors(self, batch, layer):
        xh = self.reconstruct(batch, layer)
        return xh, {"constant signal": xh.clone(), "slightly off": 0.97 * xh + 0.015}  # a touch worse, always


def test_a_method_that_reads_the_image_is_judged_against_its_own_floors(ckpt, data, tmp_path, monkeypatch):
    """A figure that clears the mean-image floors only by what it reads of the true image (DeconvNet at fc8
    scored as well from an all-ones signal) is flagged beside its number in report.md, metrics.csv and
    metrics.json, and its own floors are reported."""
    figures = Figures(monkeypatch)
    out = tmp_path / "run"
    res = evaluate(
        EvalConfig(checkpoints=[ckpt], out=str(out), layers=["conv1"], n_boot=50, lpips=False),
        data=data,
        methods=[SwitchReader(), Oracle()],
    )
    rows = {r["method"]: r for r in res.rows}
    floor = {r["method"]: r["psnr"] for r in res.floor_rows}
    assert rows["switches"]["psnr"] > floor["floor: mean image"] + 3  # the mean-image floors see nothing wrong
    verdict = "not above its own no-information floor (constant signal, slightly off)"
    assert rows["switches"]["floor_verdict"] == verdict
    assert rows["switches"]["own_floors"]["constant signal"]["margin"] == [0.0, 0.0, 0.0]  # paired: same images
    # Above that floor beyond doubt, but by less than the figure's own uncertainty: not above it (fc8's 0.03 dB).
    low = rows["switches"]["own_floors"]["slightly off"]["margin"][1]
    assert 0 < low < (rows["switches"]["psnr_hi"] - rows["switches"]["psnr_lo"]) / 2
    assert rows["oracle"]["floor_verdict"] is None and rows["oracle"]["own_floors"] is None
    own = res.own_floor_rows[0]
    assert (own["method"], own["layer"], own["psnr"]) == (
        "floor: switches, constant signal",
        "conv1",
        rows["switches"]["psnr"],
    )
    csv_rows = {r["method"]: r for r in _csv_rows(out / "metrics.csv", floors=True)}
    assert csv_rows["switches"]["floor_verdict"] == rows["switches"]["floor_verdict"]
    assert "floor: switches, constant signal" in csv_rows
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["rows"][0]["floor_verdict"] == rows["switches"]["floor_verdict"]
    assert saved["own_floor_rows"] == res.own_floor_rows
    md = (out / "report.md").read_text()
    main = _main_table(md)
    assert main[("switches†", "conv1")]["floor verdict"] == "⚠ not above its own floor (constant signal, slightly off)"
    assert main[("oracle", "conv1")]["floor verdict"] == "above the floors"
    assert "### Own floors" in md
    assert any(
        line.startswith("> ⚠ switches at conv1: PSNR") and "paired difference" in line for line in md.splitlines()
    )
    assert figures.saved["depth.png"]["marked"]["PSNR dB ↑"]  # its × on the PSNR panel
    assert "⚠ switches† (optimistic bound): conv1" in figures.saved["grid.png"]["yticks"]


class ClassMeanImage(Method):
    """Reconstructs every image as the class-mean training image of its label: exactly the class-mean floor."""

    name = "class mean"

    def __init__(self, class_means):
        self.class_means = class_means

    def reconstruct(self, batch, layer):
        return self.class_means[batch.labels.cpu()].to(batch.images)


def test_each_verdict_has_its_own_mark_and_the_legend_covers_no_panel(ckpt, data, tmp_path, monkeypatch):
    """depth.png drew one red × for two verdicts (below the mean image, below the class mean) and for a failed
    decoder, and its legend sat over the first panel's lines."""
    from upconv.core.floors import Floors
    from upconv.evaluation.figures import MARKS

    figures = Figures(monkeypatch)
    floors = Floors.from_batches(data.images("train", batch_size=250), "train", n_classes=8)
    state = torch.load(ckpt, weights_only=True)
    record = {"status": "ok", "healthy": True, "final_loss": 0.1, "recoveries": 0, "lr_scale": 1.0, "events": []}
    state["upconv"]["health"] = {L: dict(record, status="failed" if L == "fc6" else "ok") for L in LAYERS}
    torch.save(state, tmp_path / "health.ckpt")
    blank = Constant("blank", torch.zeros(3, 32, 32))
    evaluate(
        EvalConfig(checkpoints=[str(tmp_path / "health.ckpt")], out=str(tmp_path / "run"), n_boot=5, lpips=False),
        data=data,
        methods=["upconvnet", blank, ClassMeanImage(floors.class_means)],
    )
    saved = figures.saved["depth.png"]
    assert {"x", "v", "s"} <= saved["marks"]["PSNR dB ↑"]  # below the mean image, the class mean, failed decoder
    assert saved["marks"]["SSIM ↑"] == {"s"}  # the floor verdicts are by PSNR; a failed decoder on every panel
    assert {MARKS["floor"][2], MARKS["class"][2], MARKS["health"][2]} <= set(saved["legend"])
    assert not saved["legend_covers_a_panel"]


def test_a_decoder_that_failed_in_training_is_named_beside_its_number(ckpt, data, tmp_path):
    state = torch.load(ckpt, weights_only=True)
    record = {"status": "ok", "healthy": True, "final_loss": 0.1, "recoveries": 0, "lr_scale": 1.0, "events": []}
    state["upconv"]["health"] = {L: dict(record) for L in LAYERS}
    state["upconv"]["health"]["fc6"].update(status="failed", healthy=False, recoveries=3)
    state["upconv"]["health"]["pool2"].update(status="recovered", recoveries=1)
    path = tmp_path / "health.ckpt"
    torch.save(state, path)
    out = tmp_path / "run"
    res = evaluate(EvalConfig(checkpoints=[str(path)], out=str(out), n_boot=5, lpips=False), data=data)
    assert [r["decoder_health"] for r in res.rows] == ["ok", "recovered", "failed"]
    md = (out / "report.md").read_text()
    assert any(
        line.startswith("> ⚠ upconvnet at fc6: its decoder diverged in training and was marked failed")
        for line in md.splitlines()
    )
    assert any(
        line.startswith(">") and "upconvnet at pool2: its decoder diverged in training and was recovered" in line
        for line in md.splitlines()
    )
    health = {L: row["decoder"] for (m, L), row in _main_table(md).items()}
    assert health == {"conv1": "ok", "pool2": "decoder recovered in training", "fc6": "⚠ decoder failed in training"}
    assert {r["layer"]: r["decoder_health"] for r in _csv_rows(out / "metrics.csv")}["fc6"] == "failed"


def test_methods_reuse_the_evaluations_features_instead_of_running_the_encoder_again(ckpt, data, monkeypatch):
    """One encoder pass over each batch of originals feeds every method and layer; the encoder runs again
    only on reconstructions (for the feature error and class agreement)."""
    from upconv.nets.encoder import Encoder

    originals = torch.cat([b for b, _ in data.images("val")])  # (9, 3, 32, 32): one batch of 32
    on_originals = []
    real = Encoder.forward

    def counting(self, images, layers):
        if images.shape == originals.shape and torch.equal(images.cpu(), originals):
            on_originals.append(list(self.resolve(layers)))
        return real(self, images, layers)

    monkeypatch.setattr(Encoder, "forward", counting)
    evaluate(
        EvalConfig(
            out=None,
            checkpoints=[ckpt],
            methods=["upconvnet", "mahendran_vedaldi"],
            method_options={"mahendran_vedaldi": {"steps": 1}},
            n_boot=5,
            lpips=False,
        ),
        data=data,
    )
    assert on_originals == [["conv1", "pool2", "fc6", "fc8"]]  # the evaluation's own pass (fc8: class scores)
