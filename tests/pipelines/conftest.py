import pytest

from domain_guidance.io.checkpoints import retarget, save_model
from tests.core.helpers import tiny_dit


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """A tiny 8x8x1 pixel model pair on disk: `pre` (10 classes + null) and `ft` (3 classes + null)."""
    root = tmp_path_factory.mktemp("ckpt")
    pre = tiny_dit(num_classes=10, seed=1, in_channels=1, latent=False)
    save_model(root / "pre", pre, pre.config)
    ft, ft_cfg = retarget(pre, pre.config, num_classes=3, seed=5)
    save_model(root / "ft", ft, ft_cfg)
    return root
