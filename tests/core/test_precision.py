"""Precisions of a network evaluation (autocast, float32 output) and torch.compile with an eager fallback."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from domain_guidance.core.denoiser import Denoiser
from domain_guidance.core.precision import (PRECISIONS, CompiledModule, check_precision, default_precision,
                                            precision_context, resolve_precision)
from tests.core.helpers import fp32_rounding_bound, tiny_dit


def _inputs(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, 8, 8, generator=g), torch.full((n,), 500), torch.arange(n) % 10


def test_precision_names_and_defaults():
    assert PRECISIONS == ("fp32", "tf32", "bf16", "fp16")
    assert default_precision("cpu") == "fp32" and resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision(None, "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"precision: unknown 'float8'; expected one of fp32, tf32, bf16, fp16"):
        check_precision("float8")
    with pytest.raises(ValueError, match="precision: tf32 .* does not exist on a CPU; use fp32"):
        resolve_precision("tf32", "cpu")
    with pytest.raises(ValueError, match="precision: unknown 'half'"):
        Denoiser(tiny_dit(), tiny_dit().config, precision="half")


def test_fp32_is_the_plain_network():
    net = tiny_dit(std=0.2)
    x, t, y = _inputs()
    with torch.no_grad():
        ref = net(x, t, y)
        out = Denoiser(net, net.config, precision="fp32")(x, t, y)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("precision, dtype, rel", [("bf16", torch.bfloat16, 0.05), ("fp16", torch.float16, 0.01)])
def test_autocast_runs_the_network_low_and_returns_float32(precision, dtype, rel):
    net = tiny_dit(std=0.2)
    x, t, y = _inputs()
    seen: list[torch.dtype] = []
    net.blocks[0].attn.qkv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.no_grad():
        ref = Denoiser(net, net.config)(x, t, y)
        out = Denoiser(net, net.config, precision=precision)(x, t, y)
    assert seen == [torch.float32, dtype]  # the matmuls ran in the low precision...
    assert out.dtype == torch.float32  # ...and the diffusion arithmetic gets float32 back
    err = float((out - ref).abs().max() / ref.abs().max())
    assert 0 < err < rel  # bf16 keeps 8 bits of mantissa, fp16 11


def test_precision_context_leaves_no_autocast_behind():
    with precision_context("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    with precision_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def test_compile_fallback_is_eager_with_a_note():
    """An unusable backend: the wrapper says why in one line and computes the eager result."""
    net = tiny_dit(std=0.2)
    wrapped = CompiledModule(net, backend="no_such_backend")
    assert wrapped.note.startswith("--compile: torch.compile failed (InvalidBackend") and "\n" not in wrapped.note
    x, t, y = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x, t, y), net(x, t, y), rtol=0, atol=0)
    assert set(wrapped.state_dict()) == {f"module.{k}" for k in net.state_dict()}  # no duplicate compiled copy


@pytest.mark.slow
def test_compile_matches_eager():
    """Compiled and eager float32 each sit within float32's rounding bound of the exact (float64) result.

    Not bit for bit, nor by a fixed margin: the compiler fuses and reorders sums, and by how much the
    results differ depends on the CPU (9.4e-5 of a 13.0 output on an AMD EPYC with AVX-512, 1.47e-4 on
    an Intel CPU with AMX). The bound (helpers.fp32_rounding_bound, 9.2e-4 here) is eps(float32) times
    sqrt(longest reduction) per rounding stage; a lower precision (bf16: ~4e-3 of the scale), a dropped
    bias or a network in training mode is far outside it.
    """
    net = tiny_dit(std=0.2)
    den = Denoiser(CompiledModule(net), net.config)
    x, t, y = _inputs()
    with torch.no_grad():
        out = den(x, t, y)
        ref = dataclasses.replace(den, net=net)(x, t, y)
        exact = copy.deepcopy(net).double()(x.double(), t, y)  # fp32 Denoiser == the plain network
    if den.net.note:  # no compiler on this machine: the fallback is what we can check
        pytest.skip(den.net.note)
    assert den.net.compile_seconds > 0
    bound = fp32_rounding_bound(net.config, float(exact.abs().max()))
    assert float((ref.double() - exact).abs().max()) < bound  # the bound holds for eager: it models this network
    assert float((out.double() - exact).abs().max()) < bound, "compiled result outside float32 rounding"
