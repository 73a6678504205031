import os

import pytest
import torch

from upconv.data.augment import random_crop_flip
from upconv.data.batches import DeviceBatches, ShardedOrder
from upconv.data.embedded import embedded_images
from upconv.data.source import ImageSource
from upconv.training.datamodule import ImageData


def test_embedded_images_are_deterministic_balanced_and_offline():
    x1, y1, names = embedded_images(5, 32, seed=3)
    x2, y2, _ = embedded_images(5, 32, seed=3)
    x3, _, _ = embedded_images(5, 32, seed=4)
    assert x1.dtype == torch.uint8 and x1.shape == (5 * len(names), 3, 32, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert torch.bincount(y1).tolist() == [5] * len(names)
    assert x1.float().std() > 20  # real photographs, not blank images


def test_random_crop_flip_returns_a_crop_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    pad = 2
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    out = random_crop_flip(x, pad)
    for b in range(2):
        candidates = [padded[b, :, i : i + 6, j : j + 6] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[b], c) for c in candidates)


def test_device_batches_cover_every_image_once_per_epoch():
    x = torch.arange(10).view(10, 1, 1, 1).to(torch.uint8)
    batches = DeviceBatches(x, torch.arange(10), batch_size=4, shuffle=True, seed=0, drop_last=False)
    seen = torch.cat([b for b, _ in batches]).flatten().sort().values
    assert len(batches) == 3 and torch.equal(seen, torch.arange(10, dtype=torch.uint8))


def _shards(n, batch_size, world, epoch, drop_last=True, shuffle=True, seed=0):
    """Each rank's batches (lists of image indices) for one epoch, built as every rank would build them."""
    out = []
    for rank in range(world):
        order = ShardedOrder(n, batch_size, shuffle, seed, drop_last, rank=rank, world_size=world)
        order.set_epoch(epoch)
        out.append([b.tolist() for b in order])
    return out


@pytest.mark.parametrize("n, world", [(96, 2), (100, 3), (50, 4)])
def test_training_shards_are_disjoint_cover_the_epoch_and_match_one_process_with_the_global_batch(n, world):
    b = 8
    for epoch in range(3):
        shards = _shards(n, b, world, epoch)
        steps = n // (b * world)
        assert [len(s) for s in shards] == [steps] * world  # every rank the same number of steps
        assert all(len(batch) == b for s in shards for batch in s)
        flat = [i for s in shards for batch in s for i in batch]
        assert len(flat) == len(set(flat)) == steps * b * world  # disjoint; only the remainder (n mod G) is left out
        single = _shards(n, b * world, 1, epoch)[0]  # one process, batch = the global batch
        for i in range(steps):  # step i of the ranks together = step i of the one process
            assert sorted(j for s in shards for j in s[i]) == sorted(single[i])
    first, second = (_shards(n, b, world, e) for e in (0, 1))
    assert first != second and first == _shards(n, b, world, 0)  # a new shuffle per epoch, a pure function of it
    assert _shards(n, b, world, 0, seed=1) != first


def test_the_dropped_remainder_changes_with_the_epoch_so_every_image_is_trained_on():
    seen = {i for e in range(20) for s in _shards(21, 4, 2, e) for batch in s for i in batch}
    assert seen == set(range(21))


def test_evaluation_shards_hold_every_image_exactly_once_without_padding():
    shards = _shards(33, 8, 2, 0, drop_last=False, shuffle=False)
    flat = sorted(i for s in shards for batch in s for i in batch)
    assert flat == list(range(33))
    assert [len(s) for s in shards] == [3, 2]  # 17 and 16 images: uneven, never duplicated


def test_a_split_smaller_than_the_global_batch_is_shared_evenly_and_a_tiny_one_is_refused():
    shards = _shards(10, 8, 2, 0)
    assert [[len(batch) for batch in s] for s in shards] == [[5], [5]]
    with pytest.raises(ValueError, match="3 images, fewer than the 4 data-parallel processes"):
        ShardedOrder(3, 8, True, 0, True, rank=0, world_size=4)


def test_device_batches_take_the_epoch_lightning_sets():
    x = torch.arange(40).view(40, 1, 1, 1).to(torch.uint8)
    batches = DeviceBatches(
        x, torch.arange(40), batch_size=4, shuffle=True, seed=0, drop_last=True, rank=1, world_size=2
    )
    batches.sampler.set_epoch(5)  # what Lightning's fit loop calls at the start of every epoch
    got = [b.flatten().tolist() for b, _ in batches]
    assert got == _shards(40, 4, 2, 5)[1] and len(batches) == 5


def test_image_folder_resizes_splits_and_yields_unit_range_floats(tmp_path, image_folder):
    image_folder(tmp_path / "train")
    image_folder(tmp_path / "test", per_class=2)
    dm = ImageData(images=ImageSource(source="folder", root=str(tmp_path), image_size=16, num_workers=0), batch_size=4)
    batches = list(dm.images("val"))
    x = torch.cat([b for b, _ in batches])
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert dm.class_names == ["a", "b"] and len(dm.source.tensors("train")[0]) == 6


def test_empty_or_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        ImageData(images=ImageSource(source="folder", root=str(tmp_path / "nope"), num_workers=0)).setup()
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found under"):
        ImageData(images=ImageSource(source="folder", root=str(tmp_path / "empty"), num_workers=0)).setup()
    with pytest.raises(ValueError, match="needs a root folder"):
        ImageData(images=ImageSource(source="folder"))
    with pytest.raises(ValueError, match="unknown split"):
        next(ImageData().images("test"))


@pytest.mark.parametrize("num_workers", [0, 2])  # a worker re-raises with its whole traceback in the message
def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path, num_workers, image_folder):
    from upconv.core.files import UnreadableFileError

    image_folder(tmp_path / "train")
    image_folder(tmp_path / "test")
    bad = tmp_path / "test" / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    dm = ImageData(images=ImageSource(source="folder", root=str(tmp_path), image_size=16, num_workers=num_workers))
    with pytest.raises(UnreadableFileError) as e:
        dm.setup()
    assert str(e.value).startswith(f"cannot decode image {bad} ") and len(str(e.value).splitlines()) == 1
    streamed = ImageData(
        images=ImageSource(source="folder", root=str(tmp_path), image_size=16, in_memory=False, num_workers=num_workers)
    )
    with pytest.raises(UnreadableFileError) as e:
        list(streamed.images("val"))
    assert str(bad) in str(e.value) and len(str(e.value).splitlines()) == 1


def test_split_descriptions_say_what_and_how_many(tmp_path, image_folder):
    image_folder(tmp_path / "plain", per_class=10)
    plain = ImageData(images=ImageSource(source="folder", root=str(tmp_path / "plain"), image_size=16, num_workers=0))
    assert (
        plain.describe("val")
        == "split val = a seeded 10 % hold-out of a folder without train/ and test/: 2 of 20 images"
    )
    assert plain.split_size("all") == 20 and len(torch.cat([x for x, _ in plain.images("all")])) == 20
    image_folder(tmp_path / "tree" / "train")
    image_folder(tmp_path / "tree" / "test", per_class=2)
    tree = ImageData(
        images=ImageSource(source="folder", root=str(tmp_path / "tree"), image_size=16, num_workers=0, limit_val=3)
    )
    assert tree.describe("val") == "split val = the folder's test/, a seeded random subset: 3 of 4 images"
    assert tree.describe("train") == "split train = the folder's train/: 6 images"


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_image_data_serves_its_image_sources_batches_and_the_cli_fills_the_source(tmp_path, monkeypatch):
    """``ImageData(images=ImageSource(...))`` serves exactly the source's val batches (same images, same
    order, same batch size), and ``--data.images.limit_train`` on train.py's command line reaches the source."""
    params = dict(source="embedded", embedded_per_class=20, limit_val=11, seed=3)  # 16 val images
    dm = ImageData(images=ImageSource(**params), batch_size=4)
    dm.setup()
    served = [dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader()]
    expected = list(ImageSource(**params).images("val", batch_size=4))
    assert [len(x) for x, _ in served] == [4, 4, 3] == [len(x) for x, _ in expected]
    for (x, y), (ex, ey) in zip(served, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert dm.hparams.images["seed"] == 3 and dm.hparams.batch_size == 4 and ImageData().source == ImageSource()

    from upconv.training.cli import UpconvCLI

    monkeypatch.setenv("UPCONV_WANDB", "0")
    monkeypatch.chdir(tmp_path)
    config = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml")
    args = ["--config", config, "--data.images.limit_train", "7", "--data.images.embedded_per_class", "2"]
    args += ["--model.init_args.encoder.weights=null", "--model.init_args.width=4", "--model.init_args.fc_width=16"]
    cli = UpconvCLI(None, ImageData, subclass_mode_model=True, args=args, run=False, auto_configure_optimizers=False)
    assert isinstance(cli.datamodule.source, ImageSource)
    assert cli.datamodule.source.limit_train == 7 and cli.datamodule.source.embedded_per_class == 2
    assert cli.datamodule.hparams.batch_size == 64  # configs/demo.yaml's
