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


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory: pytest.TempPathFactory):
    """A 2-level AutoencoderKL (downsample 2, 4 latent channels) saved with save_pretrained."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=8, sample_size=32)
    out = tmp_path_factory.mktemp("tiny_vae")
    vae.save_pretrained(out)
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fullsize", action="store_true",
                     help="run the tests marked fullsize (published networks at full size: minutes, ~13 GB)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fullsize"):
        return
    skip = pytest.mark.skip(reason="fullsize: run with --fullsize (.ci/run does, as its own step)")
    for item in items:
        if "fullsize" in item.keywords:
            item.add_marker(skip)
