"""Per-step cost of C-ΠGDM / C-ΠGFM vs stock Euler on the tiny checkpoints, in-process ComfyUI (--cpu).

For each tiny model (SD1.5 checkpoint with its full AutoencoderKL; SDXL / SD3 / Flux UNets with
their TAESD VAEs) and each size, one process measures: stock Euler, and our sampler for every
vjp mode × bridge mode. Conditioning is synthetic zeros of each family's width (no tiny CLIP-G
exists for SDXL), cfg = 1 (one model call per evaluation).

Wall time per step: (T(steps) − T(1)) / (steps − 1), after a 1-step warm-up run per row, so
fixed per-run costs (encoding the measurement, loading, sigmas) are reported separately.
Peak memory: Linux peak RSS (VmHWM) reset through /proc/self/clear_refs before each run,
minus the RSS just before it: the process-level extra memory a run needs (CPU torch allocations
included; tracemalloc would miss them). Ratios are against stock Euler at the same size.

Then the analytic pixel-bridge vs latent-surrogate comparison (benchmarks/latent_analytic.py).
Output: benchmarks/results/comfy_overhead.md.

    python benchmarks/comfy_overhead.py --models /path/to/models [--sizes 512 1024] [--steps 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def import_comfy(root: str):
    sys.path.insert(0, root)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401


def rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def hwm_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def load(models_dir: Path, family: str):
    import comfy.sd
    import nodes as comfy_nodes
    import folder_paths

    folder_paths.add_model_folder_path("vae_approx", str(models_dir / "vae_approx"))
    if family == "sd15":
        model, _, vae = comfy.sd.load_checkpoint_guess_config(str(models_dir / "checkpoints/tiny_sd15.safetensors"))[:3]
        return model, vae
    unet = {"sdxl": "tiny_sdxl_unet.safetensors", "sd3": "tiny_sd3_unet.safetensors",
            "flux": "tiny_flux_dev_unet_fp8.safetensors"}[family]
    model = comfy.sd.load_diffusion_model(str(models_dir / "diffusion_models" / unet))
    vae = comfy_nodes.VAELoader().load_vae({"sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1"}[family])[0]
    return model, vae


def conds(family: str, torch):
    width, tokens, extra = {"sd15": (768, 77, {}), "sdxl": (2048, 77, {"pooled_output": torch.zeros(1, 1280)}),
                            "sd3": (4096, 77, {"pooled_output": torch.zeros(1, 2048)}),
                            "flux": (4096, 256, {"pooled_output": torch.zeros(1, 2048), "guidance": 3.5})}[family]
    return [[torch.zeros(1, tokens, width), extra]]


def _release_free_memory():
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD fixed: big buffers are unmapped when freed
        return libc
    except OSError:
        return None


_LIBC = None


def measure(run, steps: int):
    """(seconds per step, fixed seconds per run, peak extra MiB of the `steps`-step run)."""
    run(1)  # warm-up: loads, weight conversion (make_differentiable), operator caches
    _release_free_memory()
    t0 = time.perf_counter()
    run(1)
    one = time.perf_counter() - t0
    _release_free_memory()
    base = rss_kb()
    reset_peak()
    t0 = time.perf_counter()
    run(steps)
    total = time.perf_counter() - t0
    peak = max(hwm_kb() - base, 0)
    per_step = (total - one) / (steps - 1) if steps > 1 else total
    return per_step, max(one - per_step, 0.0), peak / 1024.0


def bench_model(models_dir, family, sizes, steps, modes, log, bridge_vjp=("autograd", "finite_difference")):
    import torch
    import comfy.samplers
    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes import conjugate_nodes as cn
    from comfyui_inverse.nodes.comfy_bridge import model_kind, model_sampling_of
    from comfyui_inverse.nodes.types import Measurement

    rows = []
    with torch.inference_mode():
        model, vae = load(models_dir, family)
        kind = model_kind(model_sampling_of(model))
        cond = conds(family, torch)
        channels = model.model.latent_format.latent_channels
        for size in sizes:
            g = torch.Generator().manual_seed(0)
            img = torch.rand(1, 3, size, size, generator=g)
            op = ops.SuperResolution(4, kernel="bicubic")
            meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, size, size))
            latent = torch.zeros(1, channels, size // 8, size // 8)

            def sample(sampler, n):
                sig = cn.inverse_sigmas(model_sampling_of(model), n, 0.4)
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(cond, cond)
                guider.set_cfg(1.0)
                return guider.sample(torch.zeros_like(latent), latent, sampler, sig, disable_pbar=True, seed=0)

            configs = [("stock euler", "-", "-", lambda: comfy.samplers.sampler_object("euler"))]
            for vjp in modes:
                for bridge in ("latent_surrogate", "pixel_bridge"):
                    if bridge == "pixel_bridge" and vjp not in bridge_vjp:
                        continue  # vjp none: identical computation to latent_surrogate (no residual is used)
                    configs.append(("C-ΠGDM" if kind == "vp" else "C-ΠGFM", vjp, bridge,
                                    lambda vjp=vjp, bridge=bridge: cn.make_sampler(kind, meas, vae, 15.0 if kind == "vp" else 20.0,
                                                                                  0.0 if kind == "vp" else 0.2, vjp, bridge)))
            euler = None
            for name, vjp, bridge, make in configs:
                try:
                    sec, fixed, mib = measure(lambda n, make=make: sample(make(), n), steps)
                except Exception as err:  # report, keep going
                    log(f"{family} {size} {name} {vjp} {bridge}: FAILED {type(err).__name__}: {err}")
                    continue
                if euler is None:
                    euler = (sec, mib)
                row = {"model": family, "size": size, "sampler": name, "vjp": vjp, "bridge": bridge,
                       "s_per_step": sec, "fixed_s": fixed, "peak_mib": mib, "time_ratio": sec / euler[0],
                       "mem_ratio": mib / euler[1] if euler[1] > 0 else float("nan")}
                rows.append(row)
                log(f"{family} {size} {name} {vjp} {bridge}: {sec:.3f} s/step (+{fixed:.2f} s per run), peak +{mib:.0f} MiB "
                    f"(×{row['time_ratio']:.2f} time, ×{row['mem_ratio']:.2f} memory vs Euler)")
        del model, vae
    return rows


def overhead_table(rows):
    lines = ["| model | size | sampler | vjp | bridge | s/step | fixed s/run | peak +MiB | time × Euler | memory × Euler |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']}² | {r['sampler']} | {r['vjp']} | {r['bridge']} | {r['s_per_step']:.3f} "
                     f"| {r['fixed_s']:.2f} | {r['peak_mib']:.0f} | {r['time_ratio']:.2f} | {r['mem_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True, help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl", "sd3", "flux"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vjp", nargs="+", default=["autograd", "finite_difference", "none"])
    parser.add_argument("--bridge-vjp", nargs="+", default=["autograd", "finite_difference"],
                        help="vjp modes to combine with pixel_bridge (it is slow on CPU)")
    parser.add_argument("--skip-analytic", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "comfy_overhead.md"))
    args = parser.parse_args(argv)
    import_comfy(args.comfy)
    import torch

    torch.manual_seed(0)
    out_lines = []

    def log(msg):
        print(msg, flush=True)

    global _LIBC
    _LIBC = _libc()
    rows = []
    t_all = time.perf_counter()
    for size in args.sizes:
        for family in args.families:
            rows += bench_model(Path(args.models), family, [size], args.steps, args.vjp, log, args.bridge_vjp)
            write(args, rows, out_lines, time.perf_counter() - t_all, partial=True)
    if not args.skip_analytic:
        from comfyui_inverse.benchmarks import latent_analytic

        for family, sy in (("vp", 0.0), ("vp", 0.05), ("flow", 0.0)):
            out_lines.append(latent_analytic.table(latent_analytic.run(family=family, sigma_y=sy),
                                                   f"{family}, σ_y = {sy}"))
            log(out_lines[-1])
    write(args, rows, out_lines, time.perf_counter() - t_all, partial=False)


def write(args, rows, analytic, seconds, partial):
    import platform

    import torch

    text = [
        "# C-ΠGDM / C-ΠGFM overhead on tiny checkpoints (in-process ComfyUI, --cpu)",
        "",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads; "
        f"s/step = (T({args.steps} steps) − T(1 step))/{args.steps - 1} after a 1-step warm-up per row; SR×4 bicubic measurement; cfg 1; "
        f"sigmas from InverseSigmas (start 0.4). Peak memory = Linux VmHWM reset via /proc/self/clear_refs, "
        f"minus RSS before the run (process RSS delta, includes torch's CPU allocations). "
        f"SD1.5 uses its full AutoencoderKL; SDXL/SD3/Flux use TAESD VAEs (random weights everywhere). "
        f"Total {seconds:.0f} s{' (partial)' if partial else ''}.",
        "",
        overhead_table(rows),
    ]
    if analytic:
        text += ["", "## Analytic: pixel-bridge vs latent-surrogate (linear VAE, exact posterior)", "",
                 "Linear 'VAE' (overlapping ×8 conv-transpose decoder, encoder = its pseudo-inverse), 4×4×4 latent "
                 "Gaussian-mixture prior with the exact denoiser/VJP, 16 samples, 32×32 pixels. oracle_exact_P uses "
                 "the exact latent operator H·D. vjp 'autograd' rows use the prior's exact VJP.", ""]
        text += ["\n\n".join(analytic)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
