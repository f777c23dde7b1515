"""The w/k sweep behind the presets (raw log: benchmarks/results/weight_sweep.md).

C-ΠGDM with ω(t) = w + k/σ² over a (w, k) grid, at 5 and 10 NFE, paper grid (τ = 0.4 to t = 0.001),
data-dependent start, on the tuned or the held-out cases of analytic_cases.py, next to DDNM and the
oracle (exact conditional denoiser) from the same start and from an exact start.
Run:  python benchmarks/weight_sweep.py tuned|held_out   (tuned ≈ 3 min, held_out ≈ 15 min of one core)
"""
import sys, time, torch, itertools
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import analytic_cases as ac
from comfyui_inverse.samplers import cpgdm, ddim, measurement_start, vp_sigmas_uniform_t, GaussianMixturePrior, dense_matrix
torch.set_num_threads(1)
N = 256
which = sys.argv[1]
nfes = (5, 10)
z = torch.randn(N, *ac.SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
grid = [(15.0, 0.0)] + [(w, k) for w in (0.0, 2.0, 5.0, 10.0) for k in (1.0, 2.0, 4.0)]
for case in ac.cases(N, 0.0, which):
    den, vjp = case.prior.denoiser("vp"), case.prior.vjp_provider("vp")
    _, wts, cm, cv = case.prior.posterior(dense_matrix(case.op, ac.SHAPE), case.y.reshape(1, -1), 0.0)
    post = GaussianMixturePrior(cm[0], cv, wts[0], ac.SHAPE)
    line = [f"{case.prior_name} {case.name:26s} floor {case.floor:.3f}"]
    for nfe in nfes:
        sig = vp_sigmas_uniform_t(nfe, dtype=torch.float64)
        s0 = float(sig[0])
        xs = measurement_start(case.problem, s0, "vp", noise=z)
        xe = case.post_samples + s0 * z
        orc = ddim(post.denoiser("vp"), None, sig, xs)
        orce = ddim(post.denoiser("vp"), None, sig, xe)
        dd = ddim(den, case.problem, sig, xs)
        line.append(f"  NFE{nfe}: oracle {case.error(orc):.3f} oracle-exact {case.error(orce):.3f} ddnm {case.error(dd):.3f}/{case.residual(dd):.3f}")
        res = []
        for w, k in grid:
            out = cpgdm(den, case.problem, sig, xs, w=w, k=k, vjp=vjp, schedule="paper" if k == 0 else "consistent")
            res.append(f"({w:g},{k:g}) {case.error(out):.3f}/{case.residual(out):.3f}")
        line.append("    " + "  ".join(res))
    print("\n".join(line), flush=True)
