"""Per-step cost of C-ΠGDM / C-ΠGFM vs stock Euler on the tiny checkpoints, in-process ComfyUI (--cpu).

For each tiny model (SD1.5 and SDXL checkpoints with their full AutoencoderKL; SD3 / Flux UNets
with their TAESD VAEs) and each size, one process measures: stock Euler, and our sampler for every
vjp mode × bridge mode (consistent_target with autograd only: its steps are the surrogate's, its
one-time target refinement shows in the setup column; pixel_bridge with autograd by default).
Conditioning is synthetic zeros of each family's width, cfg = 1 (one model call per evaluation).

Wall time per step: the median interval between successive sampler callbacks (one per step) of a
`steps`-step run after a 1-step warm-up, so one-time costs (encoding the measurement E(H⁺y),
sigmas, first-call conversions) are excluded and reported separately as "setup".
Peak memory per step: Linux peak RSS (VmHWM), reset through /proc/self/clear_refs at the first
callback and read at the last, minus the RSS at the first callback: the extra memory a step needs
on top of what the run holds between steps (CPU torch allocations included). Ratios are against
stock Euler at the same size. Rows the solver refuses up front (memory estimate) are listed.

Then the analytic pixel-bridge vs latent-surrogate comparison (benchmarks/latent_analytic.py).
Output: benchmarks/results/comfy_overhead.md.

    python benchmarks/comfy_overhead.py --models /path/to/models [--runs sd15:512 sdxl:512 ...] [--steps 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def import_comfy(root: str, extra_args=()):
    sys.path.insert(0, root)
    sys.argv = [sys.argv[0], "--cpu", *extra_args]
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


def measure_call(fn):
    """(fn's result, peak extra RSS MiB during the call, CPU seconds), freed buffers returned first."""
    _release_free_memory()
    start = rss_kb()
    reset_peak()
    t0 = time.process_time()
    out = fn()
    return out, (hwm_kb() - start) / 1024, time.process_time() - t0


def load(models_dir: Path, family: str):
    import comfy.sd
    import nodes as comfy_nodes
    import folder_paths

    folder_paths.add_model_folder_path("vae_approx", str(models_dir / "vae_approx"))
    if family in ("sd15", "sdxl"):
        path = models_dir / "checkpoints" / f"tiny_{family}.safetensors"
        model, _, vae = comfy.sd.load_checkpoint_guess_config(str(path), output_clip=False)[:3]
        return model, vae
    unet = {"sd3": "tiny_sd3_unet.safetensors", "flux": "tiny_flux_dev_unet_fp8.safetensors"}[family]
    model = comfy.sd.load_diffusion_model(str(models_dir / "diffusion_models" / unet))
    vae = comfy_nodes.VAELoader().load_vae({"sd3": "taesd3", "flux": "taef1"}[family])[0]
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
    """(seconds per step, setup seconds, peak extra MiB per step) from a `steps`-step run."""
    run(1, None)  # warm-up: loads, weight conversion (make_differentiable), operator caches
    _release_free_memory()
    marks = []  # (time, RSS kB, peak RSS kB) at each step's callback

    def callback(step, *_):
        marks.append((time.perf_counter(), rss_kb(), hwm_kb()))
        if len(marks) == 1:
            reset_peak()

    t0 = time.perf_counter()
    run(steps, callback)
    if len(marks) < 2:
        raise RuntimeError(f"expected {steps} callbacks, got {len(marks)}")
    intervals = sorted(b[0] - a[0] for a, b in zip(marks, marks[1:]))
    per_step = intervals[len(intervals) // 2]
    setup = max(marks[0][0] - t0 - per_step, 0.0)
    peak = max(marks[-1][2] - marks[0][1], 0)
    return per_step, setup, peak / 1024.0


def bench_model(models_dir, family, sizes, steps, modes, log, bridge_vjp=("autograd",),
                bridges=("latent_surrogate", "consistent_target", "pixel_bridge"), checkpoint=(True,)):
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

            def sample(sampler, n, callback):
                sig = cn.inverse_sigmas(model_sampling_of(model), n, 0.4)
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(cond, cond)
                guider.set_cfg(1.0)
                return guider.sample(torch.zeros_like(latent), latent, sampler, sig, disable_pbar=True, seed=0,
                                     callback=callback)

            configs = [("stock euler", "-", "-", lambda: comfy.samplers.sampler_object("euler"))]
            def make_ours(vjp, bridge, ckpt):
                sampler = cn.make_sampler(kind, meas, vae, 15.0 if kind == "vp" else 20.0, 0.0 if kind == "vp" else 0.2,
                                          vjp, bridge)
                sampler.extra_options["checkpoint"] = ckpt
                return sampler

            for vjp in modes:
                for bridge in bridges:
                    if bridge == "pixel_bridge" and vjp not in bridge_vjp:
                        continue  # vjp none: identical computation to latent_surrogate (no residual is used)
                    if bridge == "consistent_target" and vjp != "autograd":
                        continue  # its steps are latent_surrogate's; only the one-time setup differs
                    for ckpt in (checkpoint if vjp == "autograd" else (True,)):
                        label = vjp if vjp != "autograd" else ("autograd+ckpt" if ckpt else "autograd (no ckpt)")
                        configs.append(("C-ΠGDM" if kind == "vp" else "C-ΠGFM", label, bridge,
                                        lambda vjp=vjp, bridge=bridge, ckpt=ckpt: make_ours(vjp, bridge, ckpt)))
            euler = None
            for name, vjp, bridge, make in configs:
                try:
                    sec, fixed, mib = measure(lambda n, cb, make=make: sample(make(), n, cb), steps)
                except Exception as err:  # report (refusals included), keep going
                    message = " ".join(str(err).split())[:300]
                    rows.append({"model": family, "size": size, "sampler": name, "vjp": vjp, "bridge": bridge,
                                 "failed": f"{type(err).__name__}: {message}"})
                    log(f"{family} {size} {name} {vjp} {bridge}: {rows[-1]['failed']}")
                    _release_free_memory()
                    continue
                if euler is None:
                    euler = (sec, mib)
                row = {"model": family, "size": size, "sampler": name, "vjp": vjp, "bridge": bridge,
                       "s_per_step": sec, "fixed_s": fixed, "peak_mib": mib, "time_ratio": sec / euler[0],
                       "mem_ratio": mib / euler[1] if euler[1] > 0 else float("nan")}
                rows.append(row)
                log(f"{family} {size} {name} {vjp} {bridge}: {sec:.3f} s/step (setup {fixed:.2f} s), peak +{mib:.0f} MiB "
                    f"(×{row['time_ratio']:.2f} time, ×{row['mem_ratio']:.2f} memory vs Euler)")
        del model, vae
    return rows


def overhead_table(rows):
    lines = ["| model | size | sampler | vjp | bridge | s/step | setup s | peak +MiB/step | time × Euler | memory × Euler |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" not in r:
            lines.append(f"| {r['model']} | {r['size']}² | {r['sampler']} | {r['vjp']} | {r['bridge']} | {r['s_per_step']:.3f} "
                         f"| {r['fixed_s']:.2f} | {r['peak_mib']:.0f} | {r['time_ratio']:.2f} | {r['mem_ratio']:.2f} |")
    failed = [f"- {r['model']} {r['size']}² {r['sampler']} {r['vjp']} {r['bridge']}: {r['failed']}"
              for r in rows if "failed" in r]
    if failed:
        lines += ["", "Not run (refused up front or failed):", ""] + failed
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True, help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--runs", nargs="+", default=["sd15:512", "sdxl:512", "sd3:512", "flux:512", "sd15:1024:surrogate",
                                                      "sd3:1024:surrogate", "flux:1024:surrogate"],
                        help="family:size[:surrogate] in order; ':surrogate' runs the latent surrogate only (no VAE in "
                             "the loop: the slow bridge modes at 1024² take minutes per step on CPU)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--attention", choices=["default", "pytorch"], default="default",
                        help="ComfyUI's attention on CPU: default = sub-quadratic chunks (autograd keeps every chunk); "
                             "pytorch = SDPA (--use-pytorch-cross-attention, what NVIDIA GPUs get by default)")
    parser.add_argument("--vjp", nargs="+", default=["autograd", "finite_difference", "none"])
    parser.add_argument("--bridge-vjp", nargs="+", default=["autograd"],
                        help="vjp modes to combine with pixel_bridge (it is slow on CPU)")
    parser.add_argument("--checkpoint", choices=["on", "off", "both"], default="on",
                        help="autograd rows with the model's blocks checkpointed during the VJP (the solver's "
                             "default), without (the old behaviour), or both side by side")
    parser.add_argument("--skip-memory-check", action="store_true",
                        help="do not refuse rows by the up-front memory estimate (a shared machine's free RAM varies)")
    parser.add_argument("--skip-analytic", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results" / "comfy_overhead.md"))
    args = parser.parse_args(argv)
    import_comfy(args.comfy, ["--use-pytorch-cross-attention"] if args.attention == "pytorch" else [])
    import torch

    if args.skip_memory_check:
        from comfyui_inverse.nodes import conjugate_nodes

        conjugate_nodes.check_solver_memory = lambda *a, **k: None
    torch.manual_seed(0)
    out_lines = []

    def log(msg):
        print(msg, flush=True)

    global _LIBC
    _LIBC = _libc()
    rows = []
    t_all = time.perf_counter()
    for run in args.runs:
        family, size, *only = run.split(":")
        bridges = ("latent_surrogate",) if only == ["surrogate"] else ("latent_surrogate", "consistent_target", "pixel_bridge")
        ckpt = {"on": (True,), "off": (False,), "both": (False, True)}[args.checkpoint]
        rows += bench_model(Path(args.models), family, [int(size)], args.steps, args.vjp, log, args.bridge_vjp, bridges,
                            ckpt)
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
        f"s/step = median interval between the sampler's per-step callbacks in a {args.steps}-step run after a "
        f"1-step warm-up (setup = time before the first step minus one step: the measurement encode E(H⁺y) etc.); "
        f"SR×4 bicubic measurement; cfg 1; sigmas from InverseSigmas (start 0.4). Peak memory per step = Linux "
        f"VmHWM reset via /proc/self/clear_refs at the first callback and read at the last, minus the RSS at the "
        f"first callback (includes torch's CPU allocations). SD1.5/SDXL use their full AutoencoderKL; SD3/Flux "
        f"TAESD VAEs (random weights everywhere). Attention: {args.attention} ('default' on CPU = ComfyUI's "
        f"sub-quadratic chunks; 'pytorch' = SDPA, the NVIDIA default). Load average at start: {os.getloadavg()[0]:.1f}. "
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
