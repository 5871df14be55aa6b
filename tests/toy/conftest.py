import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The 2-D study runs many tiny tensor ops: one thread is faster and immune to a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
