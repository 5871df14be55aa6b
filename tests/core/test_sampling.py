import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.guidance import build_guided_denoiser
from domain_guidance.core.models import DiT
from domain_guidance.core.models.adapters import add_lora, adapter_disabled
from domain_guidance.core.sampling import sample, sample_from_seeds
from domain_guidance.core.seeds import PerSampleNoise
from tests.core.helpers import sampling_rounding_bound, tiny_dit


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


W = 2.0
SEEDS, LABELS = list(range(100, 108)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _dog(dtype: torch.dtype = torch.float32):
    """DoG-guided tiny pixel DiTs (fine-tune: 3 classes, guide: 10), in float32 or as float64 twins."""
    pre = tiny_dit(num_classes=10, seed=1, in_channels=3, latent=False).to(dtype)
    ft = tiny_dit(num_classes=3, seed=2, in_channels=3, latent=False).to(dtype)
    return build_guided_denoiser("dog", Denoiser(ft, ft.config), Denoiser(pre, pre.config), scale=W), ft.config


def _kw(sampler: str) -> dict:
    """DDPM, and DDIM with eta = 1: both draw fresh noise at every step, from each sample's own stream."""
    return dict(sampler=sampler, steps=20, clip_denoised=True, **({"eta": 1.0} if sampler == "ddim" else {}))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_gives_the_same_image_up_to_float_rounding_whatever_the_batch_size_or_order(sampler):
    """README: the same seed gives the same image up to float rounding, whatever the batch size, the process
    count (a process samples a subset of the seeds: another batch composition) or the order.

    Not bit for bit: the CPU's matmul kernels block and sum differently for another batch size (on an
    Intel AMX CPU seed 3 in a batch of 2 and of 3 differ in the last bits). Every composition must sit
    within float32's rounding bound of the exact image (float64 twins of the networks, the same noise)."""
    g, cfg = _dog()
    noise = PerSampleNoise(SEEDS)  # x_T, then every step's noise, from each seed's stream (as sample_from_seeds)
    exact = sample(_dog(torch.float64)[0], noise.randn((3, 8, 8)).double(), LABELS, step_noise=noise,
                   **_kw(sampler))  # (8, 3, 8, 8)
    bound = sampling_rounding_bound(cfg, float(exact.abs().max()), steps=20, w=W)
    runs = {}
    for batch in (1, 3, 8):
        runs[batch] = torch.cat([sample_from_seeds(g, SEEDS[i:i + batch], LABELS[i:i + batch], shape=(3, 8, 8),
                                                   **_kw(sampler)) for i in range(0, 8, batch)])
    runs["reversed"] = sample_from_seeds(g, SEEDS[::-1], LABELS.flip(0), shape=(3, 8, 8), **_kw(sampler)).flip(0)
    for name, x in runs.items():
        err = float((x.double() - exact).abs().max())
        assert err < bound, f"{name}: {err:.3g} from the exact images, over float32 rounding ({bound:.3g})"
        assert int((to_uint8(x).int() - to_uint8(runs[8]).int()).abs().max()) <= 1  # uint8: a level at most
    # the seed matters far beyond rounding: another seed with the same label gives another image
    other = sample_from_seeds(g, [999], LABELS[:1], shape=(3, 8, 8), **_kw(sampler))
    assert float((other[0] - runs[8][0]).abs().max()) > 20 * bound


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_batch_composition_gives_bit_identical_images(sampler):
    """README: bit-identical when the batch composition is the same (a rerun or a resumed run): the same
    seeds, labels, order and batch size run the same kernels on the same numbers."""
    g, _ = _dog()
    seeds, labels = [5, 1, 3], torch.tensor([2, 0, 1])
    first = sample_from_seeds(g, seeds, labels, shape=(3, 8, 8), **_kw(sampler))
    torch.manual_seed(1234)  # the global RNG plays no part: each sample's noise comes from its own seed
    again = sample_from_seeds(g, seeds, labels, shape=(3, 8, 8), **_kw(sampler))
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])  # seeds (and labels) matter


def test_per_sample_noise_streams():
    a = PerSampleNoise([1, 2, 3]).randn((2, 2))
    b = PerSampleNoise([3]).randn((2, 2))
    assert torch.equal(a[2], b[0])
    with pytest.raises(ValueError, match="per-sample generators"):
        PerSampleNoise([1]).randn_like(torch.zeros(2, 3))


def test_sampler_calls_network_at_original_timesteps():
    seen = []

    class Spy:
        prediction, learn_sigma = "eps", True  # what the samplers ask of a denoiser

        def __call__(self, x, t, y):
            seen.append(int(t[0]))
            return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    spy = Spy()

    sample(spy, torch.randn(2, 1, 2, 2), torch.tensor([0, 0]), sampler="ddim", steps=10)
    assert seen == list(range(900, -1, -100))
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(spy, torch.randn(2, 1, 2, 2), torch.tensor([0, 0]), sampler="no-such-sampler")


def test_lora_off_is_bit_identical_to_base():
    base = tiny_dit(num_classes=10, seed=3)
    reference = DiT(base.config).eval()
    reference.load_state_dict(base.state_dict())
    target_cfg = base.config.replace(num_classes=3)
    lora = add_lora(base, target_cfg, rank=4)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # make the adapter do something
    lora.eval()
    x, t = torch.randn(4, 4, 8, 8), torch.tensor([1, 200, 500, 999])
    y_base = torch.tensor([0, 5, 9, 10])
    ref = reference(x, t, y_base)
    guide = Denoiser(lora, base.config, adapter=False)
    ft = Denoiser(lora, target_cfg, adapter=True)
    assert torch.equal(guide(x, t, y_base), ref)
    y_target = torch.tensor([0, 1, 2, 3])
    adapted = ft(x, t, y_target)
    assert not torch.allclose(adapted, ref)
    assert torch.equal(guide(x, t, y_base), ref)  # switching back and forth changes nothing
    with adapter_disabled(lora):
        assert torch.equal(lora(x, t, y_base), ref)
    assert torch.equal(ft(x, t, y_target), adapted)
    # DoG with the LoRA guide: one copy of the base weights, two evaluations
    dog = build_guided_denoiser("dog", ft, guide, scale=2.0)
    out = dog(x, t, y_target[:4].clamp(max=2))
    assert out.shape == (4, 8, 8, 8)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".target." in n for n in trainable)
