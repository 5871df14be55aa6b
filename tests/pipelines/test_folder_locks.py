"""Two writers, one folder (issue 20, family 4): every command that writes an output folder holds an OS
lock on it; a second writer is refused naming the folder and the holder; the OS frees it when the holder dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from domain_guidance.cli import main
from domain_guidance.io.locks import LOCK_NAME, FolderLocked, folder_lock, held

HOLD = textwrap.dedent("""
    import sys, time
    from domain_guidance.io.locks import folder_lock
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that takes the lock on ``folder`` and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def locked(tmp_path):
    """``tmp_path/out`` locked by another live process (killed afterwards)."""
    folder = tmp_path / "out"
    proc = _holder(folder)
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_second_process_is_refused_and_a_killed_holder_frees_the_lock(tmp_path):
    """The mechanism with real processes: refused while held (naming folder and pid), free after SIGKILL."""
    folder = tmp_path / "out"
    first = _holder(folder)
    try:
        with pytest.raises(FolderLocked) as e:
            with folder_lock(folder):
                pass
        assert f"{folder} is being written by pid {first.pid} on " in str(e.value)
        second = subprocess.run([sys.executable, "-c", HOLD, str(folder)], capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "FolderLocked" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # no clean-up code runs: the OS drops the lock
        first.wait()
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == first.pid  # its file stays, unlocked
    with folder_lock(folder):
        assert held(folder)
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not held(folder) and not (folder / LOCK_NAME).exists()  # a clean release leaves no trace


def test_lock_is_reentrant_in_one_process_and_released_on_error(tmp_path):
    with folder_lock(tmp_path / "a"):
        with folder_lock(tmp_path / "a"):  # a stage writing the folder its command holds
            pass
        assert held(tmp_path / "a")
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path / "a"):
            raise RuntimeError("boom")
    assert not held(tmp_path / "a")
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path / "a")],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr


def test_two_dog_sample_runs_into_one_folder_the_second_is_refused(checkpoints, locked, capsys):
    """Regression: two `dog sample` runs into one empty --out (w=1.5 and w=3) produced a mixed set."""
    folder, pid = locked
    code = main(["sample", "--model", str(checkpoints / "ft"), "--guide", str(checkpoints / "pre"), "--method", "dog",
                 "--scale", "3", "--seeds", "0-3", "--steps", "3", "--batch-size", "4", "--out", str(folder),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"{folder} is being written by pid {pid}" in err, err
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing of the second run was written


def _writers(checkpoints: Path, tmp: Path) -> dict:
    """Every command that writes an output folder, as a call writing into a given folder."""
    ref = tmp / "ref.npz"
    import numpy as np

    np.savez(ref, arr_0=np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8))
    common = ["--no-progress"]
    source = tmp / "download"  # an extracted download (empty: the lock refuses before it is read)
    source.mkdir()
    return {
        "sample": lambda out: ["sample", "--model", str(checkpoints / "ft"), "--method", "unguided", "--seeds", "0-1",
                               "--steps", "2", "--out", str(out), *common],
        "sweep": lambda out: ["sweep", "--model", str(checkpoints / "ft"), "--methods", "unguided", "--reference",
                              str(ref), "--seeds", "0-1", "--steps", "2", "--out", str(out)],
        "finetune": lambda out: ["finetune", "--preset", "cpu-tiny", "--base", str(checkpoints / "pre"),
                                 "--data", "digits", "--out", str(out)],
        "pretrain": lambda out: ["pretrain", "--preset", "cpu-tiny", "--out", str(out)],
        "evaluate": lambda out: ["evaluate", str(ref), str(ref), "--out", str(out / "m.json")],
        "toy": lambda out: ["toy", "--out", str(out)],
        "demo": lambda out: ["demo", "--out", str(out)],
        "reproduce": lambda out: ["reproduce", "food101", "--from", str(source), "--base", str(checkpoints / "pre"),
                                  "--out", str(out)],
        "data prepare": lambda out: ["data", "prepare", "food101", "--from", str(source), "--out", str(out)],
    }


def test_every_command_that_writes_a_folder_refuses_a_locked_one(checkpoints, tmp_path, capsys):
    """The mechanism, walked over every writing command: each is refused while another process holds its folder."""
    folder = tmp_path / "out"
    proc = _holder(folder)
    try:
        for name, argv in _writers(checkpoints, tmp_path).items():
            t0 = time.time()
            code = main(argv(folder))
            err = capsys.readouterr().err
            assert code == 2 and f"{folder} is being written by pid {proc.pid}" in err, (name, err)
            assert time.time() - t0 < 60, name  # refused before the work, not after it
    finally:
        proc.kill()
        proc.wait()
