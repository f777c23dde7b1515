"""What limits C-ΠGDM at ≤ 10 NFE on the analytic benchmark: the start, the sampler, or ΠGDM's covariance.

Not a test: prints markdown and saves it to benchmarks/results/accuracy_limits.md. Same cases, noise
draws and metric as analytic_posterior.py (error of the 256-sample mean vs the exact posterior mean, as a
multiple of the Monte-Carlo floor / mean residual ‖Hx − y‖/‖y‖). Parts (all by default; name some to run
only those, e.g. `python benchmarks/accuracy_limits.py noisy_restart`):

  noisy_restart  σ_y = 0.05, 10 NFE spent as 10 straight steps, or 5 steps + one restart at τ_r = 0.3 / 0.2;
                 "old preset" = 5 straight steps (what preset "auto" ran before), "preset" = what it runs now
  oracle_restart σ_y = 0: C-ΠGDM vs the oracle (exact conditional denoiser E[x0 | x_t, y]) from the same
                 H⁺y start, with 0 / 1 / 3 restarts of 5 steps: is the start/restart scheme or the sampler
                 the limit?
  start_fill     σ_y = 0: the default (5 + restart 5) vs starts whose null space is filled by one model call
                 (x̂0 at the start σ0, or at t = 1 ≈ the prior mean) before 4 + restart 5 steps, and τ = 0.6
  covariance     σ_y = 0: DDIM with the Tweedie-covariance conditional denoiser x̂0 + C Hᵀ(H C Hᵀ)⁻¹(y − H x̂0),
                 C = σ²J_D (the exact denoiser Jacobian; ΠGDM replaces C by r_t²·I), solved exactly (m
                 J-products per step: 10 steps) or by 4 CG steps (2 steps × (1 + 4) = 10 network calls)
  final_sample   σ_y = 0.05: the preset's output vs the same with its range part sampled at the end,
                 x + V diag(√v_i) z on modes with s_i > 0, v_i = (1/r² + s_i²/σ_y²)⁻¹ with ΠGDM's r² at the
                 last evaluated σ (an ancestral last step on the measured modes); residuals next to those of
                 exact posterior samples and of the exact posterior mean
  family_limit   σ_y = 0, from pure noise (t = 1): the oracle at 10 steps vs the best Gaussian guidance, DDIM
                 with the exact Tweedie covariance (as in "covariance"), at 5, 10 and 40 steps: can any sampler
                 whose guidance treats p(x0 | x_t) as a Gaussian reach the floor, given enough steps? Also on priors
                 C and D and operators used nowhere else (rows [C] / [D], "unseen")
Run:  python benchmarks/accuracy_limits.py   (≈ 40 min of one core; family_limit alone ≈ 10)
"""

from __future__ import annotations

import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import analytic_cases as ac  # noqa: E402
from analytic_posterior import _oracle_prior  # noqa: E402

from comfyui_inverse.operators import GaussianBlur, Inpainting, SuperResolution  # noqa: E402
from comfyui_inverse.samplers import cpgdm, ddim, mixture_prior, vp_sigmas_uniform_t  # noqa: E402
from comfyui_inverse.samplers.cg import conjugate_gradient  # noqa: E402
from comfyui_inverse.samplers.coefficients import vp_coefficients  # noqa: E402
from comfyui_inverse.samplers.presets import preset  # noqa: E402
from comfyui_inverse.samplers.restarts import with_restarts  # noqa: E402
from comfyui_inverse.samplers.start_policy import policy_start  # noqa: E402

N = 256
SIGMA_Y = 0.05
PARTS = ("noisy_restart", "oracle_restart", "start_fill", "covariance", "final_sample", "family_limit")


def noises():
    return [torch.randn(N, *ac.SHAPE, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in (5, 6, 7, 8)]


def grid(n: int, t0: float):
    return vp_sigmas_uniform_t(n, t_start=t0, t_end=0.0, dtype=torch.float64)


class Setup:
    """One case with its preset and the sampler closures."""

    def __init__(self, case, z):
        self.case, self.z = case, z
        self.den, self.vjp = case.prior.denoiser("vp"), case.prior.vjp_provider("vp")
        self.p = preset("auto", "vp", case.op, case.sigma_y, (1,) + ac.SHAPE)

    def cpgdm(self, sig, x):
        p = self.p
        return cpgdm(self.den, self.case.problem, sig, x, w=p["w"], k=p["k"], lam=p["lam"], vjp=self.vjp)

    def start(self, sig):
        return policy_start(self.case.problem, float(sig[0]), "vp", noise=self.z[0])

    def run(self, sampler, steps, restarts=0, restart_steps=5, tau=None, tau_r=None, x=None):
        g = grid(steps, self.p["start"] if tau is None else tau)
        x = self.start(g) if x is None else x
        again = grid(restart_steps, self.p["restart_start"] if tau_r is None else tau_r)
        return with_restarts(sampler, x, g, again, restarts, noises=self.z[1:])

    def preset_output(self):
        return self.run(self.cpgdm, self.p["steps"], self.p["restarts"])

    def cell(self, out):
        c = self.case
        return f"{c.error(out) / c.floor:.1f}× / {c.residual(out):.3f}"


def table(title, note, columns, rows):
    return [f"## {title}", "", note, "", "| case | floor | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns), *rows, ""]


def label(case):
    tuned = case.prior_name == "A" and case.name in ac.TUNED_OPS
    kind = "" if tuned else ", unseen" if case.prior_name in UNSEEN_PRIORS else ", held out"
    return f"{case.name} [{case.prior_name}{kind}]"


def noisy_restart(z):
    cols = ["old preset (5 steps)", "10 steps", "5 + 5, τ_r 0.3", "5 + 5, τ_r 0.2", "preset"]
    rows = []
    for case in ac.cases(N, SIGMA_Y, "all"):
        s = Setup(case, z)
        outs = [s.run(s.cpgdm, 5), s.run(s.cpgdm, 10), s.run(s.cpgdm, 5, 1, tau_r=0.3),
                s.run(s.cpgdm, 5, 1, tau_r=0.2), s.preset_output()]
        rows.append(f"| {label(case)} | {case.floor:.3f} | " + " | ".join(s.cell(o) for o in outs) + " |")
    return table("Noisy runs: how to spend 10 NFE", f"σ_y = {SIGMA_Y}; exact noisy map, w = 5, k = 2, Wiener start "
                 "at τ = 0.4. Cell = error/floor / residual.", cols, rows)


def oracle_restart(z):
    cols = ["C-ΠGDM 5", "C-ΠGDM 5 + 5", "C-ΠGDM 5 × 4 (20 NFE)", "oracle 5", "oracle 5 + 5", "oracle 5 × 4 (20 NFE)"]
    rows = []
    for case in ac.cases(N, 0.0, "all"):
        s = Setup(case, z)
        oracle = _oracle_prior(case).denoiser("vp")
        o = lambda sig, x: ddim(oracle, None, sig, x)  # noqa: E731
        outs = [s.run(s.cpgdm, 5), s.run(s.cpgdm, 5, 1), s.run(s.cpgdm, 5, 3), s.run(o, 5), s.run(o, 5, 1),
                s.run(o, 5, 3)]
        rows.append(f"| {label(case)} | {case.floor:.3f} | " + " | ".join(s.cell(x) for x in outs) + " |")
    return table("Noiseless: start/restart scheme vs sampler", "Same H⁺y start, preset τ and τ_r for every row; "
                 "the oracle is DDIM with the exact conditional denoiser.", cols, rows)


def filled_start(s, sig_fill: float, sig0: float):
    """H⁺y + (I − P)x̂0 + σ0·z: the null space of the start filled by one model call at σ = sig_fill."""
    prob = s.case.problem
    x = policy_start(prob, sig_fill, "vp", noise=s.z[0])
    x0 = s.den(x, torch.full((N,), sig_fill, dtype=torch.float64))
    return prob.pinv_y + (x0 - prob.project(x0)) + sig0 * s.z[0]


def start_fill(z):
    cols = ["default 5 + 5", "fill at σ0, 1 + 4 + 5", "fill at t = 1, 1 + 4 + 5", "τ = 0.6, 5 + 5"]
    rows = []
    big = float(grid(1, 1.0)[0])
    for case in ac.cases(N, 0.0, "all"):
        s = Setup(case, z)
        s0 = float(grid(4, s.p["start"])[0])
        outs = [s.preset_output(), s.run(s.cpgdm, 4, 1, x=filled_start(s, s0, s0)),
                s.run(s.cpgdm, 4, 1, x=filled_start(s, big, s0)), s.run(s.cpgdm, 5, 1, tau=0.6)]
        rows.append(f"| {label(case)} | {case.floor:.3f} | " + " | ".join(s.cell(x) for x in outs) + " |")
    return table("Noiseless: filling the start's null space", "10 NFE in every column (the fill costs one).",
                 cols, rows)


def tweedie_ddim(s, sig, x, iters: int):
    """DDIM whose x̂0 is corrected by the Tweedie-covariance update (see the module docstring)."""
    prior, op, y = s.case.prior, s.case.op, s.case.problem.y
    for c in vp_coefficients(sig.tolist(), w=0.0, lam=0.0, closed_form=True):
        sigma = torch.full((N,), c.sigma, dtype=torch.float64)
        parts = prior._parts(x, sigma, "vp")
        dk, _, resp, _ = parts
        x0 = (resp[:, :, None] * dk).sum(1).reshape(x.shape)
        eps = (x - x0) / c.sigma
        cov = lambda v: c.sigma**2 * prior.vjp(x, sigma, v, "vp", parts=parts)  # noqa: E731  (J_D symmetric)
        r = y - op.forward(x0)
        u = conjugate_gradient(lambda v: op.forward(cov(op.adjoint(v))), r, torch.zeros_like(r), iters, tol=1e-12)
        x0 = x0 + cov(op.adjoint(u))
        x = (c.r_perp * (c.mu * x0 + c.sigma_vp * eps) + c.ks_perp * eps) / c.mu_next
    return x


def covariance(z):
    cols = ["C-ΠGDM preset", "oracle, same start (10 steps)", "Tweedie cov., exact solve (10 steps)",
            "Tweedie cov., 2 steps × 4 CG"]
    rows = []
    for case in ac.cases(N, 0.0, "all"):
        s = Setup(case, z)
        oracle = _oracle_prior(case).denoiser("vp")
        g10, g2 = grid(10, s.p["start"]), grid(2, s.p["start"])
        m = case.y[0].numel()
        outs = [s.preset_output(), ddim(oracle, None, g10, s.start(g10)), tweedie_ddim(s, g10, s.start(g10), m),
                tweedie_ddim(s, g2, s.start(g2), 4)]
        rows.append(f"| {label(case)} | {case.floor:.3f} | " + " | ".join(s.cell(x) for x in outs) + " |")
    return table("Noiseless: ΠGDM's isotropic covariance vs the exact one", "Same start for every column.", cols, rows)


def final_sample(z):
    cols = ["exact samples (residual)", "exact posterior mean (residual)", "preset", "preset + range sample"]
    rows = []
    z_end = torch.randn(N, *ac.SHAPE, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    for case in ac.cases(N, SIGMA_Y, "all"):
        s = Setup(case, z)
        out = s.preset_output()
        last = float((grid(5, s.p["restart_start"]) if s.p["restarts"] else grid(s.p["steps"], s.p["start"]))[-2])
        r2 = last**2 / (1 + last**2)
        spectrum = case.op.spectral((N,) + ac.SHAPE)
        s2 = spectrum.s**2
        var = torch.where(s2 > 0, 1.0 / (1.0 / r2 + s2 / SIGMA_Y**2), torch.zeros_like(s2))
        modes = spectrum.to_modes(z_end)
        sampled = out + spectrum.from_modes(spectrum.like(modes, var.sqrt()) * modes)
        mean = case.post_mean.reshape(1, *ac.SHAPE).expand(N, *ac.SHAPE)
        rows.append(f"| {label(case)} | {case.floor:.3f} | {case.residual(case.post_samples):.3f} | "
                    f"{case.residual(mean):.3f} | {s.cell(out)} | {s.cell(sampled)} |")
    return table("Noisy residuals: posterior mean vs posterior sample", f"σ_y = {SIGMA_Y}.", cols, rows)


# Two priors and three operators used nowhere else (added after the A/B rows, to check the pattern)
UNSEEN_PRIORS = {"C": lambda: mixture_prior(ac.SHAPE, n_components=4, seed=5),
                 "D": lambda: ac.rotated_mixture_prior(ac.SHAPE, 3, seed=7)}
UNSEEN_OPS = {"SR×2 (box)": lambda: SuperResolution(2, "box"),
              "inpainting (40% random)": lambda: Inpainting(ac._random_mask(0.4, 21)),
              "Gaussian deblur (σ=1.5 px)": lambda: GaussianBlur(1.5)}


def unseen_cases():
    for name, prior in UNSEEN_PRIORS.items():
        yield from ac.cases_of(name, prior(), UNSEEN_OPS, 0.0, N)


def family_limit(z):
    cols = ["C-ΠGDM preset", "oracle, t = 1 (10 steps)"] + [f"Tweedie cov., t = 1 ({n} steps)" for n in (5, 10, 40)]
    rows = []

    def from_noise(steps):
        # at t = 1 the marginal is N(0, (1 + σ²)·I) ≈ σ·z: the right start for any sampler
        g = grid(steps, 1.0)
        return g, z[0] * float(g[0])

    for case in [*ac.cases(N, 0.0, "all"), *unseen_cases()]:
        s = Setup(case, z)
        oracle = _oracle_prior(case).denoiser("vp")
        m = case.y[0].numel()
        outs = [s.preset_output(), ddim(oracle, None, *from_noise(10))]
        outs += [tweedie_ddim(s, *from_noise(n), m) for n in (5, 10, 40)]
        rows.append(f"| {label(case)} | {case.floor:.3f} | " + " | ".join(s.cell(x) for x in outs) + " |")
    return table("Noiseless: the limit of Gaussian guidance", "Pure-noise start; the oracle is DDIM with the "
                 "exact conditional denoiser, \"Tweedie cov.\" DDIM with the best Gaussian one.", cols, rows)


def main(parts, out_path: pathlib.Path) -> str:
    torch.set_num_threads(1)
    z = noises()
    t0 = time.time()
    lines = ["# Accuracy limits at ≤ 10 NFE", "", __doc__.split("\n\n", 1)[1].split("Run:")[0].strip(), ""]
    for name in parts:
        lines += globals()[name](z)
        print(f"... {name} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    lines.append(f"Total time {time.time() - t0:.0f} s, torch {torch.__version__}, 1 thread.")
    text = "\n".join(lines) + "\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    chosen = [a for a in sys.argv[1:] if a in PARTS] or list(PARTS)
    unknown = [a for a in sys.argv[1:] if a not in PARTS]
    if unknown:
        sys.exit(f"unknown part(s) {unknown}; choose from {PARTS}")
    name = "accuracy_limits.md" if chosen == list(PARTS) else f"accuracy_limits_{'_'.join(chosen)}.md"
    print(main(chosen, pathlib.Path(__file__).resolve().parent / "results" / name))
