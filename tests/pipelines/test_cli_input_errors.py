"""Issue 20 family 7: inputs that gave a traceback or an unhelpful error now give one line naming the input
at fault and what was expected, before any work (each test fails on the code before the fix)."""
import sys

import numpy as np
import pytest

from domain_guidance.cli import main
from domain_guidance.pipelines.generate.settings import parse_seeds


def _cli(argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of `dog ARGV`, argparse's own exits included."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if not line.startswith(("usage:", " "))]) == 1, err  # one line
    return code, err


@pytest.mark.parametrize("spec", ["-1", "-3-5", "5-", "3--5", "0,-2"])
def test_negative_or_open_seeds_say_the_seed_syntax(spec, tmp_path, capsys):
    with pytest.raises(ValueError, match="is neither a seed nor a range; seeds are integers 0..2\\*\\*63-1 "
                                         "\\(no negative seeds\\).*'0-49999', '0,5,7'"):
        parse_seeds(spec)
    code, err = _cli(["sample", "--model", "m", "--out", str(tmp_path / "o"), f"--seeds={spec}"], capsys)
    assert code == 2 and "argument --seeds:" in err and "no negative seeds" in err and "not an integer" not in err
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]  # the syntax it names still works


def test_dopri5_without_torchdiffeq_names_the_extra(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # `import torchdiffeq` now fails as if not installed
    code, err = _cli(["sample", "--model", str(checkpoints / "ft"), "--method", "unguided", "--sampler",
                      "ode-dopri5", "--seeds", "0-1", "--steps", "4", "--out", str(tmp_path / "o"), "--no-progress"],
                     capsys)
    assert code == 2, err
    assert "'ode-dopri5' needs torchdiffeq, which is not installed: pip install 'domain-guidance[flow]'" in err
    assert not (tmp_path / "o" / "settings.json").exists()  # refused before any model loaded or file was written


def test_toy_steps_below_two_is_refused_naming_the_minimum(tmp_path, capsys):
    code, err = _cli(["toy", "--steps", "1", "--track", "exact", "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "steps must be in 2..1000" in err and "got 1" in err, err
    assert not (tmp_path / "t" / "metrics.json").exists()


def test_data_prepare_unknown_split_names_it_and_the_allowed_ones(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    code, err = _cli(["data", "prepare", "food101", "--from", str(tmp_path / "src"), "--out", str(tmp_path / "d"),
                      "--splits", "train,bogus"], capsys)
    assert code == 2
    assert "splits: food101 has no official bogus split; expected a comma separated list of train, test" in err
    code, err = _cli(["data", "prepare", "caltech101", "--from", str(tmp_path / "src"), "--out", str(tmp_path / "d"),
                      "--splits", "test"], capsys)
    assert code == 2 and "caltech101 has no official test split" in err and "list of train" in err
    assert not (tmp_path / "d").exists()  # refused before the archive was read or the folder made


@pytest.mark.parametrize("content, holds", [(b"", "it is an empty file"),
                                            (b"some text that is longer\nline2\nline3\n", "it is a text file of")])
def test_inception_weights_that_are_not_weights(content, holds, tmp_path, capsys):
    """An empty file gave 'error: EOFError', a text file an IndexError: now the file, what it holds, the format."""
    weights = tmp_path / "weights.pth"
    weights.write_bytes(content)
    np.savez(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    code, err = _cli(["evaluate", str(tmp_path / "a.npz"), str(tmp_path / "a.npz"), "--inception-weights",
                      str(weights), "--device", "cpu", "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2, err
    assert f"{weights}: cannot read as FID Inception weights (pytorch-fid's pt_inception" in err and holds in err


def test_empty_weights_files_name_the_file_and_the_format(tmp_path, capsys):
    from domain_guidance.pipelines.training.state import load_train_state

    empty = tmp_path / "model.pt"
    empty.write_bytes(b"")
    code, err = _cli(["sample", "--model", str(empty), "--method", "unguided", "--seeds", "0-1", "--steps", "4",
                      "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{empty}: cannot read as" in err and "it is an empty file" in err, err
    with pytest.raises(ValueError, match="cannot read as a training state \\(train_state.pt written by dog "
                                         "finetune\\); it is an empty file"):
        load_train_state(empty)
