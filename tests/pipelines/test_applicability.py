"""The applicability declaration (pipelines.applicability): every option of dog sample / sweep / demo and every
sampler option is declared, and every declared rule is enforced by the real command in every context where the
option does not apply (a refusal naming the option and what it needs), before any model loads or work starts."""
from __future__ import annotations

import argparse
import itertools

import pytest

from domain_guidance.cli import build_parser, main
from domain_guidance.core.flow.path import DIFFUSION_FORMS
from domain_guidance.core.flow.samplers import LAST_STEPS
from domain_guidance.core.guidance import METHODS
from domain_guidance.core.sampling import SAMPLERS
from domain_guidance.pipelines.applicability import (DEMO_RULES, EVERYWHERE, METRIC_RULES, RULES,
                                                     SAMPLER_OPTION_RULES, SAMPLING_RULES, Context)
from domain_guidance.pipelines.demo.study_config import ABLATIONS

MISSING = "/nonexistent/model-for-applicability"  # every run that passes the check stops at loading it

# a value to give each declared option on the command line (a rule without one fails test_every_rule_has_a_value)
FLAG_VALUES = {
    "guide": lambda s: ["--guide", MISSING], "autoguide": lambda s: ["--autoguide", MISSING],
    "scale": lambda s: ["--scale", "2"], "scales": lambda s: ["--scales", "2"],
    "channels": lambda s: ["--channels", "1"],
    "interval": lambda s: ["--interval", "0,999" if SAMPLERS[s].time_range[1] > 1 else "0,1"],
    "interval_sigma": lambda s: ["--interval-sigma", "0.28,5.42"],
    "eta": lambda s: ["--eta", "0.5"], "clip_denoised": lambda s: ["--clip-denoised", "yes"],
    "sample_eps": lambda s: ["--sampler-option", "sample_eps=0.01"],
    "last_step_size": lambda s: ["--sampler-option", "last_step_size=0.1"],
    "pretrain_steps": lambda s: ["--pretrain-steps", "5"],
    "study_targets": lambda s: ["--study-targets", "covered"],
    "study_finetune_steps": lambda s: ["--study-finetune-steps", "5"],
    "study_images_per_class": lambda s: ["--study-images-per-class", "5"],
    "ablation_w": lambda s: ["--ablation-w", "2"], "sampling_steps": lambda s: ["--sampling-steps", "5"],
    "uncond_guide_steps": lambda s: ["--uncond-guide-steps", "5"],
    "grid_w": lambda s: ["--grid-w", "2"], "blend": lambda s: ["--blend", "0.3"],
    "inception_weights": lambda s: ["--inception-weights", MISSING], "dinov2": lambda s: ["--dinov2", MISSING],
    "fd_method": lambda s: ["--fd-method", "eigh"], "prdc_k": lambda s: ["--prdc-k", "3"],
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _dests(command: str) -> set[str]:
    return {a.dest for a in _subparsers()[command]._actions if a.dest != "help"}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command, rules", [("sample", SAMPLING_RULES), ("sweep", SAMPLING_RULES + METRIC_RULES),
                                            ("demo", DEMO_RULES), ("evaluate", METRIC_RULES)])
def test_every_option_of_a_command_is_declared(command, rules):
    dests = _dests(command) - {"func", "default_of"}
    ruled = {r.option for r in rules}
    undeclared = dests - EVERYWHERE[command] - ruled
    assert not undeclared, f"dog {command}: options in no rule and not in EVERYWHERE[{command!r}]: {undeclared}"
    stale = EVERYWHERE[command] - dests
    assert not stale, f"EVERYWHERE[{command!r}] names options dog {command} does not have: {stale}"
    assert not EVERYWHERE[command] & ruled, "an option is both conditional and everywhere"


def test_every_sampler_option_is_declared_and_every_rule_names_a_real_option():
    taken = set().union(*(set(spec.options) for spec in SAMPLERS.values()))
    ruled = {r.option for r in SAMPLER_OPTION_RULES}
    assert taken == EVERYWHERE["sampler options"] | ruled
    commands = set().union(*(_dests(c) for c in ("sample", "sweep", "demo", "evaluate")))
    assert {r.option for r in RULES} <= commands | taken  # no rule for an option nothing takes


def test_every_rule_has_a_value():
    assert {r.option for r in RULES} <= set(FLAG_VALUES)


def _check(rule, context, code: int, err: str) -> None:
    refused = f"{rule.flag}: applies " in err
    if rule.applies(context):
        assert not refused, (context, err)
    else:
        assert code == 2 and refused and rule.needs in err, (rule.option, context, err)
        assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("rule", [r for r in SAMPLING_RULES if r.option != "scales"], ids=lambda r: r.option)
def test_dog_sample_refuses_each_rule_wherever_it_does_not_apply(rule, tmp_path, capsys):
    for sampler, method in itertools.product(sorted(SAMPLERS), METHODS):
        argv = ["sample", "--model", MISSING, "--out", str(tmp_path / "out"), "--sampler", sampler,
                "--method", method, "--steps", "4", *FLAG_VALUES[rule.option](sampler)]
        _check(rule, Context(sampler=sampler, methods=frozenset({method})), *_run(argv, capsys))
        assert not (tmp_path / "out").exists()  # refused or stopped at the model: nothing written


@pytest.mark.parametrize("rule", [r for r in SAMPLING_RULES if r.option in _dests("sweep")], ids=lambda r: r.option)
def test_dog_sweep_refuses_each_rule_wherever_it_does_not_apply(rule, tmp_path, capsys):
    subsets = [c for n in range(1, len(METHODS) + 1) for c in itertools.combinations(METHODS, n)]
    for sampler, methods in itertools.product(("ddpm", "ode-euler"), subsets):
        argv = ["sweep", "--model", MISSING, "--reference", MISSING, "--out", str(tmp_path / "out"),
                "--sampler", sampler, "--methods", ",".join(methods), "--steps", "4",
                *FLAG_VALUES[rule.option](sampler)]
        _check(rule, Context(sampler=sampler, methods=frozenset(methods)), *_run(argv, capsys))
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rule", METRIC_RULES, ids=lambda r: r.option)
def test_dog_evaluate_and_sweep_refuse_each_metric_rule_wherever_it_does_not_apply(rule, tmp_path, capsys):
    from domain_guidance.pipelines.metrics import METRICS

    subsets = [c for n in (1, 2) for c in itertools.combinations(sorted(METRICS), n)]
    out = tmp_path / "out"
    for metrics in subsets:
        context = Context(metrics=frozenset(metrics))
        given = FLAG_VALUES[rule.option]("ddpm")
        if rule.option in _dests("evaluate"):
            argv = ["evaluate", MISSING, MISSING, "--metrics", ",".join(metrics), "--out", str(out / "m.json"), *given]
            _check(rule, context, *_run(argv, capsys))
        if rule.option in _dests("sweep"):
            argv = ["sweep", "--model", MISSING, "--reference", MISSING, "--methods", "unguided", "--out", str(out),
                    "--metrics", ",".join(metrics), *given]
            _check(rule, context, *_run(argv, capsys))
        assert not out.exists()


def _option_contexts(sampler: str):
    """Every diffusion form x last step (sde-euler), or none (the other samplers)."""
    if "diffusion_form" not in SAMPLERS[sampler].options:
        return [{}]
    return [{"diffusion_form": f, "last_step": s} for f in DIFFUSION_FORMS for s in ("Mean", "Tweedie", "Euler", None)]


@pytest.mark.parametrize("rule", SAMPLER_OPTION_RULES, ids=lambda r: r.option)
def test_sampler_option_rules_are_enforced_wherever_they_do_not_apply(rule, tmp_path, capsys):
    assert set(LAST_STEPS) == {"mean", "tweedie", "euler", "none"}  # the contexts below cover every last step
    walked = 0
    for sampler in sorted(s for s, spec in SAMPLERS.items() if rule.option in spec.options):
        for options in _option_contexts(sampler):
            given = [f"{k}={'null' if v is None else v}" for k, v in options.items()]
            argv = ["sample", "--model", MISSING, "--out", str(tmp_path / "out"), "--sampler", sampler,
                    "--method", "unguided", "--steps", "10", *[a for g in given for a in ("--sampler-option", g)],
                    *FLAG_VALUES[rule.option](sampler)]
            _check(rule, Context(sampler=sampler, options=options), *_run(argv, capsys))
            walked += not rule.applies(Context(sampler=sampler, options=options))
    assert walked > 0  # the rule was refused somewhere


@pytest.mark.parametrize("rule", DEMO_RULES, ids=lambda r: r.option)
def test_dog_demo_refuses_each_rule_wherever_it_does_not_apply(rule, tmp_path, capsys):
    ablation_sets = [c for n in range(len(ABLATIONS) + 1) for c in itertools.combinations(ABLATIONS, n)]
    for study, ablations, pretrain in itertools.product((False, True), ablation_sets, (False, True)):
        # --samples 1 is refused by the config: a run the rule lets through stops there, before any work
        argv = ["demo", "--out", str(tmp_path / "out"), "--samples", "1", *(["--study"] if study else []),
                *(["--ablation", ",".join(ablations)] if ablations else []),
                *(["--pretrain"] if pretrain else ["--source", MISSING]), *FLAG_VALUES[rule.option]("ddim")]
        context = Context(study=study, ablations=frozenset(ablations), pretrain=pretrain)
        code, err = _run(argv, capsys)
        _check(rule, context, code, err)
        if rule.applies(context):
            assert code == 2 and "samples must be >= 2" in err, err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["sample", "--sampler", "sde-euler", "--sampler-option", "sample_eps=0.01"],
     "--sampler-option sample_eps: applies only with diffusion_form=SBDM"),
    (["sample", "--sampler", "sde-euler", "--sampler-option", "last_step=null", "--sampler-option",
      "last_step_size=0.1"], "--sampler-option last_step_size: applies only with a last step"),
    (["sample", "--sampler", "ode-heun", "--clip-denoised", "yes"], "--clip-denoised: applies only with --sampler ddpm"),
    (["sample", "--sampler", "ode-heun", "--clip-denoised", "no"], "--clip-denoised: applies only with --sampler ddpm"),
    (["sample", "--method", "dog", "--autoguide", MISSING], "--autoguide: applies only with --method autoguidance"),
    (["sample", "--method", "cfg", "--guide", MISSING], "--guide: applies only with --method dog"),
    (["sample", "--method", "unguided", "--guide", MISSING], "--guide: applies only with --method dog"),
    (["sample", "--method", "unguided", "--scale", "3"], "--scale: applies only with a guidance method"),
    (["sweep", "--methods", "unguided,cfg", "--guide", MISSING, "--reference", MISSING],
     "--guide: applies only with --method dog"),
    (["demo", "--sampling-steps", "5,10"], "--sampling-steps: applies only with --ablation steps"),
    (["demo", "--grid-w", "2"], "--grid-w: applies only with --ablation nine-grid"),
    (["demo", "--blend", "0.3"], "--blend: applies only with --ablation nine-grid"),
    (["demo", "--uncond-guide-steps", "5"], "--uncond-guide-steps: applies only with --ablation uncond-guide"),
    (["demo", "--ablation-w", "2"], "--ablation-w: applies only with --ablation steps or uncond-guide"),
    (["demo", "--ablation", "nine-grid", "--ablation-w", "2"], "--ablation-w: applies only with --ablation steps"),
    (["demo", "--study-finetune-steps", "5"], "--study-finetune-steps: applies only with --study"),
    (["demo", "--pretrain-steps", "5"], "--pretrain-steps: applies only with --pretrain"),
])
def test_issue_cases_are_refused_before_any_work(argv, message, tmp_path, capsys):
    """Each option the issue found accepted and ignored; the demo ones started the full demo."""
    model = ["--model", MISSING] if argv[0] in ("sample", "sweep") else ["--source", MISSING]
    code, err = _run([*argv, *model, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_pretrain_steps_reach_the_config_only_when_given():
    from domain_guidance.cli.demo import config_from_args

    parser = _subparsers()["demo"]
    assert config_from_args(parser.parse_args(["--flow"])).pretrain_steps == 1000  # the flow variant's, not 9000
    assert config_from_args(parser.parse_args(["--pretrain", "--pretrain-steps", "7"])).pretrain_steps == 7
    assert "[default: 10000; animal: 9000; --flow: 1000]" in " ".join(parser.format_help().split())  # --help says it
