import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
