"""Data-parallel training on the CPU: two gloo ranks launched by Lightning's ``ddp`` strategy, as
``python train.py fit --trainer.strategy ddp --trainer.devices 2`` launches them (``tests/ddp_run.py``).

What a user of several GPUs relies on: each rank trains on its own part of every epoch, the ranks stay the
same model (the health guard included), the validation figures are the whole split's, and N ranks with batch
b train exactly as one process with batch N·b would.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from ddp_run import build, image_hashes, run

from upconv.core import metrics as M
from upconv.data.source import ImageSource
from upconv.training.datamodule import ImageData

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EMBEDDED = {"source": "embedded", "embedded_per_class": 12, "limit_train": 64}
pytestmark = pytest.mark.slow


def launch(tmp_path, **settings):
    """Run ``tests/ddp_run.py`` with ``settings`` in a fresh process (Lightning's ddp launcher re-runs it per
    rank); returns every rank's record, the checkpoint writes and what all ranks wrote to stderr."""
    out = tmp_path / "out"
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"out": str(out), "watchdog": 300, **settings}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_run.py"), str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(settings.get("devices", 1))]
    saves = (out / "saves.txt").read_text().split("\n")[:-1] if (out / "saves.txt").exists() else []
    return ranks, saves, done.stderr


def split_hashes(data: dict, split: str) -> list[str]:
    dm = ImageData(images=ImageSource(**data), augment=False)
    dm.setup()
    images = dm.source.tensors(split)[0]  # uint8 (N, C, H, W)
    return image_hashes(images.float() / 255)


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_ranks_share_each_epoch_stay_one_model_and_equal_one_process_with_the_global_batch(tmp_path):
    data = {**EMBEDDED, "limit_val": 33}
    # The paper's decoders, without normalisation: batch norm would normalise over each rank's half of the
    # batch (SyncBatchNorm, which fixes that, runs on GPUs only), and behind any normalisation a convolution's
    # bias has no true gradient, so Adam turns its rounding noise into full steps that the output never sees.
    settings = dict(devices=2, batch_size=8, epochs=3, checkpoint=True, data=data, model={"norm": "none"})
    (r0, r1), saves, stderr = launch(tmp_path, **settings)
    assert stderr.count("data parallel: global batch 16 = 8 per device × 2 processes") == 1  # rank 0, once
    train = split_hashes(data, "train")
    assert len(set(train)) == len(train) == 64  # the probe can tell every image apart
    for epoch in range(3):  # 64 images = 4 steps × (8 per rank × 2 ranks): nothing left over
        a, b = r0["train"][epoch], r1["train"][epoch]
        assert len(a) == len(b) == 32 and not set(a) & set(b) and set(a) | set(b) == set(train)
    assert r0["train"][0] != r0["train"][1] != r0["train"][2]  # a new shuffle every epoch
    val = split_hashes(data, "val")
    for epoch in range(3):  # every held-out image scored once, by one rank (uneven shards: no padding)
        a, b = r0["val"][epoch], r1["val"][epoch]
        assert sorted(a + b) == sorted(val) and abs(len(a) - len(b)) <= 1
    assert len(val) % 2 == 1  # the shards are uneven, so a mean of the two ranks' means would be wrong
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k  # bit for bit one model
    assert r0["health"] == r1["health"] and r0["metrics"] == r1["metrics"]
    assert saves == [f"0 epoch={e}-step={4 * (e + 1)}.ckpt" for e in range(3)]  # rank 0 alone writes
    last = torch.load(tmp_path / "out" / "ckpt" / "epoch=2-step=12.ckpt", weights_only=True)
    assert last["upconv"]["health"] == r0["health"]

    # The logged validation figures are the whole split's, from the final weights.
    module, dm = build({**settings, "batch_size": 64})
    module.decoders.load_state_dict(r0["state"])
    dm.setup()
    x = dm.source.tensors("val")[0].float() / 255  # (9, 3, 32, 32)
    with torch.no_grad():
        recon = module(x)
    for name, x_hat in recon.items():
        psnr = M.psnr(x_hat.float().clamp(0, 1), x).mean().item()
        assert r0["metrics"][f"val/psnr_{name}"] == pytest.approx(psnr, abs=1e-4)

    # The equivalence oracle: one process, batch 2 × 8, over the same images in the same order.
    one = run(
        {**settings, "devices": 1, "batch_size": 16, "checkpoint": False, "out": str(tmp_path / "one"), "threads": 2}
    )
    for epoch in range(3):
        assert sorted(one["train"][epoch]) == sorted(r0["train"][epoch] + r1["train"][epoch])
        for step in range(4):  # step by step the same images: rank 0's 8 and rank 1's 8 are the 16
            both = r0["train"][epoch][8 * step : 8 * step + 8] + r1["train"][epoch][8 * step : 8 * step + 8]
            assert sorted(one["train"][epoch][16 * step : 16 * step + 16]) == sorted(both)
    moved = max_difference(r0["state"], build(settings)[0].decoders.state_dict())
    gap = max_difference(r0["state"], one["state"])
    # Trained (about lr = 1e-3 per step), and the same training up to float rounding (a step over other images
    # would differ by about as much as the weights moved).
    assert moved > 1e-3 and gap < 0.01 * moved, (moved, gap)


def test_a_fault_in_one_ranks_shard_gets_the_same_guard_action_on_both_ranks(tmp_path):
    fault = {"rank": 1, "steps": [5, 6, 7], "value": 1e4}  # three steps in a row: past the guard's patience
    (r0, r1), _, stderr = launch(
        tmp_path, devices=2, batch_size=8, epochs=3, data=EMBEDDED, fault=fault, limit_val_batches=0
    )  # the default decoders: batch norm, statistics per rank
    events = [(e["step"], e["layer"], e["kind"], e["action"]) for n in r0["health"] for e in r0["health"][n]["events"]]
    restores = [e for e in events if e[3].startswith("restored")]
    assert restores and all(step == 8 for step, *_ in restores), events  # the check after the fault, on rank 0
    assert r0["health"] == r1["health"]  # whose own data was clean, as on rank 1
    for step, layer, kind, _ in restores:  # told once, by rank 0, though both ranks acted
        assert stderr.count(f"decoder {layer} {kind} at step {step}") == 1, stderr[-2000:]
    assert stderr.count("keep per-rank running statistics") == 1  # the batch-norm warning, from rank 0 alone
    for k, v in r0["params"].items():  # the running statistics of batch norm are each rank's own
        assert torch.equal(v, r1["params"][k]), k
    assert all(torch.isfinite(v).all() for v in r0["state"].values())


def test_streamed_images_are_shared_by_lightnings_sampler_and_validated_once(tmp_path, image_folder):
    image_folder(tmp_path / "data" / "train", per_class=16, size=(32, 32))
    image_folder(tmp_path / "data" / "test", per_class=5, size=(32, 32), seed=1)  # 10 held-out images
    data = {"source": "folder", "root": str(tmp_path / "data"), "in_memory": False, "num_workers": 0}
    (r0, r1), _, _ = launch(tmp_path, devices=2, batch_size=8, epochs=1, data=data)
    a, b = r0["train"][0], r1["train"][0]
    assert len(a) == len(b) == 16 and not set(a) & set(b) and set(a) | set(b) == set(split_hashes(data, "train"))
    assert sorted(r0["val"][0] + r1["val"][0]) == sorted(split_hashes(data, "val"))
