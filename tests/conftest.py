import os

import pytest
import torch

# Tests are CPU-only and small; keep them deterministic and cheap on 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny-tensor work is faster and immune to a busy machine without OpenMP spinning."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
