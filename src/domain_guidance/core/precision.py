"""Numeric precision of a network evaluation, and torch.compile with a fallback.

A precision applies to the *network* only (autocast, or TF32 matmuls on a GPU); the diffusion
arithmetic around it (schedules, the guidance rule, sampler updates) stays float32, as in ADM
and DiT: a denoiser casts its output back to float32.

    fp32   plain float32; on a GPU TF32 is switched *off* for the call (true IEEE fp32)
    tf32   float32 tensors, TF32 tensor-core matmuls and convolutions (CUDA, Ampere or newer)
    bf16   autocast to bfloat16 (CPU or CUDA)
    fp16   autocast to float16 (CUDA; on a CPU it runs, usually slower than fp32)

The default is fp32 on a CPU and tf32 on a CUDA GPU that has it (as the authors' sampling
script, which sets ``allow_tf32``); a precision changes the samples, so it is part of the
generation settings.
"""
from __future__ import annotations

import contextlib
import importlib
import time
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import nn

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


def _has_tf32(device: torch.device | str) -> bool:
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(dev)[0] >= 8


def default_precision(device: torch.device | str) -> str:
    """fp32 on a CPU (or a GPU without TF32), tf32 on a CUDA GPU of compute capability >= 8.0."""
    return "tf32" if _has_tf32(device) else "fp32"


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """``precision`` checked for ``device``; None or "auto" gives :func:`default_precision`."""
    if precision is None or precision == "auto":
        return default_precision(device)
    check_precision(precision, device)
    return precision


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """Refuse an unknown precision, or (given ``device``) one that device cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; expected one of {', '.join(PRECISIONS)} (or auto)")
    if device is None:
        return precision
    kind = _device_type(device)
    if precision == "tf32" and not _has_tf32(device):
        where = "a CPU" if kind == "cpu" else f"{device} (TF32 needs CUDA compute capability >= 8.0)"
        raise ValueError(f"precision: tf32 is a mode of Ampere-or-newer GPU matmuls and does not exist on {where}; "
                         "use fp32 (the same numbers) or bf16")
    if precision == "bf16" and kind == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision: {device} does not support bf16; use fp16, tf32 or fp32")
    if kind not in ("cpu", "cuda") and precision != "fp32":
        raise ValueError(f"precision: {precision} is supported on cpu and cuda devices, not {kind!r}; use fp32")
    return precision


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


def precision_context(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context in which a network runs at ``precision`` on ``device`` (flags restored on exit)."""
    kind = _device_type(device)
    if precision in AUTOCAST_DTYPES:
        ctx = torch.autocast(kind, dtype=AUTOCAST_DTYPES[precision])
        if kind != "cuda":
            return ctx
        stack = contextlib.ExitStack()
        stack.enter_context(_cuda_tf32(False))  # the parts autocast leaves in float32 stay IEEE
        stack.enter_context(ctx)
        return stack
    if precision not in PRECISIONS:
        check_precision(precision)
    if kind == "cuda":
        return _cuda_tf32(precision == "tf32")
    return contextlib.nullcontext()


def autocast_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in at ``precision`` (float32 for fp32 and tf32 storage)."""
    return AUTOCAST_DTYPES.get(precision, torch.float32)


# ---- torch.compile -------------------------------------------------------------------------

class CompiledModule(nn.Module):
    """``module`` run through ``torch.compile``; falls back to eager, with a one-line note, if compiling fails.

    The wrapped module stays reachable as ``.module`` (its submodules, adapters and label tables
    are the same objects), so adapter switching and state dicts work on either. ``compile_seconds``
    is the wall time of the first call (tracing + code generation + the call itself).
    """

    def __init__(self, module: nn.Module, **compile_kwargs: Any):
        super().__init__()
        self.module = module
        self._set_compiled(None)
        self.note: str | None = None
        self.compile_seconds: float | None = None
        reason = compile_unavailable()
        if reason is not None:
            self.note = f"--compile: {reason}; running eagerly"
        else:
            try:
                self._set_compiled(torch.compile(module, **compile_kwargs))
            except Exception as e:  # e.g. an unknown backend
                self._fail(e)

    def _set_compiled(self, fn: Callable[..., Any] | None) -> None:
        object.__setattr__(self, "compiled", fn)  # not a registered submodule: state_dict keys stay module.*

    def _fail(self, e: Exception) -> None:
        self._set_compiled(None)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        self.note = f"--compile: torch.compile failed ({type(e).__name__}: {first}); running eagerly"
        warnings.warn(self.note, RuntimeWarning, stacklevel=3)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.module(*args, **kwargs)
        if self.compile_seconds is not None:
            return self.compiled(*args, **kwargs)
        t0 = time.perf_counter()
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as e:  # a backend that cannot build here (no compiler, unsupported op): eager
            self._fail(e)
            return self.module(*args, **kwargs)
        self.compile_seconds = time.perf_counter() - t0
        return out


def compile_unavailable() -> str | None:
    """Why torch.compile cannot be used in this process, or None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        dynamo = importlib.import_module("torch._dynamo")
    except Exception as e:  # pragma: no cover - depends on the platform
        return f"torch.compile is unavailable ({type(e).__name__}: {e})"
    if not dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    return None


def maybe_compile(module: nn.Module, enabled: bool, **compile_kwargs: Any) -> nn.Module:
    """``module`` itself, or a :class:`CompiledModule` of it when ``enabled``."""
    return CompiledModule(module, **compile_kwargs) if enabled else module


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The eager module under a :class:`CompiledModule` (or ``module`` itself)."""
    return module.module if isinstance(module, CompiledModule) else module
