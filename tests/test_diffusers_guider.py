"""``domain_guidance.diffusers.DomainGuidance`` inside a real diffusers modular pipeline (Stable Diffusion XL),
assembled offline from tiny randomly initialised components (configs here, a CLIP vocabulary written to tmp_path)
with a peft LoRA on the UNet: one step equals eps_base(x, neg) + w (eps_lora(x, prompt) - eps_base(x, neg)) computed
by hand, CFG is recovered when the guide is the LoRA model itself, the adapters are on after a call and after a
branch that raised, the interval (start / stop) is honoured."""
from __future__ import annotations

import copy
import json
import string

import pytest
import torch

pytest.importorskip("peft")
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel  # noqa: E402
from diffusers.guiders import ClassifierFreeGuidance  # noqa: E402
from diffusers.guiders.guider_utils import rescale_noise_cfg  # noqa: E402
from diffusers.modular_pipelines.stable_diffusion_xl import StableDiffusionXLAutoBlocks  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from domain_guidance.diffusers import HOOK_NAME, DomainGuidance  # noqa: E402

W = 3.0
TOKENS = ["<|startoftext|>", "<|endoftext|>", "!"] + list(string.ascii_lowercase) + [
    c + "</w>" for c in string.ascii_lowercase]


def _pipeline(tmp_path, lora: bool = True):
    """A modular SDXL text-to-image pipeline of tiny random components; returns (pipe, unet, base copy)."""
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(TOKENS)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")

    def tokenizer() -> CLIPTokenizer:
        return CLIPTokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"),
                             model_max_length=77)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 16, cross_attention_dim=32, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4, sample_size=16)
    text = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
                          num_attention_heads=2, num_hidden_layers=2, vocab_size=len(TOKENS), projection_dim=16)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    base = copy.deepcopy(unet).eval()
    if lora:  # random B (init_lora_weights=False): the LoRA changes the prediction
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    pipe = StableDiffusionXLAutoBlocks().init_pipeline()
    pipe.update_components(unet=unet, vae=vae, text_encoder=CLIPTextModel(text),
                           text_encoder_2=CLIPTextModelWithProjection(text), tokenizer=tokenizer(),
                           tokenizer_2=tokenizer(), scheduler=scheduler)
    return pipe, unet, base


def _run(pipe, guider, steps: int = 1) -> torch.Tensor:
    pipe.update_components(guider=guider)
    return pipe(prompt="a cat", negative_prompt="dog", num_inference_steps=steps, height=16, width=16,
                output="latents", generator=torch.Generator().manual_seed(0))


def _record(unet, pipe, monkeypatch):
    """Every UNet call's inputs, and the prediction handed to the scheduler (the guided one)."""
    calls, guided = [], []
    unet.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, dict(kwargs))), with_kwargs=True)
    step = pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        guided.append(model_output.clone())
        return step(model_output, *args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", recording_step)
    return calls, guided


def _adapters_on(unet) -> bool:
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
    return bool(layers) and not any(m.disable_adapters for m in layers)


def _no_hook(unet) -> bool:
    registry = getattr(unet, "_diffusers_hook", None)
    return registry is None or registry.get_hook(HOOK_NAME) is None


@torch.no_grad()
def test_one_step_equals_the_hand_computed_rule_and_leaves_the_adapters_on(tmp_path, monkeypatch):
    pipe, unet, base = _pipeline(tmp_path)
    calls, guided = _record(unet, pipe, monkeypatch)
    _run(pipe, DomainGuidance(guidance_scale=W))
    assert len(calls) == 2 and len(guided) == 1  # the conditional branch, then the unconditional one
    (args_c, kw_c), (args_u, kw_u) = calls
    assert torch.equal(args_c[0], args_u[0]) and not torch.equal(kw_c["encoder_hidden_states"],
                                                                  kw_u["encoder_hidden_states"])
    assert _adapters_on(unet) and _no_hook(unet)
    eps_lora = unet(*args_c, **kw_c)[0]  # the LoRA model at the prompt
    unet.disable_adapters()
    eps_base = unet(*args_u, **kw_u)[0]  # the base model at the negative prompt
    unet.enable_adapters()
    assert torch.allclose(base(*args_u, **kw_u)[0], eps_base, atol=1e-6)  # adapters off is the base model
    assert not torch.allclose(unet(*args_u, **kw_u)[0], eps_base, atol=1e-4)  # and the LoRA matters
    expected = eps_base + W * (eps_lora - eps_base)
    assert torch.allclose(guided[0], expected, atol=1e-6), float((guided[0] - expected).abs().max())


@torch.no_grad()
def test_cfg_is_recovered_when_the_guide_is_the_lora_model_itself(tmp_path):
    pipe, unet, _ = _pipeline(tmp_path)
    cfg = _run(pipe, ClassifierFreeGuidance(guidance_scale=W), steps=2)
    dog_self = _run(pipe, DomainGuidance(guidance_scale=W, guide=unet), steps=2)
    dog = _run(pipe, DomainGuidance(guidance_scale=W), steps=2)
    assert torch.allclose(dog_self, cfg, atol=1e-6)
    assert not torch.allclose(dog, cfg, atol=1e-4)  # the base branch differs from CFG's
    assert _adapters_on(unet) and _no_hook(unet)


@torch.no_grad()
def test_a_separate_guide_module_is_the_full_fine_tune_case(tmp_path):
    """guide=<the pre-trained model> gives what switching the LoRA off gives, when that model is the LoRA's base."""
    pipe, unet, base = _pipeline(tmp_path)
    lora_off = _run(pipe, DomainGuidance(guidance_scale=W), steps=2)
    separate = _run(pipe, DomainGuidance(guidance_scale=W, guide=base), steps=2)
    assert torch.allclose(separate, lora_off, atol=1e-6)


@torch.no_grad()
def test_a_branch_that_raises_leaves_the_adapters_on(tmp_path):
    pipe, unet, _ = _pipeline(tmp_path)
    before = _run(pipe, DomainGuidance(guidance_scale=W), steps=2)

    def fail_in_the_base_branch(module, args):
        if not _adapters_on(unet):
            raise RuntimeError("planted failure inside the unconditional branch")

    handle = unet.conv_in.register_forward_pre_hook(fail_in_the_base_branch)
    with pytest.raises(RuntimeError, match="planted failure"):
        _run(pipe, DomainGuidance(guidance_scale=W), steps=2)
    handle.remove()
    assert _adapters_on(unet)  # the adapters are back on at once, before any cleanup or later call
    x, t = torch.randn(1, 4, 2, 2), torch.tensor([500])
    kw = {"encoder_hidden_states": torch.randn(1, 3, 32),
          "added_cond_kwargs": {"text_embeds": torch.randn(1, 16), "time_ids": torch.randn(1, 6)}}
    direct = unet(x, t, **kw)[0]  # a later direct call is the LoRA model, not the base one
    unet.disable_adapters()
    assert not torch.allclose(direct, unet(x, t, **kw)[0], atol=1e-4)
    unet.enable_adapters()
    assert torch.allclose(_run(pipe, DomainGuidance(guidance_scale=W), steps=2), before, atol=1e-6)
    assert _no_hook(unet)


@torch.no_grad()
def test_start_stop_interval_and_rescale(tmp_path, monkeypatch):
    pipe, unet, _ = _pipeline(tmp_path)
    calls, guided = _record(unet, pipe, monkeypatch)
    _run(pipe, DomainGuidance(guidance_scale=W, start=0.5), steps=2)
    assert len(calls) == 3  # step 0: the conditional branch only; step 1: both
    assert torch.equal(guided[0], unet(*calls[0][0], **calls[0][1])[0])  # unguided outside the interval
    cond, uncond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    guider = DomainGuidance(guidance_scale=W, guidance_rescale=0.7)
    want = rescale_noise_cfg(uncond + W * (cond - uncond), cond, 0.7)
    assert torch.allclose(guider.forward(cond, uncond).pred, want, atol=1e-6)


def test_refused_without_a_lora_or_a_guide(tmp_path):
    pipe, unet, _ = _pipeline(tmp_path, lora=False)
    with pytest.raises(ValueError, match="has no adapter .* pass guide="):
        _run(pipe, DomainGuidance(guidance_scale=W))
    with pytest.raises(ValueError, match="guidance_rescale must be in"):
        DomainGuidance(guidance_rescale=2.0)
