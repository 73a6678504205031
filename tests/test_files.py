import pytest
import torch
from PIL import Image

from upconv.core.files import UnreadableFileError, load_torch_file, read_image
from upconv.core.runtime import progress, resolve_device


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture
def weights(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    return good


def test_a_good_file_loads(weights):
    torch.testing.assert_close(load_torch_file(weights, "weights file")["w"], torch.arange(3.0))


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", r"weights file not found: .*nothere\.pt"),
        ("empty", r"weights file .*bad\.pt is empty \(0 bytes\)"),
        ("truncated", r"weights file .*bad\.pt is truncated or corrupt \(.*\); re-create it"),
        ("garbage", r"weights file .*bad\.pt is not a PyTorch file"),
        ("pickle", r"refused to load weights file .*bad\.pt: it holds pickled Python objects"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, weights, kind, message, capsys):
    bad = tmp_path / "bad.pt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        data = weights.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 4)
    elif kind == "pickle":
        torch.save({"x": Evil()}, bad)
    path = tmp_path / "nothere.pt" if kind == "missing" else bad
    with pytest.raises((UnreadableFileError, FileNotFoundError), match=message) as info:
        load_torch_file(path, "weights file")
    assert "\n" not in str(info.value)
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)  # no library traceback
    assert "pwned" not in capsys.readouterr().out


def test_corrupt_image_is_named(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "ok.png")
    assert read_image(tmp_path / "ok.png").getpixel((0, 0)) == (255, 0, 0)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UnreadableFileError, match=r"cannot decode image .*broken\.jpg .*remove or replace the file"):
        read_image(tmp_path / "broken.jpg")


def test_resolve_device_and_progress(monkeypatch, capsys):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0': expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    monkeypatch.setenv("UPCONV_PROGRESS", "1")
    assert list(progress(range(3), "counting")) == [0, 1, 2]
    err = capsys.readouterr()
    assert "counting" in err.err and err.out == ""  # bars go to stderr only
    monkeypatch.setenv("UPCONV_PROGRESS", "0")
    assert list(progress(range(3), "silent")) == [0, 1, 2]
    assert "silent" not in capsys.readouterr().err


def test_an_atomic_folder_keeps_the_entries_it_is_told_to_keep(tmp_path):
    from upconv.core.files import atomic_folder, check_out

    out = tmp_path / "run"
    (out / "points" / "u").mkdir(parents=True)
    (out / "points" / "u" / "unit.json").write_text("{}")
    check_out(out, keep=("points",))  # a run folder holding only its units is not "not empty"
    with atomic_folder(out, keep=("points",)) as tmp:
        open(f"{tmp}/report.md", "w").write("first")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        check_out(out, keep=("points",))
    with atomic_folder(out, overwrite=True, keep=("points",)) as tmp:
        open(f"{tmp}/report2.md", "w").write("second")
    assert sorted(p.name for p in out.iterdir()) == ["points", "report2.md"]  # the old report went, units stayed
    assert (out / "points" / "u" / "unit.json").read_text() == "{}"
    with pytest.raises(RuntimeError), atomic_folder(out, overwrite=True, keep=("points",)) as tmp:
        open(f"{tmp}/half.md", "w").write("x")
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["points", "report2.md"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
