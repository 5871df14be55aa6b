"""The guidance interval in noise levels (--interval-sigma): EDM2's (0.28, 5.42] as DiT timesteps and SiT times."""
from __future__ import annotations

import json
import math

import pytest

from domain_guidance.cli import main
from domain_guidance.core.interval import RECOMMENDED_SIGMA, ddpm_interval, flow_interval, sigma_interval
from domain_guidance.core.sampling import SAMPLERS


def _sigma_by_hand(t: int) -> float:
    """sigma_t = sqrt((1 - alphabar_t) / alphabar_t), linear betas 1e-4 .. 0.02 over 1000 steps, in plain floats."""
    alpha_bar = 1.0
    for i in range(t + 1):
        alpha_bar *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / 999)
    return math.sqrt((1.0 - alpha_bar) / alpha_bar)


def test_recommended_interval_on_the_dit_schedule():
    lo, hi = RECOMMENDED_SIGMA
    t_lo, t_hi = ddpm_interval(lo, hi)
    assert (t_lo, t_hi) == (82, 578)
    assert _sigma_by_hand(81) <= lo < _sigma_by_hand(82) and _sigma_by_hand(578) <= hi < _sigma_by_hand(579)
    # the old demo row guided t in [500, 999]: the high-noise range sigma 3.4 .. 157
    assert _sigma_by_hand(500) == pytest.approx(3.443, abs=1e-3) and _sigma_by_hand(999) == pytest.approx(157.4, abs=0.1)
    assert ddpm_interval(0.0, 1.0)[0] == 0  # sigma_0 > 0: the last step is inside a range starting at 0


def test_flow_interval_is_the_same_noise_levels_in_sit_time():
    lo, hi = RECOMMENDED_SIGMA
    t_lo, t_hi = flow_interval(lo, hi)

    def sigma(t):  # SiT's linear path x = t x_data + (1 - t) noise: sigma = (1 - t) / t
        return (1 - t) / t

    assert sigma(t_lo) == pytest.approx(hi, rel=1e-12) and sigma(t_hi) > lo
    assert sigma(math.nextafter(t_hi, 2.0)) <= lo  # sigma = lo itself is outside (lo, hi]
    assert (round(t_lo, 2), round(t_hi, 2)) == (0.16, 0.78)  # the flow demo's row
    assert sigma_interval(lo, hi, SAMPLERS["ode-heun"].time_range) == (t_lo, t_hi)
    assert sigma_interval(lo, hi, SAMPLERS["ddpm"].time_range) == (82, 578)
    with pytest.raises(ValueError, match="no noise schedule known"):
        sigma_interval(lo, hi, (0, 10))
    with pytest.raises(ValueError, match="0 <= LO < HI"):
        ddpm_interval(5.0, 1.0)
    with pytest.raises(ValueError, match="no DDPM timestep"):
        ddpm_interval(200.0, 300.0)


def test_cli_interval_sigma_guides_only_inside(checkpoints, tmp_path, capsys):
    args = ["sample", "--model", str(checkpoints / "ft"), "--guide", str(checkpoints / "pre"), "--seeds", "0-1",
            "--steps", "8", "--no-progress", "--device", "cpu"]
    assert main([*args, "--interval-sigma", "0.28,5.42", "--out", str(tmp_path / "s")]) == 0
    record = json.loads((tmp_path / "s" / "settings.json").read_text())
    assert record["settings"]["interval"] == [82.0, 578.0]
    # ddpm 8 steps visit 999, 856, 714, 571, 428, 285, 143, 0: the guide runs at 571, 428, 285, 143 only
    assert record["network_evaluations_per_image"] == {"model": 8, "guide": 4, "total": 12}
    assert main([*args, "--interval", "82,578", "--out", str(tmp_path / "t")]) == 0  # the same set, by times
    assert json.loads((tmp_path / "t" / "settings.json").read_text())["key"] == record["key"]
    capsys.readouterr()
    assert main([*args, "--interval", "0,500", "--interval-sigma", "0.28,5.42", "--out", str(tmp_path / "u")]) == 2
    assert "--interval and --interval-sigma" in capsys.readouterr().err
