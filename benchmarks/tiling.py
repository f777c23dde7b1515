"""Tiled mode: exactness, seams, memory vs image size, consistency (benchmarks/results/tiling.md).

1. Exactness (pure torch): the local denoiser of tests/unit/test_tiling.py (Gaussian conv of radius 3,
   tanh), tiled with overlap 12 (context margin 3) — relative error of the output, of the VJP, and of
   every C-ΠGDM / C-ΠGFM step against the untiled run.
2. Seams: the unit test's measure (jump = step minus its neighbours' mean) at tile borders, in the
   blend zones and with abutting tiles, on a cubic image with a denoiser whose tiles disagree.
3. Memory vs image size at a fixed tile size, in-process ComfyUI on the tiny SD3 (TAESD; SDPA
   attention): peak extra memory of a C-ΠGFM autograd step (checkpointed blocks), tiled (256² px
   tiles, overlap 64 px) and untiled, at several sizes; the slope of a least-squares line against
   pixel count.
4. Consistency ‖Hx − y‖/‖y‖ of the decoded result (SR×4 bicubic) tiled vs untiled where both fit,
   and a tiled img2img baseline in the spirit of Ultimate SD Upscale / tiled-diffusion packs:
   stock Euler from the same start (encoded bicubic-pseudo-inverse + noise at the same σ0) with the
   same tiled denoiser and no measurement guidance.

    python benchmarks/tiling.py --models /path/to/models [--sizes 512 768 1024] [--threads 1] [--skip-comfy]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ pure torch parts

def exactness_rows():
    import torch

    from comfyui_inverse.operators import Inpainting, SuperResolution
    from comfyui_inverse.samplers import (AutogradVJP, OperatorProblem, TiledDenoiser, cpgdm, cpgfm,
                                          flow_sigmas_uniform_t, vp_sigmas_uniform_t)
    from comfyui_inverse.tests.unit.test_tiling import local_denoiser

    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    g = torch.Generator().manual_seed(0)
    rows = []
    for size, tile, overlap, batch in [((40, 52), 16, 12, 1), ((37, 53), 20, 13, 3), ((64, 64), 24, 12, 4)]:
        x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
        sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
        td = TiledDenoiser(local_denoiser, tile, overlap, max_batch=batch)
        cot = lambda x0: torch.sin(3 * x0) + 0.1  # noqa: E731
        x0r, _, jr = AutogradVJP()(local_denoiser, x, sigma, cot)
        x0t, _, jt = AutogradVJP()(td, x, sigma, cot)
        rows.append((f"denoiser {size[0]}×{size[1]}, tile {tile}, overlap {overlap} ({td.num_tiles(*size)} tiles, "
                     f"{batch}/call)", rel(x0t, x0r), rel(jt, jr)))
    for name, shape, op, sampler, sig, kw in [
        ("C-ΠGDM SR×4", (1, 3, 40, 52), SuperResolution(4, "bicubic"), cpgdm,
         vp_sigmas_uniform_t(5, t_start=0.4, dtype=torch.float64), {"w": 15.0}),
        ("C-ΠGDM inpainting (odd 37×53)", (1, 3, 37, 53), None, cpgdm,
         vp_sigmas_uniform_t(5, t_start=0.4, dtype=torch.float64), {"w": 15.0}),
        ("C-ΠGFM SR×4", (1, 3, 40, 52), SuperResolution(4, "bicubic"), cpgfm,
         flow_sigmas_uniform_t(6, t_start=0.4, dtype=torch.float64), {"w": 20.0}),
    ]:
        if op is None:
            mask = torch.zeros(shape[-2:])
            mask[5:30, 10:31] = 1.0
            op = Inpainting(mask)
        truth = torch.tanh(torch.randn(shape, generator=g, dtype=torch.float64))
        problem = OperatorProblem(op, op.forward(truth))
        x = problem.pinv_y + float(sig[0]) * torch.randn(shape, generator=g, dtype=torch.float64)
        td = TiledDenoiser(local_denoiser, 20, 12, max_batch=2)
        states = {}
        for key, den in (("ref", local_denoiser), ("tiled", td)):
            states[key] = []
            sampler(den, problem, sig, x, vjp="autograd", callback=lambda i, xx, x0, k=key: states[k].append(xx), **kw)
        worst = max(rel(a, b) for a, b in zip(states["tiled"], states["ref"]))
        rows.append((f"{name}: every step's state, {td.num_tiles(*shape[-2:])} tiles", worst, None))
    return rows


def seam_rows():
    import torch

    from comfyui_inverse.samplers import TiledDenoiser
    from comfyui_inverse.tests.unit.test_tiling import nonlocal_denoiser, seam_jumps

    h, w = 24, 96
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64),
                            indexing="ij")
    img = (4 * xx ** 3 - xx + torch.sin(2 * math.pi * yy))[None, None].expand(1, 3, h, w).contiguous()
    sigma = torch.tensor([0.5], dtype=torch.float64)
    rows = []
    for overlap in (0, 8, 12, 16):
        td = TiledDenoiser(nonlocal_denoiser, (24, 32), overlap)
        tiles, _ = td.plan(h, w, "cpu", torch.float64)
        rows.append((overlap, len(tiles)) + seam_jumps(td(img, sigma), tiles, w))
    return rows


# --------------------------------------------------------------------------------- ComfyUI parts

def comfy_rows(models_dir: Path, sizes, tile: int, overlap: int, steps: int, log):
    import torch

    import comfy.samplers
    from comfyui_inverse import operators as ops
    from comfyui_inverse.benchmarks.comfy_overhead import conds, load, measure
    from comfyui_inverse.nodes import conjugate_nodes as cn
    from comfyui_inverse.nodes.comfy_bridge import model_sampling_of
    from comfyui_inverse.nodes.tiling import TiledVaeBridge, decode_output, latent_tiles
    from comfyui_inverse.nodes.types import Measurement

    from comfyui_inverse.benchmarks import comfy_overhead

    from comfyui_inverse.nodes import tiling as node_tiling

    comfy_overhead._LIBC = comfy_overhead._libc()  # freed buffers return to the OS, so RSS peaks are per step
    node_tiling.MAX_TILE_BATCH = 1  # one tile per call: memory at a fixed tile size (a GPU would batch what fits)
    family = "sd3"
    memory, consistency = [], []
    with torch.inference_mode():
        model, vae = load(models_dir, family)
        cond = conds(family, torch)
        channels = model.model.latent_format.latent_channels
        for size in sizes:
            img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            op = ops.SuperResolution(4, kernel="bicubic")
            meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, size, size))
            latent = torch.zeros(1, channels, size // 8, size // 8)
            sig_of = lambda n: cn.inverse_sigmas(model_sampling_of(model), n, 0.4)  # noqa: E731

            def sample(sampler, n, callback, sigmas=None):
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(cond, cond)
                guider.set_cfg(1.0)
                return guider.sample(torch.zeros_like(latent), latent, sampler, sig_of(n) if sigmas is None else sigmas,
                                     disable_pbar=True, seed=0, callback=callback)

            for t in (0, tile):
                if t >= size:
                    continue
                make = lambda t=t: cn.make_sampler("flow", meas, vae, 20.0, 0.2, "autograd", "latent_surrogate",  # noqa: E731
                                                   tile_size=t, tile_overlap=overlap)
                sec, _, mib = measure(lambda n, cb: sample(make(), n, cb), steps)
                memory.append({"size": size, "tile": t, "s_per_step": sec, "peak_mib": mib})
                log(f"memory {size}² tile {t or 'off'}: {sec:.2f} s/step, peak +{mib:.0f} MiB")
        # consistency where both fit quickly: 384² (2×2 tiles of 256²), 5 steps
        size = 384
        img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        op = ops.SuperResolution(4, kernel="bicubic")
        meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, size, size))
        latent = torch.zeros(1, channels, size // 8, size // 8)
        tiles = latent_tiles(tile, overlap)
        for t, label in ((0, "C-ΠGFM untiled"), (tile, "C-ΠGFM tiled")):
            samples = sample(cn.make_sampler("flow", meas, vae, 20.0, 0.2, "autograd", "latent_surrogate",
                                             tile_size=t, tile_overlap=overlap), 5, None)
            x = decode_output(vae, samples, latent_tiles(t, overlap)).movedim(-1, 1)
            consistency.append({"size": size, "method": label, "err": _consistency(op, x, meas)})
            log(f"consistency {size}² {label}: {consistency[-1]['err']:.4f}")
        # tiled img2img baseline: E(H⁺y) + noise at σ0, stock Euler on the same tiled denoiser, no guidance
        bridge = TiledVaeBridge(vae, model.model.latent_format)
        start = bridge.encode(op.pinv(meas.to_signed()))
        noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(0))
        samples = _tiled_euler(model, cond, start, noise, sig_of(5), tiles)
        x = decode_output(vae, samples, tiles).movedim(-1, 1)
        consistency.append({"size": size, "method": "tiled img2img (stock Euler, no guidance)",
                            "err": _consistency(op, x, meas)})
        log(f"consistency {size}² img2img: {consistency[-1]['err']:.4f}")
    return memory, consistency


def _consistency(op, x01, meas) -> float:
    y = meas.y.float()
    return float((op.forward(x01.float()) - y).norm() / y.norm())


def _tiled_euler(model, cond, start, noise, sigmas, tiles):
    """Stock img2img on tiles: the guider noises E(H⁺y) to σ0 (flow: σ0·z + (1 − σ0)·start) and Euler
    (x ← x + (σ' − σ)(x − D)/σ) runs on the tiled CFG denoiser. Returns raw latents."""
    import torch

    import comfy.samplers
    from comfyui_inverse.nodes.tiling import tiled_denoiser

    def sampler_fn(model_wrap, x, sigmas_in, extra_args=None, callback=None, disable=None):
        den = tiled_denoiser(lambda xx, s: model_wrap(xx, s, **(extra_args or {})), model.model, x.shape, tiles,
                             False, x.device, "img2img baseline")
        for i in range(len(sigmas_in) - 1):
            s, s_next = sigmas_in[i], sigmas_in[i + 1]
            x = x + (s_next - s) * (x - den(x, s * torch.ones(x.shape[0]))) / s
        return x

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(cond, cond)
    guider.set_cfg(1.0)
    raw_start = model.model.latent_format.process_out(start)
    return guider.sample(noise, raw_start, comfy.samplers.KSAMPLER(sampler_fn), sigmas, disable_pbar=True, seed=0)


# Real model sizes (diffusion model parameters; fp16/bf16 = 2 bytes, fp8 = 1) and ComfyUI 0.3.75's
# memory_usage_factor (comfy/supported_models.py), which its per-call estimate
# (BaseModel.memory_required, flash-attention branch: batch·h·w · dtype bytes · 0.01 · factor MiB) uses.
REAL_MODELS = {"SD1.5": (0.86e9, 1.0, 4, 2), "SDXL": (2.57e9, 0.8, 4, 2), "Flux-dev": (11.9e9, 3.1, 16, 1)}
VAE_PARAMS = 84e6


def vram_estimate(family: str, out_side: int, tile: int, step_ratio: float, weight_bytes: int = 2) -> dict:
    """GB needed on a GPU for a tiled C-ΠGDM/C-ΠGFM run producing out_side² pixels with tile² tiles.

    weights + max(one tile's step = step_ratio × ComfyUI's inference estimate for the tile, one 512²
    VAE tile = half ComfyUI's AutoencoderKL estimate, as nodes/limits.py) + the solver's buffers
    (8 float32 image-sized + 12 float64 latent-sized tensors). step_ratio comes from the tiny models
    (autograd step / Euler step, blocks checkpointed): activations are assumed to scale like ComfyUI's
    own per-call estimate, i.e. the ratio transfers from the tiny models to the real ones.
    """
    params, factor, channels, cfg_batch = REAL_MODELS[family]
    lat = tile // 8
    step = step_ratio * cfg_batch * lat * lat * 2 * 0.01 * factor * 2**20
    vae_tile = 0.5 * 2178 * 64 * 64 * 64 * 2
    buffers = 8 * 3 * out_side ** 2 * 4 + 12 * channels * (out_side // 8) ** 2 * 8
    weights = params * weight_bytes + VAE_PARAMS * 2
    untiled_step = step_ratio * cfg_batch * (out_side // 8) ** 2 * 2 * 0.01 * factor * 2**20
    gb = lambda b: b / 2**30  # noqa: E731
    return {"weights": gb(weights), "step": gb(step), "vae": gb(vae_tile), "buffers": gb(buffers),
            "total": gb(weights + max(step, vae_tile) + buffers),
            "untiled": gb(weights + max(untiled_step, 0.5 * 2178 * (out_side // 8) ** 2 * 64 * 2) + buffers)}


def slope(rows, tile):
    """MiB per megapixel of a least-squares line through (pixels, peak) for one tile setting."""
    pts = [(r["size"] ** 2 / 1e6, r["peak_mib"]) for r in rows if r["tile"] == tile]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p for p, _ in pts) / len(pts)
    my = sum(m for _, m in pts) / len(pts)
    return sum((p - mx) * (m - my) for p, m in pts) / sum((p - mx) ** 2 for p, _ in pts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 768, 1024])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared, oversubscribed CPU every multi-threaded op "
                             "waits for a descheduled partner thread, so time follows the number of ops, not the "
                             "work — results/tiling.md §4)")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--skip-comfy", action="store_true")
    parser.add_argument("--ratio-sdxl", type=float, default=2.22,
                        help="autograd/Euler step memory of the tiny SDXL with checkpointing (comfy_overhead.py; "
                             "the larger of 512² and 1024²)")
    parser.add_argument("--ratio-sd15", type=float, default=1.78, help="the same for the tiny SD1.5")
    parser.add_argument("--ratio-flux", type=float, default=5.6,
                        help="autograd/forward memory projected for a full-depth Flux-dev (results/tiling.md §3)")
    parser.add_argument("--out", default=str(HERE / "results" / "tiling_raw.md"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    lines = ["## Exactness (local denoiser: conv radius 3 + tanh; overlap 12 → context margin 3)", "",
             "| case | rel. error x̂0 / state | rel. error VJP |", "|---|---|---|"]
    for name, a, b in exactness_rows():
        lines.append(f"| {name} | {a:.1e} | {'-' if b is None else f'{b:.1e}'} |")
    lines += ["", "## Seams (cubic image, tiles disagree by half their own mean)", "",
              "| overlap | tiles | max jump at tile borders | interior 99th pct | max jump in blend zones |",
              "|---|---|---|---|---|"]
    for overlap, n, border, interior, blend in seam_rows():
        lines.append(f"| {overlap} | {n} | {border:.2e} | {interior:.2e} | {blend:.2e} |")
    print("\n".join(lines), flush=True)
    if not args.skip_comfy:
        import sys

        from comfyui_inverse.benchmarks.comfy_overhead import import_comfy

        import_comfy(args.comfy, ["--use-pytorch-cross-attention"])
        import torch

        torch.set_num_threads(args.threads)
        memory, consistency = comfy_rows(Path(args.models), args.sizes, args.tile, args.overlap, args.steps,
                                         lambda m: print(m, flush=True))
        lines += ["", f"## Memory vs image size (tiny SD3, C-ΠGFM autograd + checkpointed blocks, tile {args.tile} px, "
                      f"overlap {args.overlap} px, SDPA)", "",
                  "| size | tiling | s/step | peak +MiB/step |", "|---|---|---|---|"]
        for r in memory:
            lines.append(f"| {r['size']}² | {r['tile'] or 'off'} | {r['s_per_step']:.2f} | {r['peak_mib']:.0f} |")
        lines += ["", f"Slope (least squares, MiB per megapixel): untiled {slope(memory, 0):.0f}, tiled "
                      f"{slope(memory, args.tile):.0f}.", "",
                  "## Consistency ‖Hx − y‖/‖y‖ (SR×4 bicubic, decoded output, 5 steps, 256² tiles)", "",
                  "| size | method | ‖Hx − y‖/‖y‖ |", "|---|---|---|"]
        for r in consistency:
            lines.append(f"| {r['size']}² | {r['method']} | {r['err']:.4f} |")
        del sys
    lines += ["", "## VRAM estimates (GPU, fp16 weights unless noted; see vram_estimate)", "",
              "| run | tile | weights GB | tile step GB | VAE tile GB | buffers GB | total GB | untiled GB |",
              "|---|---|---|---|---|---|---|---|"]
    for label, family, side, tile, ratio, wbytes in [
            ("SDXL 1024² → 4096² (SR×4)", "SDXL", 4096, 1024, args.ratio_sdxl, 2),
            ("SD1.5 1024² → 2048² (SR×2)", "SD1.5", 2048, 512, args.ratio_sd15, 2),
            ("Flux-dev at 2048² (bf16), autograd", "Flux-dev", 2048, 1024, args.ratio_flux, 2),
            ("Flux-dev at 2048² (fp8 weights), autograd", "Flux-dev", 2048, 1024, args.ratio_flux, 1),
            ("Flux-dev at 2048² (bf16), vjp finite_difference", "Flux-dev", 2048, 1024, 1.0, 2),
            ("Flux-dev at 2048² (fp8 weights), vjp finite_difference", "Flux-dev", 2048, 1024, 1.0, 1)]:
        e = vram_estimate(family, side, tile, ratio, wbytes)
        lines.append(f"| {label} | {tile}² | {e['weights']:.1f} | {e['step']:.2f} | {e['vae']:.2f} | {e['buffers']:.2f} "
                     f"| {e['total']:.1f} | {e['untiled']:.1f} |")
    lines += ["", f"Total {time.perf_counter() - t0:.0f} s; {args.threads} torch thread(s); load average at end "
                  f"{os.getloadavg()[0]:.1f}."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-12:]))


if __name__ == "__main__":
    main()
