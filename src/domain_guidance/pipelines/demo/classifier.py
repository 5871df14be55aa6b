"""The demo's cheap domain judge: a small CNN trained on all classes of the target's judge set at 16 px
(animal target: the ten animal-mnist classes, 1 channel; glyph targets: the 12 glyph shapes in every hue, RGB).

It trains on the train split without the images kept for the real floors (``floors.reserved_for_floors``),
so its metrics on a floor set are those of unseen real images, like on samples.

Metrics on a sample set (uint8 NHWC images): the share classified into a target class (in-domain
rate), the share classified as the class it was asked for (class match), and a Frechet distance and
KID in the CNN's penultimate features against held-out target images.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ...io.atomic import atomic_path, write_json
from ...io.data import load_builtin
from ..metrics import frechet_distance_from_features, kid
from ..metrics.intra_class import defined, intra_class_fd, intra_class_kid
from .domains import DemoTarget, get_target
from .floors import FLOOR_SHARE, reserved_for_floors

NUM_CLASSES = 10
FEATURE_DIM = 128


class SmallCNN(nn.Module):
    """(N, C, 16, 16) in [-1, 1] -> logits (N, num_classes); ``features`` is the 128-d penultimate layer."""

    def __init__(self, channels: int = 1, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # (N, 64, 8, 8)
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),  # (N, 128, 4, 4)
            nn.Flatten(), nn.Linear(128 * 16, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (N, num_classes)


def _arrays(split: str, resolution: int, target: DemoTarget, classes: Sequence[int] | None = None,
            without_floor_pool: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, R, R) float in [-1, 1], original class ids (N,) of a split of the target's judge set.

    ``without_floor_pool``: leave out the images reserved for the real floors (floors.reserved_for_floors).
    """
    ds = load_builtin(target.judge_dataset, resolution=resolution, channels=target.channels, classes=classes,
                      split=split)
    keep = ~reserved_for_floors(ds.images) if without_floor_pool else np.ones(len(ds.images), dtype=bool)
    images = ds.images[keep] if ds.images.ndim == 4 else ds.images[keep][..., None]  # (N, R, R, C)
    x = uint8_to_input(images, target.channels)
    kept = ds.info["source_classes"]
    y = torch.tensor([kept[i] for i in ds.labels[keep].tolist()], dtype=torch.long)
    return x, y


def frechet_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Frechet distance of two (N, D) feature sets (exact, no D x D root: metrics' "svd" method)."""
    return frechet_distance_from_features(f1, f2, method="svd")


def uint8_to_input(images: np.ndarray, channels: int = 1) -> torch.Tensor:
    """uint8 (N, H, W, C) samples -> (N, channels, H, W) float in [-1, 1] (the first ``channels`` channels)."""
    if images.shape[-1] < channels:
        raise ValueError(f"the judge takes {channels}-channel images, got shape {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images[..., :channels])).permute(0, 3, 1, 2).float()
    return x.div(127.5).sub(1.0)


def train_classifier(out: str | Path, resolution: int = 16, epochs: float = 4.0, batch_size: int = 128,
                     seed: int = 0, progress: bool = True, target: DemoTarget | None = None
                     ) -> tuple[SmallCNN, dict[str, Any]]:
    """Train (or load the cached ``out/classifier.pt``) the CNN on ``target``'s judge set (default: the animal
    target's); returns (model, info).

    info holds the held-out test accuracy. The cache is reused only if its settings match.
    """
    target = target if target is not None else get_target("animal")
    path = Path(out) / "classifier.pt"
    # "floor_pool": the judge trains without the images kept for the real floors (a cache from before that is retrained)
    # "init": the initial weights come from ``seed`` (a judge cached before that drew them from whatever global RNG
    # state the caller left, so the same settings gave different judges in the demo and the study: retrained)
    settings = {"resolution": resolution, "epochs": epochs, "batch_size": batch_size, "seed": seed,
                "floor_pool": "held out %d/%d" % FLOOR_SHARE, "init": "seeded"}
    if target.name != "animal":  # the animal judge's settings are as before, so its caches stay valid
        settings.update(data=target.judge_dataset, classes=target.judge_classes, channels=target.channels,
                        flip=target.judge_flip)
    model = SmallCNN(target.channels, target.judge_classes)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain dicts only
        if saved.get("settings") == settings:
            model.load_state_dict(saved["state_dict"])
            return model.eval(), saved["info"]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN(target.channels, target.judge_classes)  # initial weights from the seed, not the global RNG
    x, y = _arrays("train", resolution, target, without_floor_pool=True)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = max(1, math.ceil(epochs * len(x) / batch_size))
    model.train()
    for _ in tqdm(range(steps), desc="classifier", unit="step", disable=not progress):
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        xb = x[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # animal-mnist is flip-invariant
        if target.judge_flip:
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = _arrays("test", resolution, target)
    with torch.no_grad():
        acc = float((predict(model, xt).argmax(1) == yt).float().mean())
    info = {"test_accuracy": acc, "train_images": len(x), "test_images": len(xt), "steps": steps}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict(), "settings": settings, "info": info}, tmp)
    write_json(Path(out) / "classifier.json", {**settings, **info})
    return model, info


@torch.no_grad()
def predict(model: SmallCNN, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, num_classes) of inputs in [-1, 1]."""
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def features(model: SmallCNN, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Penultimate features (N, 128) as float64."""
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def domain_metrics(model: SmallCNN, images: np.ndarray, requested: np.ndarray, target_classes: Sequence[int],
                   reference_features: np.ndarray, kid_subsets: int = 100,
                   reference_labels: np.ndarray | None = None) -> dict[str, float]:
    """Classifier metrics of uint8 NHWC images whose labels (0..K-1) index ``target_classes``.

    in_domain: share predicted as any target class; class_match: share predicted as the requested
    class; off_domain: 1 - in_domain (share predicted as a source class); fd_classifier: Frechet
    distance of the penultimate features vs ``reference_features``; kid_classifier (and
    kid_classifier_subset_std): unbiased KID in the same features, ``kid_subsets`` random subsets
    of min(N, N_ref) features (metrics.kid, seed 0). With ``reference_labels`` (N_ref,) 0..K-1 also
    intra_fd_classifier / intra_kid_classifier: per class k, the images requested as k vs the reference
    images of class k, mean over the K classes (metrics.intra_class); left out when a class has fewer
    than 2 images on either side (e.g. N < 2 K).
    """
    x = uint8_to_input(images, model.channels)
    pred = predict(model, x).argmax(1).numpy()
    targets = np.asarray(list(target_classes))
    wanted = targets[np.asarray(requested, dtype=np.int64)]
    in_domain = float(np.isin(pred, targets).mean())
    feats = features(model, x)  # (N, 128)
    k = kid(reference_features, feats, n_subsets=kid_subsets)
    out = {"in_domain": in_domain, "class_match": float((pred == wanted).mean()),
           "off_domain": 1.0 - in_domain,
           "fd_classifier": frechet_from_features(feats, reference_features),
           "kid_classifier": k["kid_mean"], "kid_classifier_subset_std": k["kid_std"]}
    classes = range(len(target_classes))
    if reference_labels is not None and defined(reference_labels, requested, classes):
        out["intra_fd_classifier"] = intra_class_fd(reference_features, reference_labels, feats, requested, classes)
        out["intra_kid_classifier"] = intra_class_kid(reference_features, reference_labels, feats, requested, classes,
                                                      n_subsets=kid_subsets)
    return out
