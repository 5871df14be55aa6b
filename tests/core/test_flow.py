"""Flow matching (SiT): the linear path, its conversions and samplers, checked on Gaussian data where
the velocity field, the ODE's flow map and the SDE's marginals are known in closed form.

Data of class y ~ N(mu_y, s^2 I); path x_t = t x1 + (1 - t) z (t = 0 noise). Then x_t ~ N(t mu, V_t I)
with V_t = t^2 s^2 + (1 - t)^2, and by Gaussian conditioning
    v(x, t) = E[x1 - z | x_t] = mu + (t s^2 - (1 - t)) / V_t (x - t mu)
    E[x1 | x_t] = mu + t s^2 / V_t (x - t mu),   E[z | x_t] = (1 - t) / V_t (x - t mu),
    score = -(x - t mu) / V_t,   ODE flow map: z -> t mu + sqrt(V_t) z  (at t = 1: mu + s z).
"""
import math

import pytest
import torch

from domain_guidance.core import flow
from domain_guidance.core.sampling import SAMPLERS, get_sampler, sample, sample_from_seeds
from domain_guidance.core.seeds import PerSampleNoise

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster on a busy machine
S = 0.5  # data standard deviation
MU = torch.tensor([[1.5, -1.0, 0.5, 2.0], [-2.0, 0.0, 1.0, -0.5]], dtype=torch.float64)  # (K=2, C=4) class means


class GaussianFlow:
    """The exact velocity field of class-conditional Gaussian data (the real field, in float64)."""

    prediction, learn_sigma = "velocity", False

    def __init__(self):
        self.times: list[float] = []

    def mean(self, labels, x):
        return MU[labels].reshape(x.shape[0], -1, *([1] * (x.ndim - 2))).to(x.dtype)

    def var(self, t):
        return t ** 2 * S ** 2 + (1 - t) ** 2

    def __call__(self, x, t, labels):
        self.times.append(float(t[0]))
        tt = t.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
        mu = self.mean(labels, x)
        return mu + (tt * S ** 2 - (1 - tt)) / self.var(tt) * (x - tt * mu)


def _noise(n, seed=0, hw=1):
    return torch.randn(n, 4, hw, hw, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_path_convention_and_conversions_match_gaussian_posteriors():
    data, z = torch.randn(6, 4, 2, 2, dtype=torch.float64), torch.randn(6, 4, 2, 2, dtype=torch.float64)
    assert torch.equal(flow.interpolate(data, z, torch.zeros(6)), z)  # t = 0 is noise (SiT), not data
    assert torch.equal(flow.interpolate(data, z, torch.ones(6)), data)
    torch.testing.assert_close(flow.velocity_target(data, z), data - z)
    g, labels = GaussianFlow(), torch.tensor([0, 1, 1, 0, 1, 0])
    x, t = 2 * torch.randn(6, 4, 2, 2, dtype=torch.float64), torch.tensor([0.05, 0.2, 0.4, 0.5, 0.7, 0.93])
    v, mu, tt = g(x, t, labels), g.mean(labels, x), t.reshape(-1, 1, 1, 1).double()
    vt = g.var(tt)
    torch.testing.assert_close(flow.velocity_to_data(v, x, t), mu + tt * S ** 2 / vt * (x - tt * mu))
    torch.testing.assert_close(flow.velocity_to_eps(v, x, t), (1 - tt) / vt * (x - tt * mu))
    torch.testing.assert_close(flow.velocity_to_score(v, x, t), -(x - tt * mu) / vt)
    torch.testing.assert_close(flow.eps_to_velocity(flow.velocity_to_eps(v, x, t), x, t), v)
    torch.testing.assert_close(flow.score_to_velocity(flow.velocity_to_score(v, x, t), x, t), v)


def test_diffusion_forms_are_sits():
    t, x = torch.tensor([0.1, 0.5, 0.9]), torch.zeros(3, 1)
    ts = (0.1, 0.5, 0.9)
    expect = {"constant": [2.0, 2.0, 2.0], "SBDM": [2 * 9.0, 2 * 1.0, 2 / 9], "sigma": [1.8, 1.0, 0.2],
              "linear": [1.8, 1.0, 0.2], "decreasing": [0.25 * (2 * math.cos(math.pi * s) + 1) ** 2 for s in ts],
              "increasing-decreasing": [2 * math.sin(math.pi * s) ** 2 for s in ts]}
    assert set(expect) == set(flow.DIFFUSION_FORMS)
    for form, values in expect.items():
        got = flow.diffusion_coefficient(t, x, form, norm=2.0).flatten()
        torch.testing.assert_close(got, torch.tensor(values), msg=form)
    with pytest.raises(ValueError, match="diffusion_form: unknown 'cosine'"):
        flow.diffusion_coefficient(t, x, "cosine")


def test_ode_samplers_transport_noise_to_the_data_gaussian():
    z, labels = _noise(64), torch.arange(64) % 2
    exact = GaussianFlow().mean(labels, z) + S * z  # the flow map at t = 1
    for name, steps, options, tol in (("ode-euler", 400, {}, 8e-3), ("ode-heun", 50, {}, 5e-4),
                                      ("ode-dopri5", 10, {}, 1e-2),  # SiT's tolerances: atol 1e-6, rtol 1e-3
                                      ("ode-dopri5", 10, {"rtol": 1e-7, "atol": 1e-9}, 1e-6)):
        out = sample(GaussianFlow(), z, labels, sampler=name, steps=steps, **options)
        err = (out - exact).abs().max().item()
        assert err < tol, (name, options, err)
    assert (exact - GaussianFlow().mean(labels, z)).abs().max() > 0.5  # the noise really moves the result


def test_heun_error_shrinks_quadratically_euler_linearly():
    z, labels = _noise(32, seed=1), torch.arange(32) % 2
    exact = GaussianFlow().mean(labels, z) + S * z
    errors = {name: [(sample(GaussianFlow(), z, labels, sampler=name, steps=n) - exact).abs().max().item()
                     for n in (16, 32, 64)] for name in ("ode-euler", "ode-heun")}
    for name, order in (("ode-euler", 1), ("ode-heun", 2)):
        e = errors[name]
        for a, b in zip(e, e[1:]):
            assert 0.8 * 2 ** order < a / b < 1.25 * 2 ** order, (name, e)
    assert errors["ode-heun"][0] < errors["ode-euler"][-1]


@pytest.mark.parametrize("form", ["sigma", "constant", "decreasing", "increasing-decreasing", "SBDM"])
def test_sde_keeps_the_path_marginals(form):
    """Midway the samples follow N(t mu, V_t); after SiT's "Mean" last step from t1 = 0.96 (no noise):
    mean mu and std sqrt(V_t1) (1 + h (c - w / V_t1)), c = (t1 s^2 - (1 - t1)) / V_t1, h = 0.04."""
    n, steps = 4000, 300
    z, labels = _noise(n, seed=2), torch.arange(n) % 2
    seen = {}

    def grab(info):
        seen[round(float(info["t"][0]), 6)] = info["x"]

    out = sample(GaussianFlow(), z, labels, sampler="sde-euler", steps=steps, callback=grab, diffusion_form=form)
    mu = MU[labels].reshape(n, 4, 1, 1)
    t_mid = min(seen, key=lambda s: abs(s - 0.5))
    t1, h = 0.96, 0.04
    v1 = t1 ** 2 * S ** 2 + (1 - t1) ** 2
    w1 = float(flow.diffusion_coefficient(torch.tensor([t1]), torch.zeros(1, 1), form))
    final_std = math.sqrt(v1) * (1 + h * ((t1 * S ** 2 - (1 - t1)) / v1 - w1 / v1))
    for t, x, center, std in ((t_mid, seen[t_mid], t_mid * mu, math.sqrt(t_mid ** 2 * S ** 2 + (1 - t_mid) ** 2)),
                              (1.0, out, mu, final_std)):
        r = (x - center) / std  # standardised: N(0, 1) if the marginal is right
        assert abs(r.mean()) < 0.03, (form, t, float(r.mean()))
        assert abs(r.std() - 1) < 0.03, (form, t, float(r.std()))
    if form == "constant":
        assert final_std < 0.9 * S  # SiT's noise-free last step shrinks a constant-w SDE: seen, not hidden


def test_sde_last_steps_follow_sits_formulas():
    g, z, labels = GaussianFlow(), _noise(8, seed=3), torch.arange(8) % 2
    t1, h = 0.96, 0.04
    mu, vt = g.mean(labels, z), t1 ** 2 * S ** 2 + (1 - t1) ** 2
    for last in ("Mean", "Tweedie", "Euler"):
        steps = []
        sample(g, z, labels, sampler="sde-euler", steps=3, last_step=last, step_noise=PerSampleNoise(range(8)),
               callback=steps.append)
        final = steps[-1]
        assert float(final["t"][0]) == pytest.approx(t1)
        x = final["x"]
        score = -(x - t1 * mu) / vt  # closed form, not through velocity_to_score
        v = mu + (t1 * S ** 2 - (1 - t1)) / vt * (x - t1 * mu)
        expected = {"Mean": x + h * (v + (1 - t1) * score), "Tweedie": (x + (1 - t1) ** 2 * score) / t1,
                    "Euler": x + h * v}[last]
        torch.testing.assert_close(final["x_next"], expected, msg=last)
    none = []
    sample(g, z, labels, sampler="sde-euler", steps=3, last_step=None, step_noise=PerSampleNoise(range(8)),
           callback=none.append)
    assert [round(float(s["t"][0]), 6) for s in none] == [0.0, 0.5]  # t1 = 1, no last step: 2 evaluations


def test_samplers_visit_sit_times_from_noise_to_data():
    for name, steps, visited in (("ode-euler", 4, [0, .25, .5, .75]),
                                 ("ode-heun", 2, [0, .5, .5, 1]),
                                 ("sde-euler", 4, [0, .32, .64, .96])):
        g = GaussianFlow()
        sample(g, _noise(2), torch.tensor([0, 1]), sampler=name, steps=steps)
        assert g.times == pytest.approx(visited), name
        assert sorted(set(get_sampler(name).timesteps(str(steps)))) == pytest.approx(sorted(set(visited)))
        assert get_sampler(name).time_range == (0.0, 1.0)
    g = GaussianFlow()
    sample(g, _noise(2), torch.tensor([0, 1]), sampler="sde-euler", steps=3, diffusion_form="SBDM")
    assert g.times == pytest.approx([1e-3, (1e-3 + 0.96) / 2, 0.96])  # SBDM is infinite at 0: starts at eps


def test_prediction_types_are_refused_by_the_wrong_samplers():
    g = GaussianFlow()
    with pytest.raises(ValueError, match=r"'ddpm' integrates eps .* predicts 'velocity'; samplers for 'velocity' "
                                         r"models: \['flow-dpm-solver\+\+', 'flow-euler', 'flow-heun', 'flow-unipc', "
                                         r"'ode-dopri5', 'ode-euler', 'ode-heun', 'sde-euler'\]"):
        sample(g, _noise(2), torch.tensor([0, 1]), sampler="ddpm", steps=10)
    g.prediction = "eps"
    with pytest.raises(ValueError, match=r"'ode-heun' integrates velocity .* samplers for 'eps' models: \['ddim', "):
        sample(g, _noise(2), torch.tensor([0, 1]), sampler="ode-heun", steps=10)
    assert {"ode-euler", "ode-heun", "ode-dopri5", "sde-euler"} <= set(SAMPLERS)


@pytest.mark.parametrize("name,options,message", [
    ("ode-euler", {"steps": "ddim50"}, "steps 'ddim50': the ode-euler sampler takes a number of integration steps"),
    ("sde-euler", {"steps": 1}, "steps 1: the sde-euler sampler takes a number of integration steps >= 2"),
    ("sde-euler", {"diffusion_form": "cosine"}, "diffusion_form: unknown 'cosine'"),
    ("sde-euler", {"last_step": "Median"}, "last_step: unknown 'Median'; expected Mean, Tweedie, Euler or None"),
    ("sde-euler", {"last_step_size": 1.5}, r"last_step_size: expected a size in \(0, 1\), got 1.5"),
    ("sde-euler", {"diffusion_form": "SBDM", "sample_eps": 0.0}, "sample_eps: SBDM needs a start time"),
    ("ode-dopri5", {"rtol": 0.0}, "rtol: expected a tolerance > 0, got 0.0"),
])
def test_bad_options_name_the_option(name, options, message):
    options = {"steps": 5, **options}
    with pytest.raises(ValueError, match=message):
        sample(GaussianFlow(), _noise(2), torch.tensor([0, 1]), sampler=name, **options)


@pytest.mark.parametrize("name", ["sde-euler", "ode-heun"])
def test_images_independent_of_batch_and_seed_order(name):
    from tests.core.helpers import tiny_dit
    from domain_guidance.core.denoiser import Denoiser

    net = tiny_dit(num_classes=3, seed=4, prediction="velocity")
    den = Denoiser(net, net.config)
    kw = dict(shape=(4, 8, 8), sampler=name, steps=6)
    batch = sample_from_seeds(den, [5, 9, 2], torch.tensor([0, 1, 2]), **kw)
    alone = sample_from_seeds(den, [9], torch.tensor([1]), **kw)
    swapped = sample_from_seeds(den, [2, 5], torch.tensor([2, 0]), **kw)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(swapped[0], batch[2], atol=1e-6, rtol=0)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_flow_matching_loss_is_the_velocity_mse_on_the_first_channels():
    data, z = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0.0, 0.3, 1.0])
    x_t = flow.flow_training_inputs(data, z, t)
    torch.testing.assert_close(x_t[1], 0.3 * data[1] + 0.7 * z[1])
    out = torch.randn(3, 8, 2, 2)  # velocity + the unused learned-sigma half
    terms = flow.flow_matching_losses(out, data, z)
    expected = ((out[:, :4] - (data - z)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["loss"], expected)
    out2 = out.clone()
    out2[:, 4:] = 100.0
    torch.testing.assert_close(flow.flow_matching_losses(out2, data, z)["loss"], expected)
    assert torch.equal(flow.flow_matching_losses(torch.cat([data - z, out[:, 4:]], 1), data, z)["loss"], torch.zeros(3))
    with pytest.raises(ValueError, match=r"network output \(3, 2, 2, 2\) does not fit data \(3, 4, 2, 2\)"):
        flow.flow_matching_losses(out[:, :2], data, z)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        flow.flow_training_inputs(data, z, torch.zeros(3, 1))
