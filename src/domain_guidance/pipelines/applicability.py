"""Which option applies where: the one declaration every command uses to refuse an option it would ignore.

A ``Rule`` says of one option (a sampler option, a generation setting, a demo option) what it needs to
do anything (a sampler, a method, a mode) as a predicate over the run's ``Context``. ``EVERYWHERE``
lists, per command, the options that apply in every context. Every option a command takes is in one
of the two (tests walk both): ``dog sample``, ``dog sweep``, ``dog demo`` and ``dog evaluate`` call
``check_applicable`` with the options the user gave before any model loads or anything is written, and
``GenerationSettings`` checks its sampler options the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

GUIDED = frozenset({"cfg", "dog", "autoguidance"})
ADM_SAMPLERS = frozenset({"ddpm", "ddim"})  # clip the predicted x0 at every step; the flow samplers have no x0 step


@dataclass(frozen=True)
class Context:
    """What decides whether an option applies: the sampler and its options, the method(s), the demo's modes."""

    sampler: str = "ddpm"
    methods: frozenset[str] = frozenset({"dog"})  # dog sample: one; dog sweep: several
    options: Mapping[str, Any] = field(default_factory=dict)  # the sampler's keyword options as given
    study: bool = False  # dog demo --study
    ablations: frozenset[str] = frozenset()  # dog demo --ablation names
    pretrain: bool = False  # dog demo --pretrain
    metrics: frozenset[str] = frozenset({"fid"})  # dog evaluate / dog sweep --metrics

    def describe(self, on: str) -> str:
        """This run's value of ``on``, in words."""
        if on == "sampler":
            return f"the sampler is {self.sampler}"
        if on == "methods":
            return f"the method{'s are' if len(self.methods) > 1 else ' is'} {', '.join(sorted(self.methods))}"
        if on in ("diffusion_form", "last_step"):
            return f"{on} is {self.options.get(on, {'diffusion_form': 'sigma', 'last_step': 'Mean'}[on])!r}"
        if on == "metrics":
            return f"the metric{'s are' if len(self.metrics) > 1 else ' is'} {', '.join(sorted(self.metrics))}"
        if on == "ablations":
            return (f"the ablations are {', '.join(sorted(self.ablations))}" if self.ablations
                    else "no --ablation is given")
        return f"--{on} is not given"


@dataclass(frozen=True)
class Rule:
    """``option`` (given as ``flag``) does something only when ``applies(context)``; ``needs`` says when."""

    option: str
    flag: str
    needs: str
    on: str  # the Context field it depends on (for the message)
    applies: Callable[[Context], bool]

    def refusal(self, context: Context) -> str:
        return f"{self.flag}: applies {self.needs}, but {context.describe(self.on)}"


def _last_step(context: Context) -> Any:
    value = context.options.get("last_step", "Mean")
    return None if value is None or str(value).lower() == "none" else value


# keyword options of the samplers (given as --sampler-option KEY=VALUE, stored in GenerationSettings.options)
SAMPLER_OPTION_RULES: tuple[Rule, ...] = (
    Rule("sample_eps", "--sampler-option sample_eps",
         "only with diffusion_form=SBDM (its start time; the other forms start at 0)", "diffusion_form",
         lambda c: c.sampler == "sde-euler" and c.options.get("diffusion_form") == "SBDM"),
    Rule("last_step_size", "--sampler-option last_step_size",
         "only with a last step (last_step Mean, Tweedie or Euler)", "last_step",
         lambda c: c.sampler == "sde-euler" and _last_step(c) is not None),
)
# generation settings given as flags of dog sample / dog sweep
SAMPLING_RULES: tuple[Rule, ...] = (
    Rule("guide", "--guide", "only with --method dog (the pre-trained model as DoG's guide)", "methods",
         lambda c: "dog" in c.methods),
    Rule("autoguide", "--autoguide", "only with --method autoguidance", "methods",
         lambda c: "autoguidance" in c.methods),
    Rule("scale", "--scale", "only with a guidance method (cfg, dog, autoguidance)", "methods",
         lambda c: bool(c.methods & GUIDED)),
    Rule("scales", "--scales", "only with a guidance method (cfg, dog, autoguidance)", "methods",
         lambda c: bool(c.methods & GUIDED)),
    Rule("channels", "--channels", "only with a guidance method (cfg, dog, autoguidance)", "methods",
         lambda c: bool(c.methods & GUIDED)),
    Rule("interval", "--interval", "only with a guidance method (cfg, dog, autoguidance)", "methods",
         lambda c: bool(c.methods & GUIDED)),
    Rule("interval_sigma", "--interval-sigma", "only with a guidance method (cfg, dog, autoguidance)", "methods",
         lambda c: bool(c.methods & GUIDED)),
    Rule("eta", "--eta", "to the ddim sampler only", "sampler", lambda c: c.sampler == "ddim"),
    Rule("clip_denoised", "--clip-denoised",
         "only with --sampler ddpm or ddim (they clip the predicted x0 at each step)",
         "sampler", lambda c: c.sampler in ADM_SAMPLERS),
)
# dog demo: options of one mode
DEMO_RULES: tuple[Rule, ...] = (
    Rule("pretrain_steps", "--pretrain-steps", "only with --pretrain", "pretrain", lambda c: c.pretrain),
    Rule("study_targets", "--study-targets", "only with --study", "study", lambda c: c.study),
    Rule("study_finetune_steps", "--study-finetune-steps", "only with --study", "study", lambda c: c.study),
    Rule("study_images_per_class", "--study-images-per-class", "only with --study", "study", lambda c: c.study),
    Rule("ablation_w", "--ablation-w", "only with --ablation steps or uncond-guide", "ablations",
         lambda c: bool(c.ablations & {"steps", "uncond-guide"})),
    Rule("sampling_steps", "--sampling-steps", "only with --ablation steps", "ablations",
         lambda c: "steps" in c.ablations),
    Rule("uncond_guide_steps", "--uncond-guide-steps", "only with --ablation uncond-guide", "ablations",
         lambda c: "uncond-guide" in c.ablations),
    Rule("grid_w", "--grid-w", "only with --ablation nine-grid", "ablations", lambda c: "nine-grid" in c.ablations),
    Rule("blend", "--blend", "only with --ablation nine-grid", "ablations", lambda c: "nine-grid" in c.ablations),
)
INCEPTION_METRICS = frozenset({"fid", "kid", "prdc"})
DINOV2_METRICS = frozenset({"fd_dinov2", "kid_dinov2", "prdc_dinov2"})
# dog evaluate / dog sweep: options of one feature extractor or one metric
METRIC_RULES: tuple[Rule, ...] = (
    Rule("inception_weights", "--inception-weights", "only with an Inception metric (fid, kid, prdc)", "metrics",
         lambda c: bool(c.metrics & INCEPTION_METRICS)),
    Rule("dinov2", "--dinov2", "only with a DINOv2 metric (fd_dinov2, kid_dinov2, prdc_dinov2)", "metrics",
         lambda c: bool(c.metrics & DINOV2_METRICS)),
    Rule("fd_method", "--fd-method", "only with a Frechet distance (fid, fd_dinov2)", "metrics",
         lambda c: bool(c.metrics & {"fid", "fd_dinov2"})),
    Rule("prdc_k", "--prdc-k", "only with prdc or prdc_dinov2", "metrics",
         lambda c: bool(c.metrics & {"prdc", "prdc_dinov2"})),
)
RULES: tuple[Rule, ...] = SAMPLER_OPTION_RULES + SAMPLING_RULES + DEMO_RULES + METRIC_RULES

# options that apply in every context of a command (argparse dests; sampler options by name)
EVERYWHERE: dict[str, frozenset[str]] = {
    "sampler options": frozenset({"diffusion_form", "diffusion_norm", "last_step", "atol", "rtol",
                                  # the diffusers schedulers' (core.diffusers_samplers)
                                  "order", "algorithm_type", "solver_type", "use_karras_sigmas", "timestep_spacing",
                                  "s_churn", "shift"}),
    "sample": frozenset({"model", "prediction", "model_w", "method", "sampler", "steps", "sampler_options", "seeds",
                         "labels", "batch_size", "shard_size", "vae", "latent_scale", "which", "device", "precision",
                         "compile", "png", "out", "overwrite", "no_progress"}),
    "sweep": frozenset({"model", "reference", "methods", "seeds", "sampler", "steps", "prediction", "batch_size",
                        "precision", "compile", "vae", "metrics", "device", "out", "overwrite"}),
    "evaluate": frozenset({"samples", "reference", "metrics", "device", "reference_cache", "batch_size", "precision",
                           "out", "allow_incomplete", "allow_shape_mismatch"}),
    "demo": frozenset({"quick", "full", "target", "flow", "out", "source", "pretrain", "finetune_steps", "finetune_lr",
                       "images_per_class", "samples", "w", "seeds", "steps", "sampler", "reference_images",
                       "dog_interval", "also_without_dropout", "no_fid", "no_progress", "study", "ablation"}),
}


def refusals(given: Iterable[str], context: Context, rules: Iterable[Rule] = RULES) -> list[str]:
    """One message per option in ``given`` that a rule declares inapplicable in ``context``."""
    by_option = {r.option: r for r in rules}
    return [by_option[name].refusal(context) for name in given
            if name in by_option and not by_option[name].applies(context)]


def check_applicable(given: Iterable[str], context: Context, rules: Iterable[Rule] = RULES, prefix: str = "") -> None:
    """Raise ValueError naming every given option that would be ignored in ``context`` and what it needs."""
    found = refusals(given, context, rules)
    if found:
        raise ValueError(prefix + "; ".join(found) + (": drop it" if len(found) == 1 else ": drop them"))
