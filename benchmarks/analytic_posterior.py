"""Samplers vs the exact posterior mean on analytic Gaussian-mixture image priors.

Not a test: prints markdown tables and saves them to benchmarks/results/analytic_posterior.md.
Priors and cases: benchmarks/analytic_cases.py (3×8×8 images, exact denoiser, exact Jacobian,
exact posterior). "tuned" = the three cases the defaults were swept on (weight_sweep.py);
everything else is held out. Every sampler starts from the same noise (common random numbers).
Cell = error of the sample mean vs the exact posterior mean ‖x̄ − E[x0|y]‖/‖E[x0|y]‖ /
mean measurement residual ‖Hx − y‖/‖y‖.
Rows:
  C-ΠGDM ω     C-ΠGDM with ω(t) = w + k/σ² and the task's w/k/start of preset "auto"
               (samplers/presets.py), NFE straight steps, grid uniform in t from τ to 0 (the last step
               lands on x̂0); σ_y > 0: the exact per-mode noisy map (cpgdm_noisy.py, w = 5, k = 2) from
               the start policy's point (W y, the Wiener estimate, when the operator has a spectral form)
  C-ΠGDM ω + restart  5 steps, re-noised to the preset's τ_r (0.3; inpainting 0.2), 5 more steps
               (10 NFE; samplers/restarts.py)
  The headline's default is what preset "auto" runs at 10 NFE: "ω + restart" where the preset
  has a restart (noiseless; σ_y > 0: SR, inpainting, colorization), else "ω" (σ_y > 0: blurs,
  10 straight steps).
  C-ΠGDM paper w = 15, k = 0 (σ_y > 0: the released noisy map, w = 2, λ = −0.15), grid to t = 0.001
  DDNM         DDIM + x̂0 ← x̂0 + H⁺(y − Hx̂0) (noise-aware gain when σ_y > 0), same grid as C-ΠGDM ω
  ΠGDM         continuous ΠGDM, w = 3 (its best in the earlier runs; w = 1 is *not* the exact
               weight: ΠGDM's r_t² = σ²/(1+σ²) assumes unit-variance isotropic data)
  oracle       DDIM with the exact conditional denoiser E[x0 | x_t, y] from the *same start* as
               the C-ΠGDM ω row: the best any sampler can do from that start and grid
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
                                      cpgfm, flow_sigmas_uniform_t, measurement_start, pigdm, vp_sigmas_uniform_t)
from comfyui_inverse.samplers.restarts import with_restarts  # noqa: E402
from comfyui_inverse.samplers.start_policy import policy_start  # noqa: E402

N_SAMPLES = 256
NFES = (5, 10)
SIGMA_Y = 0.05


def _oracle_prior(case) -> GaussianMixturePrior:
    _, wts, cm, cv = case.prior.posterior(dense_matrix(case.op, ac.SHAPE), case.y.reshape(1, -1), case.sigma_y)
    return GaussianMixturePrior(cm[0], cv, wts[0], ac.SHAPE)


def run_case(case, z, z2, full: bool):
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
        put("C-ΠGDM ω", nfe, lambda: cpgdm(den, case.problem, sig, xs, w=p["w"], k=p["k"], lam=p["lam"], vjp=vjp))
        if nfe == 10:
            half = vp_sigmas_uniform_t(5, t_start=p["start"], t_end=0.0, dtype=torch.float64)
            again = vp_sigmas_uniform_t(5, t_start=p["restart_start"], t_end=0.0, dtype=torch.float64)
            x5 = policy_start(case.problem, float(half[0]), "vp", noise=z)

            def default(sigmas, x):
                return cpgdm(den, case.problem, sigmas, x, w=p["w"], k=p["k"], lam=p["lam"], vjp=vjp)

            put("C-ΠGDM ω + restart", nfe, lambda: with_restarts(default, x5, half, again, 1, noises=[z2]))
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


def flow_table(z) -> list[str]:
    """C-ΠGFM, σ_y = 0, prior A: the paper's weight (w = 20, k = 0) vs the preset (w = 10, k = 4), B = 0.2, σ0 = 0.4."""
    p = preset("auto", "flow", None, 0.0)
    out = ["## C-ΠGFM (flow), σ_y = 0, prior A", "",
           f"Grid uniform in t from st = 0.6 to 1 (σ from 0.4 to 0); paper: w = 20, k = 0; preset: w = {p['w']:g}, "
           f"k = {p['k']:g} (the flow analogue of the k/σ² term, coefficients.flow_coefficients); B = 0.2.", "",
           "| case | floor | " + " | ".join(f"paper NFE {n} | preset NFE {n}" for n in NFES) + " |",
           "|---|---|" + "---|---|" * len(NFES)]
    for case in ac.cases(N_SAMPLES, 0.0, "tuned"):
        den, vjp = case.prior.denoiser("flow"), case.prior.vjp_provider("flow")
        cells = []
        for nfe in NFES:
            sig = flow_sigmas_uniform_t(nfe, t_start=0.6, dtype=torch.float64)
            xs = measurement_start(case.problem, float(sig[0]), "flow", noise=z)
            for w, k in ((20.0, 0.0), (p["w"], p["k"])):
                o = cpgfm(den, case.problem, sig, xs, w=w, lam=0.2, k=k, vjp=vjp)
                cells.append(f"{case.error(o):.3f} / {case.residual(o):.3f}")
        out.append(f"| {case.name} | {case.floor:.3f} | " + " | ".join(cells) + " |")
    return out


def fmt(cell):
    e, r, tag = cell
    return f"— {tag}" if not math.isfinite(e) else f"{e:.3f} / {r:.3f}"


def main(out_path: pathlib.Path) -> str:
    torch.set_num_threads(1)  # tiny tensors: one thread avoids OpenMP spin-waiting on a busy box
    z = torch.randn(N_SAMPLES, *ac.SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z2 = torch.randn(N_SAMPLES, *ac.SHAPE, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t_start = time.time()
    lines = ["# Analytic posterior benchmark", "",
             __doc__.split("Rows:")[0].split("\n", 2)[2].strip(), "", "Rows:" + __doc__.split("Rows:")[1].split("Run:")[0],
             ""]
    headline = ["| case | σ_y | default sampler (w, k, τ) | error / floor | ratio | residual (exact samples) "
                "| oracle, same start | DDNM |", "|---|---|---|---|---|---|---|---|"]
    sections = []
    groups = [(0.0, "all", True), (SIGMA_Y, "all", True)]
    for sigma_y, which, full in groups:
        for case in ac.cases(N_SAMPLES, sigma_y, which):
            tuned = case.prior_name == "A" and case.name in ac.TUNED_OPS
            p, rows = run_case(case, z, z2, full and tuned)
            title = f"{case.name}, prior {case.prior_name}, σ_y = {sigma_y:g}" + (" (tuned)" if tuned else " (held out)")
            sections += [f"### {title}", "", f"Monte-Carlo floor ≈ {case.floor:.3f}; preset: w = {p['w']:g}, "
                         f"k = {p['k']:g}, τ = {p['start']:g}, steps = {p['steps']}.", "",
                         "| sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |", "|---|" + "---|" * len(NFES)]
            for row, cells in rows.items():
                sections.append(f"| {row} | " + " | ".join(fmt(cells[n]) if n in cells else "" for n in NFES) + " |")
            sections.append("")
            default = "C-ΠGDM ω + restart" if p["restarts"] else "C-ΠGDM ω"
            e, r, _ = rows[default][10]
            label = f"C-ΠGDM ({p['w']:g}, {p['k']:g}, {p['start']:g}){' + restart' if p['restarts'] else ''}"
            ref = f" ({case.residual(case.post_samples):.3f})" if sigma_y else ""
            o_e = rows["oracle (same start)"][10][0]
            d_e = rows["DDNM"][10][0]
            headline.append(f"| {case.name} [{case.prior_name}{'' if tuned else ', held out'}] | {sigma_y:g} | {label} "
                            f"| {e:.3f} / {case.floor:.3f} | **{e / case.floor:.1f}×** | {r:.3f}{ref} | {o_e:.3f} | "
                            f"{d_e:.3f} |")
            print(f"... {title} ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
    flow = flow_table(z)
    lines += ["## Headline (NFE 10)", "", *headline, "", *flow, "", "## All cells", "", *sections,
              f"Total time {time.time() - t_start:.0f} s, torch {torch.__version__}, {torch.get_num_threads()} thread."]
    text = "\n".join(lines) + "\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text


if __name__ == "__main__":
    print(main(pathlib.Path(__file__).resolve().parent / "results" / "analytic_posterior.md"))
