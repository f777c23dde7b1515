"""Noisy measurements (σ_y = 0.05) on the analytic mixture prior: exact vs paper noisy C-ΠGDM vs ΠGDM.

Not a test: prints a markdown table and saves it to benchmarks/results/analytic_noisy.md.
Same prior, ground truth, sample count and start noise as benchmarks/analytic_posterior.py
(common random numbers). Cell = error/floor · residual: the relative error of the sample mean
vs the exact posterior mean divided by the Monte-Carlo floor, then the mean ‖Hx − y‖/‖y‖.
The residual to aim for is that of exact posterior samples (column "posterior samples"):
a sampler below it fits the noise, above it misses the measurement.
Run:  python benchmarks/analytic_noisy.py   (≈ 3 min of one core)
`noisy_section(...)` returns the same lines for analytic_posterior.py to embed.
"""

from __future__ import annotations

import math
import pathlib
import sys
import time

import torch

from comfyui_inverse.operators import Colorization, GaussianBlur, Inpainting, MotionBlur, SuperResolution
from comfyui_inverse.samplers import (OperatorProblem, cpgdm, cpgfm, dense_matrix, measurement_start, mixture_prior,
                                      pigdm, vp_sigmas_uniform_t, wiener_start)

SHAPE = (3, 8, 8)
N_SAMPLES = 256
NFES = (5, 10, 20)
SIGMA_Y = 0.05
PIGDM_WEIGHTS = (1.0, 3.0, 6.0)  # ΠGDM gets its best weight per cell


def noisy_tasks():
    mask = torch.zeros(8, 8)
    mask[2:6, 1:5] = 1.0
    return {"SR×4 (bicubic)": SuperResolution(4, "bicubic"), "inpainting (25% block)": Inpainting(mask),
            "Gaussian deblur (σ=1 px)": GaussianBlur(1.0),
            "motion deblur (FFT, 3 px, 30°)": MotionBlur(3, angle=30),
            "colorization": Colorization()}


def _posterior(prior, op, y, sigma_y, n):
    """(posterior mean, Monte-Carlo floor of the mean error, mean residual of n exact posterior samples)."""
    mean, wts, cmeans, covs = prior.posterior(dense_matrix(op, SHAPE), y.reshape(1, -1), sigma_y)
    mean = mean[0]
    floor = math.sqrt(float((wts[0][:, None, None] * covs).sum(0).trace()) / n) / float(mean.norm())
    comp = torch.multinomial(wts[0], n, replacement=True, generator=torch.Generator().manual_seed(9))
    ev, q = torch.linalg.eigh(covs)
    z = torch.randn(n, covs.shape[-1], generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    samples = cmeans[0][comp] + torch.einsum("nij,nj->ni", q[comp], ev[comp].clamp_min(0).sqrt() * z)
    return mean, floor, samples.reshape(n, *SHAPE)


def noisy_section(prior, truth, z, tasks=None, nfes=NFES, sigma_y=SIGMA_Y, log=None) -> list[str]:
    """Markdown lines: one table per task, rows = samplers, columns = NFE."""
    den, vjp = prior.denoiser("vp"), prior.vjp_provider("vp")
    n = z.shape[0]
    lines = []
    for name, op in (tasks or noisy_tasks()).items():
        y = op.forward(truth)
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
        prob = OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y)
        mean, floor, samples = _posterior(prior, op, y, sigma_y, n)
        post_res = float(prob.measurement_error(samples).mean())

        def cell(run):
            try:
                out = run()
            except ValueError:
                return None
            e = float((out.reshape(n, -1).mean(0) - mean.reshape(-1)).norm() / mean.norm())
            return e / floor, float(prob.measurement_error(out).mean())

        rows = {"C-ΠGDM paper (c₃ heuristic, w=2, λ=−0.15)": {}, "ΠGDM (best w)": {},
                "C-ΠGDM exact (H⁺y start)": {}, "C-ΠGDM exact (Wiener start)": {}, "ΠGDM (best w, Wiener start)": {}}
        for nfe in nfes:
            sig = vp_sigmas_uniform_t(nfe, dtype=torch.float64)
            xs = measurement_start(prob, float(sig[0]), "vp", noise=z)
            xw = wiener_start(prob, float(sig[0]), "vp", noise=z)
            rows["C-ΠGDM paper (c₃ heuristic, w=2, λ=−0.15)"][nfe] = cell(lambda: cpgdm(den, prob, sig, xs, vjp=vjp, noisy="paper"))
            rows["C-ΠGDM exact (H⁺y start)"][nfe] = cell(lambda: cpgdm(den, prob, sig, xs, vjp=vjp))
            rows["C-ΠGDM exact (Wiener start)"][nfe] = cell(lambda: cpgdm(den, prob, sig, xw, vjp=vjp))
            for label, start in (("ΠGDM (best w)", xs), ("ΠGDM (best w, Wiener start)", xw)):
                best = [(cell(lambda: pigdm(den, prob, sig, start, w=w, vjp=vjp)) or (math.inf, math.inf)) + (w,)
                        for w in PIGDM_WEIGHTS]
                rows[label][nfe] = min(best, key=lambda r: r[0])
        lines += [f"### {name}, σ_y = {sigma_y:g}", "",
                  f"Monte-Carlo floor {floor:.3f}; residual of exact posterior samples {post_res:.3f}.", "",
                  "| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---|" * len(nfes)]
        for row, cells in rows.items():
            def fmt(c):
                if c is None or not math.isfinite(c[0]):
                    return "refused"
                tag = f" [w={c[2]:g}]" if len(c) > 2 else ""
                return f"{c[0]:.1f}× · {c[1]:.3f}{tag}"
            lines.append(f"| {row} | " + " | ".join(fmt(cells[k]) for k in nfes) + " |")
        lines.append("")
        if log:
            log(name)
    return lines


def _flow_sigmas(nfe: int) -> torch.Tensor:
    """The C-ΠGFM grid of analytic_posterior.py's flow rows, stopped at t = 0.999 (v̂ is stiff at t = 1)."""
    return 1.0 - torch.linspace(0.6, 0.999, nfe + 1, dtype=torch.float64)


def flow_section(prior, truth, z, nfes=NFES, sigma_y=SIGMA_Y) -> list[str]:
    """C-ΠGFM (w = 20, B = 0.2): the released sampler (σ_y ignored) vs noisy='exact', same cell format."""
    den, vjp = prior.denoiser("flow"), prior.vjp_provider("flow")
    n = z.shape[0]
    names = ("SR×4 (bicubic)", "inpainting (25% block)", "Gaussian deblur (σ=1 px)")
    lines = [f"### C-ΠGFM (flow), σ_y = {sigma_y:g}", "",
             'w = 20, B = 0.2 unless stated, t from 0.6 to 0.999. "paper" is the released sampler, which ignores σ_y.', "",
             "| task / variant | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for name in names:
        op = noisy_tasks()[name]
        y = op.forward(truth)
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
        prob = OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y)
        mean, floor, samples = _posterior(prior, op, y, sigma_y, n)
        preset = dict(w=10.0, k=1.0)  # samplers/presets.py, flow with σ_y > 0
        for label, noisy, start, kw in (("paper", "paper", measurement_start, {}),
                                        ("exact, H⁺y start", "exact", measurement_start, {}),
                                        ("exact, Wiener start", "exact", wiener_start, {}),
                                        ("exact, Wiener start, preset w = 10, k = 1", "exact", wiener_start, preset),
                                        ("paper, preset w = 10, k = 1", "paper", measurement_start, preset)):
            cells = []
            for nfe in nfes:
                sig = _flow_sigmas(nfe)
                out = cpgfm(den, prob, sig, start(prob, float(sig[0]), "flow", noise=z), vjp=vjp, noisy=noisy, **kw)
                e = float((out.reshape(n, -1).mean(0) - mean.reshape(-1)).norm() / mean.norm())
                cells.append(f"{e / floor:.1f}× · {float(prob.measurement_error(out).mean()):.3f}")
            lines.append(f"| {name} / {label} | " + " | ".join(cells) + " |")
        lines.append(f"| {name} / exact posterior samples (residual) | " + " | ".join(
            f"{float(prob.measurement_error(samples).mean()):.3f}" for _ in nfes) + " |")
    return lines + [""]


def main(out_path: pathlib.Path) -> str:
    torch.set_num_threads(1)  # tiny tensors: one thread is faster on a busy machine
    t0 = time.time()
    prior = mixture_prior(SHAPE, n_components=3, seed=0)
    truth = prior.sample(1, torch.Generator().manual_seed(1))
    z = torch.randn(N_SAMPLES, *SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    lines = ["# Noisy measurements: exact vs paper noisy C-ΠGDM (analytic posterior)", "",
             f"Prior: 3-component structured Gaussian mixture on {SHAPE}; {N_SAMPLES} samples per cell, exact VJP;",
             "paper VP grid (t from 0.4 to 0.001). Cell: error/floor · mean ‖Hx−y‖/‖y‖ (error = relative error of",
             "the sample mean vs the exact posterior mean; floor = its Monte-Carlo floor). C-ΠGDM exact: default",
             "noisy='exact' settings (w = 5, k = 2, λ = 0); Wiener start W y + σ₀z with τ = 1 (samplers/cpgdm_noisy.py).",
             f"ΠGDM: best w in {PIGDM_WEIGHTS} (noiseless guidance, as released). Target (issue #13): ≤ 3× the floor",
             "at ≤ 10 NFE, never refused, residual near that of exact posterior samples.", ""]
    lines += noisy_section(prior, truth, z, log=lambda name: print(f"... {name} ({time.time() - t0:.0f} s)", file=sys.stderr))
    lines += flow_section(prior, truth, z)
    lines += [f"Total time {time.time() - t0:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} thread."]
    text = "\n".join(lines) + "\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    print(main(pathlib.Path(__file__).resolve().parent / "results" / "analytic_noisy.md"))
