"""Samplers vs the exact posterior mean on analytic Gaussian-mixture image priors.

Not a test: prints markdown tables and saves them to benchmarks/results/analytic_posterior.md.
Priors and cases: benchmarks/analytic_cases.py (3×8×8 images, exact denoiser, exact Jacobian,
exact posterior). "tuned" = the three cases the defaults were swept on (weight_sweep.py);
everything else is held out. Every sampler starts from the same noise (common random numbers).
Cell = error of the sample mean vs the exact posterior mean ‖x̄ − E[x0|y]‖/‖E[x0|y]‖ /
mean measurement residual ‖Hx − y‖/‖y‖.
Rows:
  default      what preset "auto" runs (samplers/presets.py): C-ΠGDM with ω(t) = w + k/σ², task
               w/k/steps/start, grid uniform in t from τ to 0 (the last step lands on x̂0); σ_y > 0:
               the exact per-mode noisy map (cpgdm_noisy.py, w = 5, k = 2) from the start policy's
               point (W y, the Wiener estimate, when the operator has a spectral form)
  C-ΠGDM paper w = 15, k = 0 (σ_y > 0: the released noisy map, w = 2, λ = −0.15), grid to t = 0.001
  DDNM         DDIM + x̂0 ← x̂0 + H⁺(y − Hx̂0) (noise-aware gain when σ_y > 0), same grid as default
  ΠGDM         continuous ΠGDM, w = 3 (its best in the earlier runs; w = 1 is *not* the exact
               weight: ΠGDM's r_t² = σ²/(1+σ²) assumes unit-variance isotropic data)
  oracle       DDIM with the exact conditional denoiser E[x0 | x_t, y] from the *same start* as
               the default row: the best any sampler can do from that start and grid
  oracle/exact-start  the same from an exact posterior draw x0|y + σ0·z
Floor: the Monte-Carlo error of an n-sample mean of exact posterior draws (within-component
spread only, a lower bound). "ratio" = default / floor at NFE 10 (the done-when bound is 2×
noiseless, 3× noisy). Noisy headline rows also give the residual of exact posterior samples
(a residual "at the noise level" is near it, not below it).
Run:  python benchmarks/analytic_posterior.py   (≈ 15 min of one core)
"""

from __future__ import annotations

import math
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import analytic_cases as ac  # noqa: E402

from comfyui_inverse.samplers.presets import preset  # noqa: E402
from comfyui_inverse.samplers import (GaussianMixturePrior, cpgdm, ddim, ddnm, dense_matrix,  # noqa: E402
                                      measurement_start, pigdm, vp_sigmas_uniform_t)
from comfyui_inverse.samplers.start_policy import policy_start  # noqa: E402

N_SAMPLES = 256
NFES = (5, 10)
SIGMA_Y = 0.05


def _oracle_prior(case) -> GaussianMixturePrior:
    _, wts, cm, cv = case.prior.posterior(dense_matrix(case.op, ac.SHAPE), case.y.reshape(1, -1), case.sigma_y)
    return GaussianMixturePrior(cm[0], cv, wts[0], ac.SHAPE)


def run_case(case, z, full: bool):
    den, vjp = case.prior.denoiser("vp"), case.prior.vjp_provider("vp")
    oracle = _oracle_prior(case).denoiser("vp")
    p = preset("auto", "vp", case.op, case.sigma_y, (1,) + ac.SHAPE)
    rows = {}

    def put(row, nfe, fn):
        try:
            out = fn()
            rows.setdefault(row, {})[nfe] = (case.error(out), case.residual(out), "")
        except ValueError:  # the released noisy correction refuses ill-conditioned operators
            rows.setdefault(row, {})[nfe] = (math.inf, math.inf, "refused")

    for nfe in NFES:
        sig = vp_sigmas_uniform_t(nfe, t_start=p["start"], t_end=0.0, dtype=torch.float64)
        s0 = float(sig[0])
        xs = policy_start(case.problem, s0, "vp", noise=z)
        put("default", nfe, lambda: cpgdm(den, case.problem, sig, xs, w=p["w"], k=p["k"], lam=p["lam"], vjp=vjp))
        put("DDNM", nfe, lambda: ddnm(den, case.problem, sig, xs))
        paper_sig = vp_sigmas_uniform_t(nfe, dtype=torch.float64)
        paper_xs = measurement_start(case.problem, float(paper_sig[0]), "vp", noise=z)
        put("C-ΠGDM paper", nfe, lambda: cpgdm(den, case.problem, paper_sig, paper_xs, vjp=vjp, schedule="paper",
                                               noisy="paper"))
        if full:
            put("ΠGDM (w=3)", nfe, lambda: pigdm(den, case.problem, paper_sig, paper_xs, w=3.0, vjp=vjp))
        put("oracle (same start)", nfe, lambda: ddim(oracle, None, sig, xs))
        put("oracle (exact start)", nfe, lambda: ddim(oracle, None, sig, case.post_samples + s0 * z))
    return p, rows


def fmt(cell):
    e, r, tag = cell
    return f"— {tag}" if not math.isfinite(e) else f"{e:.3f} / {r:.3f}"


def main(out_path: pathlib.Path) -> str:
    torch.set_num_threads(1)  # tiny tensors: one thread avoids OpenMP spin-waiting on a busy box
    z = torch.randn(N_SAMPLES, *ac.SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t_start = time.time()
    lines = ["# Analytic posterior benchmark", "",
             __doc__.split("Rows:")[0].split("\n", 2)[2].strip(), "", "Rows:" + __doc__.split("Rows:")[1].split("Run:")[0],
             ""]
    headline = ["| case | σ_y | default sampler (w, k, τ) | NFE | error / floor | ratio | residual (exact samples) |",
                "|---|---|---|---|---|---|---|"]
    sections = []
    groups = [(0.0, "all", True), (SIGMA_Y, "all", True)]
    for sigma_y, which, full in groups:
        for case in ac.cases(N_SAMPLES, sigma_y, which):
            tuned = case.prior_name == "A" and case.name in ac.TUNED_OPS
            p, rows = run_case(case, z, full and tuned)
            title = f"{case.name}, prior {case.prior_name}, σ_y = {sigma_y:g}" + (" (tuned)" if tuned else " (held out)")
            sections += [f"### {title}", "", f"Monte-Carlo floor ≈ {case.floor:.3f}; preset: w = {p['w']:g}, "
                         f"k = {p['k']:g}, τ = {p['start']:g}, steps = {p['steps']}.", "",
                         "| sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|---|" + "---|" * len(NFES)]
            for row, cells in rows.items():
                sections.append(f"| {row} | " + " | ".join(fmt(cells[n]) for n in NFES) + " |")
            sections.append("")
            e, r, _ = rows["default"][10]
            label = f"C-ΠGDM ({p['w']:g}, {p['k']:g}, {p['start']:g})"
            ref = f" ({case.residual(case.post_samples):.3f})" if sigma_y else ""
            headline.append(f"| {case.name} [{case.prior_name}{'' if tuned else ', held out'}] | {sigma_y:g} | {label} "
                            f"| 10 | {fmt(rows['default'][10]).split(' / ')[0]} / {case.floor:.3f} | "
                            f"{e / case.floor:.1f}× | {r:.3f}{ref} |")
            print(f"... {title} ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
    lines += ["## Headline (NFE 10)", "", *headline, "", "## All cells", "", *sections,
              f"Total time {time.time() - t_start:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} thread."]
    text = "\n".join(lines) + "\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    print(main(pathlib.Path(__file__).resolve().parent / "results" / "analytic_posterior.md"))
