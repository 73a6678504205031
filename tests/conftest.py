import os

import pytest
import torch

# Two threads per process; under pytest-xdist (``-n N``) the cores are shared between the N workers.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------- shared test helpers
def write_image_folder(root, per_class: int = 3, size=(20, 20), classes=("a", "b"), seed: int = 0) -> str:
    """An ImageFolder tree ``root/<class>/<i>.png`` of seeded random RGB images (H, W = ``size``)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for cls in classes:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(per_class):
            pixels = (torch.rand(*size, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(os.path.join(root, cls, f"{i}.png"))
    return str(root)


def hook_count(model: torch.nn.Module) -> int:
    """Forward, pre-forward and backward hooks left on any submodule (a tool must leave none behind)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", None) or {})
        for m in model.modules()
    )


@pytest.fixture
def image_folder():
    """``image_folder(root, per_class=3, size=(20, 20), classes=("a", "b"), seed=0)`` writes a small ImageFolder."""
    return write_image_folder


@pytest.fixture
def hooks():
    """``hooks(model)``: the number of hooks left on ``model``'s modules."""
    return hook_count
