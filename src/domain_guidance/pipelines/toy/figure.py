"""The study's figure: (a) source, target region and real samples; (b) CFG; (c) DoG; (d) guidance directions."""
from __future__ import annotations

import io
import math

import numpy as np
import torch

from .exact import ALPHAS_CUMPROD
from .scenario import Scenario

CLASS_COLORS = ("tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink")


def zoom_window(scenario: Scenario, margin: float = 2.2) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around the target region."""
    cx, cy = scenario.region_center
    r = margin * scenario.region_radius
    return cx - r, cx + r, cy - r, cy + r


@torch.no_grad()
def guidance_arrows(finetuned, guide, scenario: Scenario, *, w: float, t: int, label: int,
                    grid: int = 9) -> dict[str, np.ndarray]:
    """Guidance displacements at noisy points of a grid around the target region.

    Grid points y (data coordinates) are noised to x_t = sqrt(ab) y; at x_t the arrows are
    ``-w * (eps(x_t, c) - eps_uncond(x_t))`` (CFG: uncond = fine-tuned null; DoG: pre-trained null),
    i.e. the direction in which guidance moves x, since a step subtracts eps. Returned in the
    data coordinates x_t / sqrt(ab) so they overlay the region.
    """
    x0, x1, y0, y1 = zoom_window(scenario, margin=1.6)
    gx, gy = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))                    # (G, 2) float64
    ab = float(ALPHAS_CUMPROD[t])
    x_t = math.sqrt(ab) * pts
    tt = torch.full((len(pts),), t, dtype=torch.long)
    c = torch.full((len(pts),), label, dtype=torch.long)
    cond = finetuned(x_t, tt, c).double()
    unc_cfg = finetuned(x_t, tt, torch.full_like(c, finetuned.null_label)).double()
    unc_dog = guide(x_t, tt, torch.full_like(c, guide.null_label)).double()
    scale = 1.0 / math.sqrt(ab)
    return {"points": pts.numpy(), "cfg": (-w * (cond - unc_cfg) * scale).numpy(),
            "dog": (-w * (cond - unc_dog) * scale).numpy(), "alpha_bar": np.array(ab)}


def _density_image(scenario: Scenario, window, n: int = 160) -> np.ndarray:
    x0, x1, y0, y1 = window
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1))
    return scenario.source.log_prob(pts).exp().reshape(n, n).numpy()


def _region(ax, scenario: Scenario) -> None:
    from matplotlib.patches import Circle
    ax.add_patch(Circle(tuple(scenario.region_center), scenario.region_radius, fill=False, lw=1.5,
                        ls="--", color="black", zorder=5))


def _background(ax, scenario: Scenario, window) -> None:
    ax.imshow(_density_image(scenario, window), extent=window, origin="lower", cmap="Greys", alpha=0.55,
              aspect="equal", interpolation="bilinear")
    _region(ax, scenario)
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])


def _scatter(ax, x: np.ndarray, labels: np.ndarray, size: float = 3, alpha: float = 0.45) -> None:
    for k in np.unique(labels):
        pts = x[labels == k]
        ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=alpha, color=CLASS_COLORS[int(k) % len(CLASS_COLORS)],
                   label=f"class {int(k)}", linewidths=0)


def render_figure(scenario: Scenario, *, track: str, w: float, cfg_x: np.ndarray, dog_x: np.ndarray,
                  labels: np.ndarray, arrows: dict[str, np.ndarray], ood: dict[str, float], arrow_t: int,
                  arrow_class: int) -> bytes:
    """The four-panel figure as PNG bytes (Agg backend, no global pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 4.9), dpi=110, layout="constrained")
    axes = fig.subplots(1, 4)
    g = scenario.source.means.abs().max().item() + 3 * math.sqrt(scenario.source.covs[:, 0, 0].max().item())
    full = (-g, g, -g, g)
    zoom = zoom_window(scenario)

    ax = axes[0]
    _background(ax, scenario, full)
    real = scenario.real_x.numpy()
    _scatter(ax, real, scenario.real_y.numpy(), size=28, alpha=1.0)
    from matplotlib.patches import Rectangle
    ax.add_patch(Rectangle((zoom[0], zoom[2]), zoom[1] - zoom[0], zoom[3] - zoom[2], fill=False, lw=0.8,
                           color="tab:red"))
    ax.set_title(f"(a) pre-training density ({scenario.num_source_classes} classes),\n"
                 f"target region (dashed), {len(real)} real target samples", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)

    for ax, name, x in ((axes[1], "CFG", cfg_x), (axes[2], "DoG", dog_x)):
        _background(ax, scenario, zoom)
        _scatter(ax, x, labels)
        outside = ~((x[:, 0] >= zoom[0]) & (x[:, 0] <= zoom[1]) & (x[:, 1] >= zoom[2]) & (x[:, 1] <= zoom[3]))
        ax.set_title(f"({'b' if name == 'CFG' else 'c'}) {track} {name}, w = {w:g}: "
                     f"{100 * ood[name.lower()]:.1f}% out of region\n"
                     f"({int(outside.sum())} of {len(x)} beyond this view)", fontsize=9)

    ax = axes[3]
    _background(ax, scenario, zoom)
    p = arrows["points"]
    step = p[1, 0] - p[0, 0]
    # unit directions (magnitudes differ by orders between methods); CFG drawn half a cell off
    for key, color, shift in (("dog", "tab:green", 0.0), ("cfg", "tab:red", 0.5 * step)):
        v = arrows[key]
        u = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        ax.quiver(p[:, 0] + shift, p[:, 1] + shift, u[:, 0], u[:, 1], color=color, angles="xy",
                  scale_units="xy", scale=1.0 / (0.45 * step), width=0.006, label=key.upper())
    ax.set_title(f"(d) direction of -w(eps_c - eps_uncond), class {arrow_class}, w = {w:g}\n"
                 f"at t = {arrow_t} (alpha_bar = {float(arrows['alpha_bar']):.2f}); axes x_t / sqrt(alpha_bar)",
                 fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
