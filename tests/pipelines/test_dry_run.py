"""`dog reproduce --dry-run`: the published networks at full size, what the dry run writes, the memory plan.

The architecture tests build on the meta device (no memory); the full-size run at batch 1 is marked
``fullsize`` and runs only with ``--fullsize`` (its own step in .ci/run: minutes on 2 cores, ~13 GB).
"""
import json
import shutil

import pytest
import torch

from domain_guidance.pipelines.reproduce import fullsize
from domain_guidance.pipelines.reproduce.dry_run import (MARKER, ROW_NOTE, DryRunSize, check_dry_out, dry_run,
                                                         rows_markdown)
from domain_guidance.pipelines.reproduce.measure import GpuAssumption, StageRecord, stage_table
from domain_guidance.pipelines.reproduce.memory_plan import plan, plan_markdown

# key -> shape of the official DiT-XL-2-256x256.pt (SiT-XL-2-256x256.pt: the same), docs/protocols.md section 4
DIT_XL2_SHAPES = {"pos_embed": (1, 256, 1152), "x_embedder.proj.weight": (1152, 4, 2, 2),
                  "y_embedder.embedding_table.weight": (1001, 1152), "blocks.27.attn.qkv.weight": (3456, 1152),
                  "blocks.27.adaLN_modulation.1.weight": (6912, 1152), "final_layer.linear.weight": (32, 1152)}


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("family", ["dit", "sit"])
def test_dit_and_sit_are_the_published_size(family):
    net = fullsize.random_dit(family, device="meta")
    sd = net.state_dict()
    assert {k: tuple(sd[k].shape) for k in DIT_XL2_SHAPES} == DIT_XL2_SHAPES  # 1000 classes + the null row
    assert len(sd) == 292 and _count(net) == 675_129_632  # 28 blocks x 10 tensors + 12; DiT's train.py count
    assert net.config.prediction == ("velocity" if family == "sit" else "eps")


def test_vae_dinov2_inception_are_the_published_size():
    vae = fullsize.random_vae(device="meta")
    assert _count(vae) == 83_653_863  # sd-vae-ft-ema
    sd = vae.state_dict()
    assert tuple(sd["encoder.conv_in.weight"].shape) == (128, 3, 3, 3)
    assert tuple(sd["quant_conv.weight"].shape) == (8, 8, 1, 1)  # 4 latent channels: mean and log-variance
    assert tuple(sd["decoder.conv_out.weight"].shape) == (3, 128, 3, 3)
    dino = fullsize.random_dinov2(device="meta")
    assert _count(dino) == 304_368_640  # torch.hub dinov2_vitl14 / facebook/dinov2-large
    sd = dino.state_dict()
    assert tuple(sd["embeddings.position_embeddings"].shape) == (1, 1 + 37 * 37, 1024)  # the 518 px grid
    assert tuple(sd["embeddings.patch_embeddings.projection.weight"].shape) == (1024, 3, 14, 14)
    assert "encoder.layer.23.mlp.fc2.weight" in sd and "encoder.layer.24.mlp.fc2.weight" not in sd
    assert fullsize.inception_params() == 21_785_568  # torchvision's Inception-v3 trunk up to pool3 (no fc)


def test_random_weights_keep_norm_scales():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.GroupNorm(2, 4))
    net.lambda1 = torch.nn.Parameter(torch.zeros(4))  # DINOv2's layer scale
    kept = net[0].bias.detach().clone()
    fullsize.randomize_(net, seed=0, keep=("0.bias",))
    assert all(torch.equal(t, torch.ones(4)) for t in (net[1].weight, net[2].weight, net.lambda1))
    assert net[0].weight.std() > 0.01 and net[1].bias.abs().sum() > 0 and torch.equal(net[0].bias, kept)
    dit = fullsize.random_dit("dit", device="meta")
    assert dit.pos_embed.is_meta  # the meta build allocates nothing


def test_dry_run_refuses_a_results_folder(tmp_path):
    real = tmp_path / "runs" / "food101"
    real.mkdir(parents=True)
    (real / "results.json").write_text("{}")
    for out in (real, real / "dry"):
        with pytest.raises(ValueError, match="never writes into a results folder"):
            check_dry_out(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=MARKER):
        check_dry_out(other)
    check_dry_out(tmp_path / "new")  # a new folder is fine


def test_every_row_and_stage_says_dry_run():
    rows = [{"note": ROW_NOTE, "model": "DiT-XL/2", "fine_tune": "full", "method": m, "w": 1.5, "protocol": "p",
             "num_samples": 2, "fid": 1.0, "fd_dinov2": 2.0} for m in ("unguided", "cfg", "dog")]
    table = rows_markdown(rows).splitlines()[2:]
    assert len(table) == 3 and all(line.startswith(f"| {ROW_NOTE} |") for line in table)
    gpu = GpuAssumption(peak_tflops=100.0, utilisation=0.5)
    rec = [StageRecord("sample", seconds=1.0, flops=5e13, gpu_seconds=gpu.seconds(5e13))]
    stages = stage_table(rec, gpu).splitlines()
    assert gpu.seconds(5e13) == 1.0 and "50.0 TFLOPS" in stages[0]
    assert stages[-1].startswith(f"| sample | {ROW_NOTE} |") and "| 1.000 |" in stages[-1]


def test_memory_plan_extrapolates_linearly():
    fit = {"intercept_gib": 0.5, "per_sample_gib": 1.0, "extra_gib_b1": 1.5, "extra_gib_b2": 2.5}
    small = {"intercept_gib": 0.0, "per_sample_gib": 1 / 64, "extra_gib_b1": 1 / 64, "extra_gib_b2": 2 / 64}
    decode = {"intercept_gib": 0.0, "per_sample_gib": 0.5, "extra_gib_b1": 0.5, "extra_gib_b2": 1.0}
    train = {"plain": fit, "checkpointing": small}
    measured = {"train_full": train, "train_lora": train, "sample_forward": small, "vae_decode": decode}
    gib = 1024 ** 3
    p = plan({"params": gib // 4, "adapter_params": 0, "vae_params": 0}, measured, "dit")  # 1 GiB of weights
    rows = {r["workload"].split(" (")[0]: r for r in p["rows"]}
    full = rows["fine-tune full"]  # 6 GiB static + 0.5 + b: a 24 GiB card leaves 22.5 -> b = 16
    assert full["static_gib"] == 6.0 and full["max_batch_24gib"] == 16 and full["max_batch_80gib"] == 72
    dog = rows["DoG sampling, full fine-tune + separate guide"]  # 2 GiB static; the decode runs 32 at a time (16 GiB)
    assert dog["max_batch_24gib"] == 1312 and dog["max_batch_40gib"] == 2336  # 20.5 and 36.5 GiB / (1/64)
    assert "| fine-tune full" in plan_markdown(p)


def test_sit_with_an_eps_sampler_is_refused_before_any_work(tmp_path):
    from domain_guidance.pipelines.reproduce import resolve
    from domain_guidance.pipelines.reproduce.run import check_before_work

    over = {"train_preset": "sit-xl2-imagenet-published", "base": str(tmp_path / "SiT-XL-2-256x256.pt")}
    with pytest.raises(ValueError, match="sampler 'ddpm' integrates eps .* predicts velocity.*sde-euler"):
        check_before_work(resolve("food101", "published", over), tmp_path / "out", "table")
    check_before_work(resolve("food101", "published", {**over, "sampler": "sde-euler"}), tmp_path / "out", "table")
    check_before_work(resolve("food101", "published", over), tmp_path / "out", "finetune")  # no sampling: fine
    assert not (tmp_path / "out").exists()


def test_reproduce_draws_dog_with_a_raw_sit_guide(tmp_path, tiny_vae_dir, one_thread):
    """A raw SiT .pt (like SiT-XL-2-256x256.pt) cannot say it predicts velocity; the fine-tune's declaration
    must reach the sampling stage, else the guide is read as eps and DoG is refused after the fine-tune."""
    from domain_guidance.core.models import DiT, dit_config
    from domain_guidance.pipelines.reproduce import reproduce, resolve
    from tests.io.prepare import fakes

    base = DiT(dit_config("SiT-T/2", input_size=8, num_classes=10)).eval()  # 8x8x4 latents, 10 classes + null
    torch.save(base.state_dict(), tmp_path / "base.pt")
    train = {"init": "base", "base_prediction": "velocity", "mode": "full", "steps": 1, "batch_size": 2,
             "ckpt_every": 1, "sample_every": 0, "tensorboard": False, "device": "cpu", "progress": False,
             "data": {"resolution": 16, "channels": 3}}
    over = {"source": [str(fakes.artbench10(tmp_path))], "base": str(tmp_path / "base.pt"), "vae": str(tiny_vae_dir),
            "train": train, "methods": ["dog"], "sampler": "ode-euler", "steps": "2", "num_samples": 2}
    cfg = resolve("artbench10", "cpu-tiny", over)
    report = reproduce(cfg, tmp_path / "run", stop_after="sample", progress=False)
    assert report["stages"]["sample"]["methods"]["dog"]["generated_now"] == 2


@pytest.mark.slow
@pytest.mark.fullsize
def test_dit_xl2_dry_run_at_batch_one(tmp_path):
    """DiT-XL/2 at full size: one fine-tune step at batch 1, DoG sampling, VAE decode, both extractors."""
    try:
        _dit_xl2_batch_one(tmp_path)
    finally:  # about 17 GB of weights and checkpoints: pytest keeps its last 3 tmp folders
        shutil.rmtree(tmp_path / "dry", ignore_errors=True)


def _dit_xl2_batch_one(tmp_path) -> None:
    from safetensors.torch import load_file

    from domain_guidance.core.models import DiT, dit_config

    torch.set_num_threads(1)
    size = DryRunSize(train_steps=1, batch=1, samples=2, sample_batch=1, methods=("dog",), lora=False, probe=False)
    report = dry_run("food101", tmp_path / "dry", ("dit",), size=size)
    fam = report["families"]["dit"]
    stages = [s["stage"] for s in fam["stages"]]
    assert stages == ["networks", "prepare", "latent cache", "fine-tune full", "checkpoint round trip full",
                      "sample full (+ VAE decode)", "evaluate"]
    assert fam["weights"]["params"]["base"] == 675_129_632
    flops = {s["stage"]: s["flops"] for s in fam["stages"]}
    assert flops["fine-tune full"] > 3 * 200e9 and flops["sample full (+ VAE decode)"] > 8 * 200e9  # 229 per forward
    ckpt = tmp_path / "dry" / "dit" / "full" / "finetune" / "checkpoints" / "latest" / "model.safetensors"
    with torch.device("meta"):
        official = DiT(dit_config("DiT-XL/2", num_classes=2))  # the official layout, 2 target classes + null
    official.load_state_dict(load_file(ckpt), strict=True, assign=True)
    assert tuple(official.y_embedder.embedding_table.weight.shape) == (3, 1152)
    rows = fam["rows"]
    assert len(rows) == 2 and all(r["note"] == ROW_NOTE and r["comparable_to_published"] is False for r in rows)
    assert {r["protocol"] for r in rows} == {"dgm-eval-clean", "pytorch-fid"}
    assert all(r["fid"] == r["fid"] and r["fd_dinov2"] == r["fd_dinov2"] for r in rows)  # not NaN
    text = (tmp_path / "dry" / "dry_run.md").read_text()
    assert text.count(ROW_NOTE) >= len(stages) + len(rows)
    assert not (tmp_path / "dry" / "results.json").exists() and not list((tmp_path / "dry").rglob("table.md"))
    assert json.loads((tmp_path / "dry" / "dry_run.json").read_text())["note"] == ROW_NOTE
