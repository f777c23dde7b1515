"""Cost per step of TReg (plain / DC / AN / DPS steps) vs a stock Euler step, in-process ComfyUI (--cpu).

Model: the tiny random SD1.5 checkpoint of tests/host/tiny_models.py (1-level UNet, but the real
full-size AutoencoderKL and CLIP-L) and its full-size CLIP ViT-L/14 vision model, fp32 (as the test
server: --fp32-text-enc). Measurement: ×4 bicubic super-resolution of a photo, batch 1, cfg 5.

Rows (all through TReg Guider + SamplerTReg + guider.sample, as the nodes run them):
- stock Euler: CFGGuider + KSAMPLER "euler";
- TReg plain step: DC off (dc_until 0), AN off: DDIM with CFG;
- TReg DC step: DC on every step (dc_every 1, dc_until 1), AN off: decode → 5 CG → encode → re-noise;
- TReg DC+AN step: as above with AN (10 Adam steps + one CLIP ViT-L forward);
- TReg DPS step: DC off, use_dps: backprop through the VAE decoder and the UNet.
Time per step = (T(n) − T(1)) / (n − 1) after a warm-up run, so per-run costs cancel; CPU time
(process_time) and wall time. Peak
memory = Linux peak RSS (VmHWM, reset via /proc/self/clear_refs) minus the RSS before the run
(after gc + malloc_trim): the extra memory one run needs on top of the loaded models.
The whole-schedule cost combines the per-step times with the DC schedule (dc_schedule).

    python benchmarks/treg_cost.py [--models DIR] [--size 64] [--steps 4]
Output: benchmarks/results/treg_cost.md (and stdout).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def import_comfy(root: Path):
    sys.path.insert(0, str(root))
    sys.argv = [sys.argv[0], "--cpu", "--fp32-text-enc"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.cli_args  # noqa: F401


def proc_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc), so RSS before a run is its live baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def build_models(models_dir: Path, comfy_root: Path) -> None:
    wanted = [models_dir / "checkpoints/tiny_sd15.safetensors", models_dir / "clip_vision/tiny_clip_vision_vit_l.safetensors"]
    if all(p.exists() for p in wanted):
        return
    subprocess.run([sys.executable, str(REPO / "tests/host/tiny_models.py"), "build", "--comfy", str(comfy_root),
                    "--models", str(models_dir), "--only", "sd15_ckpt,clip_vision"], check=True,
                   stdout=subprocess.DEVNULL)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="a models/ dir with the tiny SD1.5 checkpoint + CLIP vision (built if missing)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 32)")
    parser.add_argument("--steps", type=int, default=4, help="steps of the timed runs (>= 2)")
    parser.add_argument("--out", default=str(HERE / "results" / "treg_cost.md"))
    args = parser.parse_args(argv)

    from comfyui_inverse.runner import find_comfy_root

    comfy_root = find_comfy_root()
    models_dir = Path(args.models) if args.models else Path(tempfile.gettempdir()) / "comfyui_inverse_bench_models"
    build_models(models_dir, comfy_root)
    import_comfy(comfy_root)

    import numpy as np
    import torch
    import comfy.clip_vision
    import comfy.model_management
    import comfy.samplers
    import comfy.sd
    from skimage import data
    from skimage.transform import resize

    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes.treg_guider import build_treg_guider
    from comfyui_inverse.nodes.treg_sampler import make_treg_sampler, run_guided
    from comfyui_inverse.nodes.types import Measurement
    from comfyui_inverse.samplers.treg import PAPER_DEFAULTS, dc_schedule

    load_avg = os.getloadavg()
    torch.manual_seed(0)
    with torch.inference_mode():
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(str(models_dir / "checkpoints/tiny_sd15.safetensors"))[:3]
        clip_vision = comfy.clip_vision.load(str(models_dir / "clip_vision/tiny_clip_vision_vit_l.safetensors"))
        positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of an astronaut"))
        negative = clip.encode_from_tokens_scheduled(clip.tokenize(PAPER_DEFAULTS["null_prompt"]))
        size = args.size
        photo = resize(data.astronaut(), (size, size), anti_aliasing=True).astype(np.float32)
        x = torch.from_numpy(photo).permute(2, 0, 1)[None]
        operator = ops.SuperResolution(4)
        y = operator.measure(x, sigma_y=0.005, generator=torch.Generator().manual_seed(0))
        measurement = Measurement(y=y, operator=operator, sigma_y=0.005, image_shape=tuple(x.shape))
        ms = model.get_model_object("model_sampling")
        latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}

        def stock_euler():
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(positive, negative)
            guider.set_cfg(PAPER_DEFAULTS["cfg"])
            return guider, comfy.samplers.sampler_object("euler"), "normal"

        def treg(dc_every=1, dc_until=1.0, an=False, dps=False):
            def make():
                guider = build_treg_guider(model, positive, negative, PAPER_DEFAULTS["cfg"], clip_vision,
                                           PAPER_DEFAULTS["an_steps"] if an else 0, 1e-3, "adam")
                sampler = make_treg_sampler(measurement, vae, dc_every, dc_until, PAPER_DEFAULTS["cg_iters"],
                                            PAPER_DEFAULTS["lam"], dps)
                return guider, sampler, "ddim_uniform"
            return make

        rows = [("stock Euler step (CFG)", stock_euler), ("TReg plain step (DDIM + CFG)", treg(dc_until=0.0)),
                ("TReg DC step (decode, 5 CG, encode, re-noise)", treg()),
                ("TReg DC + AN step (+ CLIP ViT-L, 10 Adam)", treg(an=True)),
                ("TReg DPS step (VJP through VAE decoder + UNet)", treg(dc_until=0.0, dps=True))]

        def timed(make, steps):
            guider, sampler, scheduler = make()
            sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).cpu()
            gc.collect()
            release_free_memory()
            before = proc_kb("VmRSS")
            reset_peak()
            start, start_cpu = time.perf_counter(), time.process_time()
            run_guided(model, guider, sampler, sigmas, latent, seed=0)
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            return wall, cpu, max(0, proc_kb("VmHWM") - before)

        results = {}  # name -> (wall s/step, CPU s/step, peak MiB)
        for name, make in rows:
            timed(make, 1)  # warm-up: loads, caches
            w1, c1, _ = timed(make, 1)
            wn, cn, peak = timed(make, args.steps)
            results[name] = ((wn - w1) / (args.steps - 1), (cn - c1) / (args.steps - 1), peak / 1024.0)
            print(f"{name}: {results[name][0]:.3f} s/step wall, {results[name][1]:.3f} CPU s/step, "
                  f"peak +{results[name][2]:.0f} MiB", flush=True)

    # Ratios and schedule estimates use CPU seconds: on a shared machine wall time mostly measures the neighbours.
    euler = results["stock Euler step (CFG)"][1]
    plain = results["TReg plain step (DDIM + CFG)"][1]
    dc = results["TReg DC step (decode, 5 CG, encode, re-noise)"][1]
    dc_an = results["TReg DC + AN step (+ CLIP ViT-L, 10 Adam)"][1]

    def schedule_cost(steps):
        n_dc = sum(dc_schedule(steps, PAPER_DEFAULTS["dc_every"], PAPER_DEFAULTS["dc_until"]))
        return n_dc, n_dc * dc_an + (steps - n_dc) * plain

    lines = [
        "# TReg cost per step (tiny SD1.5, in-process ComfyUI, CPU)",
        "",
        f"`python benchmarks/treg_cost.py --size {args.size} --steps {args.steps}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"load average at start {load_avg[0]:.1f} (shared machine: absolute times are noisy, compare rows).",
        "",
        f"Image {args.size}×{args.size} (latent {args.size // 8}×{args.size // 8}), batch 1, cfg 5, ×4 SR measurement. "
        "UNet: the 1-level tiny SD1.5 UNet (13.6 M params, far cheaper than the real 860 M one); VAE (AutoencoderKL, "
        "83.7 M) and CLIP ViT-L/14 vision (304 M) are full size, fp32. So the DC/AN overheads below are real-size "
        "components next to a toy UNet: on a real SD1.5 the UNet dominates and the ratios shrink.",
        "",
        "Times: CPU seconds of this process per step (both threads; robust to other load) and wall seconds "
        "(noisy here). Ratios use CPU seconds. Peak: extra resident memory one run needs on top of the loaded models.",
        "",
        "| step | CPU s / step | wall s / step | × stock Euler (CPU) | peak RSS over the run's start (MiB) |",
        "|---|---|---|---|---|",
    ]
    for name, (wall, cpu, peak) in results.items():
        lines.append(f"| {name} | {cpu:.3f} | {wall:.3f} | {cpu / euler:.1f} | {peak:.0f} |")
    lines += ["", f"AN alone (DC+AN − DC): {dc_an - dc:.3f} CPU s per DC step.", "",
              "## Whole schedule (dc_every 3, dc_until 0.85), from the CPU s / step above", "",
              "| schedule | steps | DC+AN steps | est. CPU s | stock Euler, same steps (CPU s) | ratio |", "|---|---|---|---|---|---|"]
    for label, steps in (("paper", 200), ("TReg Solve default", 100), ("short", 50)):
        n_dc, cost = schedule_cost(steps)
        lines.append(f"| {label} | {steps} | {n_dc} | {cost:.1f} | {steps * euler:.1f} | {cost / (steps * euler):.1f} |")
    n_dc200, cost200 = schedule_cost(200)
    n_dc100, cost100 = schedule_cost(100)
    lines += ["", f"Our default (100 steps, {n_dc100} DC steps) costs {cost100 / cost200:.2f} of the paper's 200-step "
              f"schedule ({n_dc200} DC steps).", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
