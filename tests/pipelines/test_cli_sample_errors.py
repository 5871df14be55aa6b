"""`dog sample` refuses bad options in one line naming the option, before loading any model."""
import pytest

from domain_guidance.cli import main


def _sample(checkpoints, out, *extra):
    method = extra[extra.index("--method") + 1] if "--method" in extra else "dog"
    guide = ["--guide", str(checkpoints / "pre")] if method == "dog" else []  # --guide is DoG's only
    return main(["sample", "--model", str(checkpoints / "ft"), *guide,
                 "--seeds", "0-3", "--steps", "4", "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("extra, message", [
    (["--steps", "1"], "--steps: steps '1' gives 1 sampling step; ddpm needs at least 2"),
    (["--steps", "abc"], "--steps: bad respacing 'abc'"),
    (["--shard-size", "0"], "argument --shard-size: expected an integer >= 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--seeds", "0-99999999999"], "argument --seeds: '0-99999999999' asks for more than 10,000,000 samples"),
    (["--seeds", "a-b"], "argument --seeds: 'a' is not an integer"),
    (["--labels", "a"], "--labels: 'a' is not an integer"),
    (["--interval", "0,5000"], "--interval: (0, 5000) is outside the sampler's timestep range 0..999"),
    (["--interval", "0"], "argument --interval: expected LO,HI"),
    (["--interval", "1,2"], "--interval: no sampling step falls in (1, 2)"),
    (["--eta", "0.5"], "--eta: applies to the ddim sampler only"),
    (["--scale", "nan"], "--scale: the guidance weight must be a finite number"),
    (["--channels", "0"], "argument --channels: expected an integer >= 1, got 0"),
])
def test_bad_option_is_one_line_naming_it(checkpoints, tmp_path, capsys, extra, message):
    try:
        code = _sample(checkpoints, tmp_path / "out", *extra)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "settings.json").exists()  # refused before anything was written


def test_vae_options_on_a_pixel_model_are_refused(checkpoints, tmp_path, capsys):
    assert _sample(checkpoints, tmp_path / "out", "--latent-scale", "0.5") == 2
    assert "apply to latent models" in capsys.readouterr().err


def test_out_under_a_file_is_refused(checkpoints, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert _sample(checkpoints, tmp_path / "f" / "x") == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file" in err and "Traceback" not in err


def test_rerun_with_other_settings_refuses_then_overwrite_replaces(checkpoints, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(checkpoints, out, "--method", "dog") == 0
    assert _sample(checkpoints, out, "--method", "dog") == 0  # same settings: resumes, nothing new
    assert "0 generated now" in capsys.readouterr().out
    assert _sample(checkpoints, out, "--method", "cfg") == 2
    err = capsys.readouterr().err
    assert "settings.method: 'dog' -> 'cfg'" in err and "--overwrite" in err and err.count("\n") == 1
    assert _sample(checkpoints, out, "--guide", str(checkpoints / "ft"), "--method", "dog") == 2
    assert "models.guide.sha256" in capsys.readouterr().err
    assert _sample(checkpoints, out, "--method", "cfg", "--overwrite") == 0
    assert "4 generated now" in capsys.readouterr().out
