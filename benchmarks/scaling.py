"""Time and peak memory vs image size (256² → 2048²) for every operator, one C-ΠGDM step and one
TReg data-consistency step, fitted as a power law in the pixel count N: time ∝ N^slope.

    ~/.cache/comfyui-inverse/venv/bin/python benchmarks/scaling.py [--sizes 256 512 1024 2048]

Images are 1×3×n×n float32 on the CPU. "build" is the first H⁺H call of a fresh operator at that
size (matrices/spectra/SVDs are made and cached then); "H" and "H⁺" are the fastest of the repeat
calls afterwards. Times are user CPU time with one torch thread (default), so a loaded machine
does not distort them; kernel time (page faults of fresh buffers) is shown apart. Peak memory is the process's peak RSS above the RSS before the call (Linux
VmHWM, reset through /proc/self/clear_refs), so it counts every temporary, cached or not.
Slopes are least-squares fits of log(time) on log(N) over the sizes >= 512 (256² calls are
dominated by fixed per-call costs). Peak memory below ~50 MB is mostly reused heap and shows as
0, so it is given per pixel at the largest size rather than as a slope. Expected: ≈ 1 for elementwise/FFT paths (N log N shows as
1.0–1.1); ≈ 1.5 for dense 1-D matrices applied per axis (n×n·n = N^1.5); ≈ 1.5 for a dense
per-axis SVD build (n³ = N^1.5).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

from comfyui_inverse import operators as ops
from comfyui_inverse.samplers import OperatorProblem, cpgdm, vp_sigmas_uniform_t
from comfyui_inverse.samplers.treg import data_consistency

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.md"
FIT_FROM = 512


# ----------------------------------------------------------------------------- measuring

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(fn, repeats: int = 1) -> tuple[float, float, float]:
    """(fastest user-CPU seconds, kernel seconds of that call, peak MB above the starting RSS) of fn().

    User CPU time, not wall time, and the minimum: on a shared machine waiting for a core is not
    the operator's cost. Kernel time is reported apart: at 2048² it is mostly first-touch page
    faults of fresh ≥ 32 MB buffers (glibc maps those anew on every allocation), not arithmetic."""
    best, peak = None, 0.0
    for _ in range(repeats):
        ok = _reset_peak()
        start_kb = _status_kb("VmRSS")
        u0, s0 = _cpu()
        out = fn()
        u1, s1 = _cpu()
        if best is None or u1 - u0 < best[0]:
            best = (u1 - u0, s1 - s0)
        if ok:
            peak = max(peak, (_status_kb("VmHWM") - start_kb) / 1024)
        del out
    return best[0], best[1], peak


def fit_slope(sizes, values) -> float:
    pts = [(math.log(n * n), math.log(v)) for n, v in zip(sizes, values) if n >= FIT_FROM and v > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


# ----------------------------------------------------------------------------- subjects

def random_mask(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(1, n, n, generator=g) > 0.5).float()


OPERATORS = {
    "SR ×4 bicubic": lambda n: ops.SuperResolution(4, kernel="bicubic"),
    "SR ×4 box": lambda n: ops.SuperResolution(4, kernel="box"),
    "Inpainting (50 %)": lambda n: ops.Inpainting(random_mask(n)),
    "Gaussian blur σ3 (SVD, zero bc)": lambda n: ops.GaussianBlur(3.0, mode="svd"),
    "Gaussian blur σ3 (FFT)": lambda n: ops.GaussianBlur(3.0, mode="fft"),
    "Motion blur 9 px (FFT)": lambda n: ops.MotionBlur(9.0, 30.0),
    "Denoise": lambda n: ops.Denoise(),
    "Colorization": lambda n: ops.Colorization(),
    "Blur σ2 (SVD) then SR ×4": lambda n: ops.Compose(ops.GaussianBlur(2.0, mode="svd"), ops.SuperResolution(4)),
    "Blur σ2 (FFT) then SR ×4 box": lambda n: ops.Compose(ops.GaussianBlur(2.0, mode="fft"),
                                                          ops.SuperResolution(4, kernel="box")),
}


def image(n: int) -> torch.Tensor:
    return torch.rand(1, 3, n, n, generator=torch.Generator().manual_seed(n))


def operator_rows(sizes, repeats):
    rows = []
    for name, make in OPERATORS.items():
        row = {"name": name, "H": [], "pinv": [], "build": [], "mem": [], "sys": []}
        for n in sizes:
            op = make(n)
            x = image(n)
            build, _, _ = measure(lambda: op.pinv(op.forward(x)))
            y = op.forward(x)
            t_h, sys_h, mem_h = measure(lambda: op.forward(x), repeats)
            t_p, _, mem_p = measure(lambda: op.pinv(y), repeats)
            row["build"].append(build)
            row["H"].append(t_h)
            row["sys"].append(sys_h)
            row["pinv"].append(t_p)
            row["mem"].append(max(mem_h, mem_p))
            del op, x, y
        rows.append(row)
        print(f"  {name}: H {row['H'][-1] * 1e3:.0f} ms at {sizes[-1]}²", file=sys.stderr, flush=True)
    return rows


def shrink_denoiser(x, sigma):
    """D(x) = x / (1 + σ²): the exact denoiser of a N(0, I) prior (in ComfyUI σ), linear, nearly free."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
    return x / (1.0 + s * s)


def solver_rows(sizes, repeats):
    rows = []
    sigmas = vp_sigmas_uniform_t(1, t_start=0.4)
    subjects = {
        "C-ΠGDM step, SR ×4 bicubic (autograd VJP, float64 work)": ("cpgdm", lambda: ops.SuperResolution(4)),
        "C-ΠGDM step, Gaussian blur σ3 FFT": ("cpgdm", lambda: ops.GaussianBlur(3.0, mode="fft")),
        "TReg DC step (5 CG iters), SR ×4 bicubic": ("dc", lambda: ops.SuperResolution(4)),
        "TReg DC step (5 CG iters), Gaussian blur σ3 SVD": ("dc", lambda: ops.GaussianBlur(3.0, mode="svd")),
    }
    for name, (kind, make) in subjects.items():
        row = {"name": name, "H": [], "pinv": [], "build": [], "mem": [], "sys": []}
        for n in sizes:
            op = make()
            x = image(n) * 2 - 1
            y = op.forward(x)
            if kind == "cpgdm":
                problem = OperatorProblem(op, y)  # builds and caches the operator's matrices
                step = lambda: cpgdm(shrink_denoiser, problem, sigmas, generator=torch.Generator().manual_seed(0),
                                     vjp="autograd")
            else:
                x0 = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
                op.pinv(y)
                step = lambda: data_consistency(x0, op, y, cg_iters=5, cg_tol=0.0)
            t, sys_t, mem = measure(step, repeats)
            row["H"].append(t)
            row["sys"].append(sys_t)
            row["mem"].append(mem)
            del op, x, y
        rows.append(row)
        print(f"  {name}: {row['H'][-1] * 1e3:.0f} ms at {sizes[-1]}²", file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------- report

def ms(v: float) -> str:
    return f"{v * 1e3:.1f}" if v < 1 else f"{v * 1e3:.0f}"


def table(sizes, op_rows, solver_rows_) -> str:
    head = " / ".join(f"{n}²" for n in sizes)
    lines = [
        f"User-CPU times in ms (fastest of the repeats; kernel time apart), peak memory in MB above the starting RSS; 1×3×n×n float32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Slopes: time ∝ N^slope (N = pixels), "
        f"fitted on n >= {FIT_FROM}.",
        "",
        "### Operators",
        "",
        f"| operator | H: {head} | H⁺: {head} | first H⁺H (build): {head} | H kernel ms at {sizes[-1]}² | peak MB at {sizes[-1]}² | slope H | slope H⁺ | slope build |",
        "|---|" + "---|" * 8,
    ]
    for r in op_rows:
        lines.append(
            f"| {r['name']} | {' / '.join(ms(v) for v in r['H'])} | {' / '.join(ms(v) for v in r['pinv'])} | "
            f"{' / '.join(ms(v) for v in r['build'])} | {r['sys'][-1] * 1e3:.0f} | {r['mem'][-1]:.0f} | {fit_slope(sizes, r['H']):.2f} | "
            f"{fit_slope(sizes, r['pinv']):.2f} | {fit_slope(sizes, r['build']):.2f} |")
    lines += ["", "### Solver steps (pure samplers/, cheap linear denoiser)", "",
              f"| step | time ms: {head} | kernel ms at {sizes[-1]}² | peak MB: {head} | peak bytes/pixel at {sizes[-1]}² | slope time |", "|---|---|---|---|---|---|"]
    for r in solver_rows_:
        lines.append(f"| {r['name']} | {' / '.join(ms(v) for v in r['H'])} | {r['sys'][-1] * 1e3:.0f} | "
                     f"{' / '.join(f'{v:.0f}' for v in r['mem'])} | {r['mem'][-1] * 2**20 / sizes[-1] ** 2:.0f} | "
                     f"{fit_slope(sizes, r['H']):.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable timings on a loaded machine; slopes do not depend on it)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print("operators...", file=sys.stderr, flush=True)
    op_rows = operator_rows(args.sizes, args.repeats)
    print("solver steps...", file=sys.stderr, flush=True)
    s_rows = solver_rows(args.sizes, args.repeats)
    text = table(args.sizes, op_rows, s_rows)
    text += (f"\n\nTotal benchmark time {time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU "
             f"(sizes {args.sizes}, {args.repeats} repeats).\n")
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("# Scaling with image size (benchmarks/scaling.py)\n\n" + text)


if __name__ == "__main__":
    main()
