"""The training loop shared by ``dog finetune`` and ``dog pretrain``.

One optimizer step ``n`` (1-based; the 0-based index ``s = n - 1`` seeds it):

1. this rank's slice of the global batch: keys ``(index, data seed)`` -> images or latents;
2. per-sample diffusion seeds draw the timestep, the label-drop coin and the noise;
3. dropped labels become the model's null label (not the network's own RNG dropout);
4. the loss of the model's kind: ADM (eps MSE + variational bound) for DiT (eps) models, SiT's
   flow-matching velocity MSE (t uniform in [0, 1], t = 0 noise) for velocity models; with
   ``single_pass`` the target moves by the DoG offset of the EMA teacher and the frozen guide
   (computed before the trained forward: the EMA swap must not touch saved activations); all-reduced
   for the log and the finiteness check;
   a NaN/inf loss or gradient norm stops the run BEFORE the update, and nothing is saved after it;
5. backward (DDP averages gradients), clip, AdamW, EMA;
6. log / checkpoint (atomic, with ``latest`` pointer, keep-last-N) / sample grid every N steps.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...core.diffusion import create_diffusion
from ...core.flow import flow_matching_losses, flow_training_inputs
from ...core.precision import maybe_compile
from ...core.seeds import PerSampleNoise
from ...io.atomic import write_json
from ...io.locks import folder_lock
from .config import TrainConfig
from .data import TrainData, prepare_data
from .distributed import (STREAM_GLOBAL_RNG, DistInfo, StepKeys, all_reduce_mean, barrier, derive_seed,
                          init_distributed, local_slice, params_in_sync, shutdown, wrap_ddp)
from .ema import EMA
from .grid import check_grid_sampler, draw_grid
from .logging import RunLogger
from .model import Models, build_models, export_for_sampling, load_base
from .single_pass import SinglePassTarget, guided_losses
from .state import (STATE_FORMAT, capture_rng, check_resume_inputs, clean_stale, find_latest, load_train_state,
                    restore_rng, resume_differences, save_checkpoint_dir)

CONFIG_NAME = "train_config.json"


class NonFiniteLossError(ValueError):
    """The loss (or gradient norm) became NaN or infinite; the message names the step and last checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None  # the latest complete checkpoint directory
    last_loss: float | None


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Run (or with ``resume=True`` continue exactly) the training described by ``config``.

    Works in one process or under ``torchrun`` (DDP: gloo on CPU, nccl on GPU); the global batch,
    data order, noise and checkpoints do not depend on the number of processes. Raises
    ``NonFiniteLossError`` when the loss becomes NaN/inf (the last good checkpoint stays).
    """
    cfg = config.validate()
    dist = init_distributed(cfg.device, cfg.dist_timeout_s)
    try:
        with folder_lock(cfg.out, dist):  # one run per run directory (rank 0 holds it for all ranks)
            return _Trainer(cfg, dist, resume).run()
    finally:
        shutdown(dist)


class _Trainer:
    def __init__(self, cfg: TrainConfig, dist: DistInfo, resume: bool):
        self.cfg, self.dist, self.run_dir = cfg, dist, Path(cfg.out)
        self.resume_from = self._checkpoint_to_resume(resume)
        if dist.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dist.device.type == "cuda")
        self.single_pass: SinglePassTarget | None = None

    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        latest = find_latest(self.run_dir)
        if latest is not None and not resume:
            raise ValueError(f"run directory {self.run_dir} already holds checkpoint {latest.name}: pass --resume "
                             "to continue it, or choose another --out (nothing is overwritten)")
        if self.dist.is_main and self.run_dir.exists():
            clean_stale(self.run_dir)  # staging dirs of a write that was killed
        barrier(self.dist)
        return latest if resume else None

    # ----- set-up -----
    def setup(self) -> None:
        cfg, dist = self.cfg, self.dist
        self.notes: list[str] = []
        state = load_train_state(self.resume_from) if self.resume_from is not None else None
        if state is not None:
            self._check_config(state)
        base = load_base(cfg) if cfg.init == "base" else None
        self.inputs = {"base": base[3] if base else None}  # the weights the run reads (LoRA, single pass, guide)
        check = (lambda fingerprint: self._check_data(state, fingerprint)) if state is not None else None
        self.data: TrainData = prepare_data(cfg, base[1] if base else None, dist, self.run_dir, check)
        self.label_dropout = cfg.label_dropout
        if self.label_dropout > 0 and (self.data.unlabelled or self.data.num_classes < 2):
            self.notes.append(f"label dropout {self.label_dropout} is not possible with "
                              f"{'an unlabelled folder' if self.data.unlabelled else 'a single class'}: set to 0; "
                              "the model has no null label and can be sampled unguided or with DoG, not CFG")
            self.label_dropout = 0.0
        vae = self.data.vae
        vae_source = cfg.vae if base is not None else (vae.source if vae is not None else None)
        self.models: Models = build_models(cfg, self.data.num_classes, self.label_dropout, self.data.shape, base,
                                           vae_source, vae.scale if (vae is not None and base is None) else None)
        if cfg.sample_every:
            check_grid_sampler(cfg.grid.sampler, self.models.config.prediction)
        self.models.net.to(dist.device).train()
        if self.models.guide_net is not None and not self.models.guide_is_adapter_off:
            self.models.guide_net.to(dist.device).eval()
        self.trainable = self.models.trainable()
        self.opt = torch.optim.AdamW(list(self.trainable.values()), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                     eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        self.ema = EMA(self.trainable, cfg.ema)
        self.step = 0
        if state is not None:
            self._restore(state)

    def _check_config(self, state: dict[str, Any]) -> None:
        diffs = resume_differences(state["config"], self.cfg.to_dict(), type(self.cfg)().to_dict())
        if diffs:
            raise ValueError(f"cannot resume {self.resume_from}: the config changed in ways that alter training: "
                             + "; ".join(diffs))

    def _check_data(self, state: dict[str, Any], fingerprint: dict[str, Any]) -> None:
        """Refuse to resume on other data or base weights than the checkpoint saw (no record: a note)."""
        self.notes += check_resume_inputs(self.resume_from, state, fingerprint, self.inputs,
                                          f"data.dataset={self.cfg.data.dataset!r}, base={self.cfg.base!r}")

    def _restore(self, state: dict[str, Any]) -> None:
        net = self.models.net
        if self.models.mode in ("lora", "difffit"):
            missing = sorted(set(self.trainable) - set(state["model"]))
            if missing:
                raise ValueError(f"{self.resume_from}: training state lacks {self.models.mode} tensors {missing[:5]}")
            net.load_state_dict(state["model"], strict=False)
        else:
            net.load_state_dict(state["model"])
        self.ema.load_state_dict({k: state["ema"][k] for k in self.ema.shadow})
        self.opt.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        self.step = int(state["step"])

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _single_pass(self, flow: bool, diffusion: Any) -> SinglePassTarget | None:
        """The single-pass (DogFit) target of this run, or None; the guide is the frozen pre-trained model."""
        if not self.cfg.single_pass.enabled:
            return None
        m = self.models
        if m.guide_net is None or m.base_config is None:
            raise ValueError("single_pass needs a pre-trained base as guide (init='base')")
        return SinglePassTarget(self.cfg.single_pass, m.net, m.guide_net, m.base_config.null_label,
                                m.guide_is_adapter_off, flow, 1 if flow else diffusion.num_timesteps,
                                m.config.in_channels)

    # ----- checkpoints -----
    def state_dict(self) -> dict[str, Any]:
        models, ema = self.models, self.ema
        small = models.mode in ("lora", "difffit")  # only what trains; the frozen base is the base checkpoint
        model_sd = {n: p.detach() for n, p in self.trainable.items()} if small else models.net.state_dict()
        ema_sd = dict(ema.shadow) if small else {**models.net.state_dict(), **ema.shadow}
        return {"format": STATE_FORMAT, "version": 1, "step": self.step,
                "data_position": self.step * self.cfg.batch_size, "mode": models.mode, "model": model_sd,
                "ema": ema_sd, "optimizer": self.opt.state_dict(), "rng": capture_rng(),
                "config": self.cfg.to_dict(), "model_config": models.config.to_dict(), "data": self.data.fingerprint,
                "inputs": self.inputs}

    def save(self) -> None:
        ok, rows = params_in_sync(list(self.trainable.values()), self.dist)
        if self.dist.enabled:
            self.log.event("sync", self.step, ranks_equal=ok, checksums=rows)
            if not ok:
                raise RuntimeError(f"ranks hold different weights at step {self.step}: {rows}")
        if self.dist.is_main:
            meta = {"step": self.step, "train_config": self.cfg.to_dict(), "weights": "ema",
                    "base": None if self.models.base_path is None else
                    {"path": str(self.models.base_path), "sha256": self.models.base_sha256,
                     "which": self.models.base_which,
                     **({"reinterpreted": {"prediction": self.cfg.base_prediction}} if self.cfg.base_reinterpret else {})}}
            if self.single_pass is not None:  # guidance-distilled: sampled unguided, one evaluation per step
                meta["guidance_distilled"] = self.single_pass.record(self.models.base_sha256)
            path = save_checkpoint_dir(self.run_dir, self.step, self.state_dict(),
                                       lambda p: export_for_sampling(self.models, self.ema, p, meta),
                                       self.cfg.keep_last)
            self.log.event("checkpoint", self.step, path=str(path))
        barrier(self.dist)

    def grid(self) -> None:
        if self.dist.is_main:
            decode = self.data.vae.decode if self.data.vae is not None else None
            path = self.run_dir / "grids" / f"step_{self.step:07d}.png"
            image, info = draw_grid(self.models, self.ema, self.cfg.grid, path, self.dist.device, decode, self.step)
            self.log.event("grid", self.step, **{k: v for k, v in info.items() if k != "step"})
            self.log.image(self.step, "samples/" + ",".join(info["rows"]), image)
        barrier(self.dist)

    def _stop_nonfinite(self, what: str, value: float, n: int) -> None:
        last = find_latest(self.run_dir)
        where = (f"the last good checkpoint is {last} (step {int(last.name.split('_')[1])}); fix the cause "
                 "(lower lr, grad_clip, precision=fp32) and continue with --resume") if last else \
            "no checkpoint was saved before it"
        msg = f"non-finite {what} ({value}) at step {n}: stopping without saving; {where}"
        self.log.event("nonfinite", n, what=what, value=value, message=msg)
        raise NonFiniteLossError(msg)

    # ----- the loop -----
    def run(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        self.setup()
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / CONFIG_NAME, cfg.to_dict())
        self.log = RunLogger(self.run_dir, enabled=dist.is_main, total_steps=cfg.steps, start_step=self.step,
                             progress=cfg.progress, tensorboard=cfg.tensorboard, resumed=self.resume_from is not None)
        try:
            return self._loop()
        finally:
            self.log.close()

    def _loop(self) -> TrainResult:
        cfg, dist, models, data = self.cfg, self.dist, self.models, self.data
        n_params = sum(p.numel() for p in models.net.parameters())
        self.log.event("resume" if self.resume_from else "start", self.step, world_size=dist.world_size,
                       device=str(dist.device), bf16=self.bf16, mode=models.mode, params=n_params,
                       trainable=sum(p.numel() for p in self.trainable.values()), label_dropout=self.label_dropout,
                       model_config=models.config.to_dict(), data=data.info, bad_files=len(data.bad_files),
                       checkpoint=str(self.resume_from) if self.resume_from else None)
        if data.bad_files:
            shown = "; ".join(f"{p} ({r})" for p, r in data.bad_files[:3])
            self.log.note(self.step, f"skipped {len(data.bad_files)} unreadable image file(s): {shown}")
        for note in self.notes:
            self.log.note(self.step, note)
        if self.step >= cfg.steps:
            self.log.note(self.step, f"already at step {self.step} >= steps={cfg.steps}: nothing to do")
            return TrainResult(self.run_dir, self.step, find_latest(self.run_dir), None)

        flow = models.config.prediction == "velocity"  # SiT: flow matching; DiT: ADM diffusion
        diffusion = None if flow else create_diffusion("", learn_sigma=models.config.learn_sigma)
        sp = self.single_pass = self._single_pass(flow, diffusion)
        model = maybe_compile(wrap_ddp(models.net, dist), cfg.compile)  # the same weights, traced
        if getattr(model, "note", None):
            self.log.note(self.step, model.note)
        keys = StepKeys(len(data.dataset), cfg.batch_size, cfg.seed)
        part = local_slice(cfg.batch_size, dist)
        ks = range(part.start, part.stop)
        loader = data.loader(keys, ks, self.step, cfg.steps, cfg.data.num_workers)
        null = models.config.null_label
        params = list(self.trainable.values())
        window = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "n": 0, "t0": time.perf_counter()}
        last_loss = None
        for s, (x, y) in zip(range(self.step, cfg.steps), loader):
            n = s + 1
            torch.manual_seed(derive_seed(cfg.seed, STREAM_GLOBAL_RNG, s, dist.rank))  # only LoRA dropout uses it
            x, y = x.to(dist.device, non_blocking=True), y.to(dist.device, non_blocking=True)
            x0 = data.to_model_space(x, keys.data_keys(s, ks)) if data.encode_every_step else x  # (b, C, H, W)
            rng = PerSampleNoise(keys.diffusion_seeds(s, ks), dist.device)
            t = rng.rand() if flow else rng.randint(diffusion.num_timesteps)  # (b,) SiT time / ADM step
            drop = rng.rand() < self.label_dropout  # (b,)
            noise = rng.randn(x0.shape[1:])  # (b, C, H, W)
            if null is not None:
                y = torch.where(drop, torch.full_like(y, null), y)
            x_t = flow_training_inputs(x0, noise, t) if flow else diffusion.q_sample(x0, t, noise)
            kw, offset = {}, None
            if sp is not None:
                w = sp.weights(rng)  # (b,) drawn after the noise: the plain run's draws are unchanged
                active = sp.active(t, n, ~drop)  # (b,) rows whose target gets the offset
                offset = sp.offset(x_t, t, y, w, active, self.ema, self.trainable, self._autocast())  # (b, C, H, W)
                if (w_in := sp.model_w(w, active)) is not None:
                    kw["w"] = w_in
            with self._autocast():
                out = model(x_t, t, y, **kw)  # (b, out_channels, H, W)
            if offset is not None:
                terms = guided_losses(out.float(), x0, x_t, t, noise, offset, diffusion)
            else:
                terms = (flow_matching_losses(out.float(), x0, noise) if flow
                         else diffusion.training_losses(out.float(), x0, x_t, t, noise))
            loss = terms["loss"].mean()
            if cfg.debug_nan_at_step == n:
                loss = loss * float("nan")
            vb = terms["vb"].mean() if "vb" in terms else torch.zeros((), device=loss.device)
            parts = [loss.detach(), terms["mse"].mean().detach(), vb.detach()]
            if offset is not None:  # single-pass: rms of the target offset and the share of rows that got it
                parts += [offset.square().mean().sqrt().to(loss.device), active.float().mean().to(loss.device)]
            stats = all_reduce_mean(torch.stack(parts), dist)
            stats = stats.tolist()
            if not math.isfinite(stats[0]):
                self._stop_nonfinite("loss", stats[0], n)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or float("inf")))
            if not math.isfinite(gnorm):
                self._stop_nonfinite("gradient norm", gnorm, n)
            self.opt.step()
            decay = self.ema.update(self.trainable, s)
            self.step = n
            last_loss = stats[0]
            for k, v in zip(("loss", "mse", "vb", "offset_rms", "offset_rows"), stats):
                window[k] = window.get(k, 0.0) + v
            window["n"] += 1
            self.log.advance()
            if n % cfg.log_every == 0 or n == cfg.steps:
                dt = time.perf_counter() - window["t0"]
                its = window["n"] / dt if dt > 0 else 0.0
                self.log.metrics(n, {"loss": window["loss"] / window["n"], "mse": window["mse"] / window["n"],
                                     "vb": window["vb"] / window["n"], "grad_norm": gnorm, "lr": cfg.lr,
                                     "ema_decay": decay, "it_per_s": its, "img_per_s": its * cfg.batch_size,
                                     "epoch": n * cfg.batch_size / len(data.dataset),
                                     **{k: window[k] / window["n"] for k in ("offset_rms", "offset_rows") if k in window}})
                window = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "n": 0, "t0": time.perf_counter()}
            if cfg.debug_kill_at_step == n:
                os.kill(os.getpid(), signal.SIGKILL)  # testing hook: a hard kill, nothing is flushed
            if n % cfg.ckpt_every == 0 or n == cfg.steps:
                self.save()
            if cfg.sample_every and (n % cfg.sample_every == 0 or n == cfg.steps):
                self.grid()
        self.log.event("done", self.step, loss=last_loss)
        return TrainResult(self.run_dir, self.step, find_latest(self.run_dir), last_loss)


def summarize(result: TrainResult) -> str:
    """One line for the CLI."""
    return json.dumps({"run_dir": str(result.run_dir), "step": result.step,
                       "checkpoint": str(result.checkpoint) if result.checkpoint else None, "loss": result.last_loss})
