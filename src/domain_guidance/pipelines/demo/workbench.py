"""What the demo's study and ablations share: one source model, one judge, one reference set, one scorer.

Every sample set goes through ``generate`` (its folder carries the settings key, so a rerun finds it
and a changed setting gets a new folder) and every Inception feature file is cached by image
content under ``out/features``: the study resumes wherever it stopped.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...io.atomic import write_json
from ..generate import GenerationSettings, Models, generate, load_samples, settings_key
from . import analysis
from . import classifier as judge
from .config import DemoConfig
from .run import RESOLUTION, ensure_source, reference_set
from .scoring import Scorer, inception_features


def seeds_of(rep: int, n: int) -> list[int]:
    """Seed replicate ``rep``'s per-sample seeds, as ``run_demo`` draws them: rep * 100000 + range(n)."""
    return [rep * 100000 + i for i in range(n)]


def set_tag(method: str, w: float, interval: Any = None) -> str:
    """Folder name of a setting: method, w and interval (the settings key is appended by ``draw``)."""
    tag = f"{method}-w{w:g}"
    return tag + (f"-i{interval[0]:g}-{interval[1]:g}" if interval else "")


def cached(path: Path, config: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record saved at ``path`` if it was made with ``config``; else ``compute()`` written there (atomic).

    ``progress`` does not count: hiding progress bars changes no number.
    """
    plain = {k: v for k, v in config.items() if k != "progress"}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("config_key") == plain:
            return saved
    record = {"config_key": plain, **compute()}
    write_json(path, record)
    return record


@dataclass
class Workbench:
    """The shared pieces of a study under ``out``: source checkpoint, judge, reference images, scorer."""

    base: DemoConfig
    out: Path
    source: dict[str, Any]
    clf: judge.SmallCNN
    clf_info: dict[str, Any]
    ref: np.ndarray  # (N_ref, 16, 16, C) uint8
    ref_labels: np.ndarray  # (N_ref,) class indices 0..K-1
    _scorer: Scorer | None = None

    @classmethod
    def open(cls, base: DemoConfig, out: Path) -> "Workbench":
        """Source model (checked, or pre-trained with ``base.pretrain``), the judge (cached in ``out``), references."""
        out.mkdir(parents=True, exist_ok=True)
        source = ensure_source(base, out)
        clf, info = judge.train_classifier(out, RESOLUTION, base.classifier_epochs, base.classifier_batch,
                                           progress=base.progress, target=base.spec)
        return cls(base, out, source, clf, info, *reference_set(base))

    @property
    def scorer(self) -> Scorer:
        """One Scorer for every set (Inception only if ``base.fid``), built on first use."""
        if self._scorer is None:
            inception = ref_inception = None
            if self.base.fid:
                from ..metrics import InceptionExtractor

                inception = InceptionExtractor(None, device="cpu")
                ref_inception = inception_features(inception, self.ref, self.out / "fid-reference.npz",
                                                   self.base.progress)
            self._scorer = Scorer(self.clf, self.base.target_classes,
                                  judge.features(self.clf, judge.uint8_to_input(self.ref, self.clf.channels)),
                                  inception, ref_inception, self.base.kid_subsets, self.out / "features",
                                  self.ref_labels, self.base.spec.exact_domain)
        return self._scorer

    def cached(self, path: Path, config: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``cached`` keyed also by what the config does not name but decides the numbers: the judge
        (its settings and held-out accuracy: a retrained judge changes every judge metric), the source, and
        the metrics computed (a record from before a metric existed is rescored; samples are reused)."""
        return cached(path, {**config, "judge": self.clf_info, "source_checkpoint": self.source["checkpoint"],
                             "metrics": sorted(analysis.METRICS)}, compute)

    def cell_config(self, finetune_steps: int, images_per_class: int) -> DemoConfig:
        """The base config at one fine-tune length and target-set size, its out folder under ``cells/``."""
        cfg = dataclasses.replace(self.base, finetune_steps=int(finetune_steps),
                                  images_per_class=int(images_per_class))
        cfg.out = str(self.out / "cells" / f"steps{finetune_steps}-ipc{images_per_class}")
        return cfg.validate()

    def draw(self, settings: GenerationSettings, models: Models, folder: Path,
             record: dict[str, Any]) -> dict[str, Any]:
        """Generate (or find) one sample set under ``folder/<tag>-<settings key>/``; returns ``record`` + its path."""
        run_dir = folder.parent / f"{folder.name}-{settings_key(settings, models)[:10]}"
        generate(settings, models, run_dir, batch_size=self.base.batch_size, progress=self.base.progress)
        return {**record, "n": len(settings.seeds), "samples": str(run_dir / "samples.npz")}

    def score(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each record with the metrics of its samples (``record["samples"]``) added."""
        out = []
        for r in records:
            images, labels = load_samples(r["samples"])
            out.append({**r, **self.scorer(images, labels)})
        return out

