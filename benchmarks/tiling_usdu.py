"""Tiled SR ×4 on the learned prior: our tiled C-ΠGDM against a tiled img2img baseline in the spirit of
Ultimate SD Upscale (benchmarks/results/tiling.md §7), through a real ComfyUI server.

The prior of prior/ is loaded with the stock loaders exactly as benchmarks/quality.py does (the eps UNet +
VAE assembled into one checkpoint). N held-out images of prior/split.json (test side), SIZE² centre
crops, are degraded by the pack's SR ×4 operator + Degrade Image (σ_y = 0), the same y for every row.
Rows (one prompt each, the images as one batch):

  bicubic        stock ImageScale of y
  USDU-style     bicubic upscale → for each tile, in raster order on the image updated so far (as Ultimate
                 SD Upscale does): stock ImageCrop → VAEEncode → KSampler (euler, denoise 0.3, cfg 1, --steps) →
                 VAEDecode → ImageCompositeMasked with a FeatherMask over the overlap on inner edges; the
                 same tile size, overlap and tile positions as the solver (samplers/tiling.tile_starts)
  C-ΠGDM tiled   Inverse Solve, preset auto, tile_size / tile_overlap as above (node defaults otherwise)
  + Enforce      the pack's Enforce Measurement node on that output
  C-ΠGDM untiled the same solve without tiles (reference; the prior was trained on 128² crops)

Metrics: the pack's PSNR and Measurement Consistency ‖Hx−y‖/‖y‖ nodes, mean over the images.

    python benchmarks/tiling_usdu.py [--images 3] [--size 256] [--tile 128] [--overlap 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from comfyui_inverse.benchmarks.quality import (LOADERS, execution_seconds, heldout_crops, image_batch, ksampler,
                                                metric, node, prepare_models, run_prompt)
from comfyui_inverse.samplers.tiling import tile_starts

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def usdu_tiles(size: int, tile: int, overlap: int, denoise: float, steps: int, seed: int) -> tuple[dict, list]:
    """Tiled img2img on the bicubic upscale ("up"): tile by tile on the image updated so far."""
    nodes, current = {}, ["up", 0]
    starts = tile_starts(size, tile, overlap)
    feather = overlap // 2  # the blend ramp spans half the overlap on each inner edge
    for r, top in enumerate(starts):
        for c, left in enumerate(starts):
            k = f"{r}_{c}"
            nodes[f"crop{k}"] = node("ImageCrop", image=current, width=tile, height=tile, x=left, y=top)
            nodes[f"enc{k}"] = node("VAEEncode", pixels=[f"crop{k}", 0], vae=["ckpt", 2])
            nodes[f"ks{k}"] = ksampler(["ckpt", 0], [f"enc{k}", 0], steps, denoise, seed)
            nodes[f"dec{k}"] = node("VAEDecode", samples=[f"ks{k}", 0], vae=["ckpt", 2])
            nodes[f"solid{k}"] = node("SolidMask", value=1.0, width=tile, height=tile)
            nodes[f"mask{k}"] = node("FeatherMask", mask=[f"solid{k}", 0],
                                     left=feather if left > 0 else 0, top=feather if top > 0 else 0,
                                     right=feather if left + tile < size else 0,
                                     bottom=feather if top + tile < size else 0)
            nodes[f"comp{k}"] = node("ImageCompositeMasked", destination=current, source=[f"dec{k}", 0], x=left,
                                     y=top, resize_source=False, mask=[f"mask{k}", 0])
            current = [f"comp{k}", 0]
    return nodes, current


def rows_for(args) -> list[tuple[str, callable]]:
    def bicubic():
        return {}, ["up", 0]

    def usdu():
        return usdu_tiles(args.size, args.tile, args.overlap, args.denoise, args.steps, args.seed)

    def solve(tiled: bool, enforce: bool = False):
        def build():
            nodes = {"solve": node("InverseSolveConjugate", model=["ckpt", 0], vae=["ckpt", 2], positive=["pos", 0],
                                   negative=["neg", 0], measurement=["meas", 0], preset="auto", steps=10,
                                   cfg=1.0, w=15.0, lam=0.0, start=0.4, seed=args.seed,  # preset auto sets these
                                   tile_size=args.tile if tiled else 0, tile_overlap=args.overlap)}
            if not enforce:
                return nodes, ["solve", 0]
            nodes["enforce"] = node("InverseEnforceMeasurement", image=["solve", 0], measurement=["meas", 0])
            return nodes, ["enforce", 0]
        return build

    return [("bicubic (ImageScale)", bicubic),
            (f"USDU-style tiled img2img, denoise {args.denoise:g}, {args.steps} steps", usdu),
            ("C-ΠGDM tiled, preset auto", solve(True)),
            ("C-ΠGDM tiled + Enforce Measurement", solve(True, True)),
            ("C-ΠGDM untiled, preset auto (reference)", solve(False))]


def prompt_for(names: list[str], build, size: int, factor: int = 4) -> dict:
    prompt = dict(LOADERS)
    prompt.update(image_batch(names))
    prompt["op"] = node("InverseSuperResolution", factor=factor, kernel="bicubic")
    prompt["meas"] = node("InverseDegradeImage", image=["gt", 0], operator=["op", 0], sigma_y=0.0, seed=1000)
    prompt["up"] = node("ImageScale", image=["meas", 1], upscale_method="bicubic", width=size, height=size,
                        crop="disabled")
    nodes, out = build()
    prompt.update(nodes)
    prompt["psnr"] = node("InversePSNR", image=out, reference=["gt", 0])
    prompt["cons"] = node("InverseMeasurementConsistency", image=out, measurement=["meas", 0])
    return prompt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12, help="image choice and sampler seed")
    parser.add_argument("--size", type=int, default=256, help="output side (y is size/factor)")
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    parser.add_argument("--tile", type=int, default=128, help="tile side in pixels (the prior's training crop)")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--denoise", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=6,
                        help="KSampler steps per tile of the baseline (ComfyUI runs all of them on the denoise-"
                             "truncated schedule; 6 ≈ what a 20-step img2img at denoise 0.3 runs elsewhere)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per row")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tiling_usdu_raw.md")
    args = parser.parse_args(argv)

    from comfyui_inverse.runner import ComfyServer, find_comfy_root
    from comfyui_inverse.tests.host.comfy_client import HostComfy

    comfy_root = find_comfy_root(None)
    crops, names, _ = heldout_crops(args.images, args.seed, args.size)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    lines = [f"Commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `python benchmarks/tiling_usdu.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    with tempfile.TemporaryDirectory(prefix="tiling-usdu-") as tmp:
        base = Path(tmp)
        info = prepare_models(base / "models", None, sys.executable, comfy_root)
        lines += [f"Prior: {info['eps']}; {info['vae']}. Images ({args.size}², SR ×{args.factor}: y {args.size // args.factor}²): {', '.join(names)}.",
                  "", "| method | PSNR dB | ‖Hx−y‖/‖y‖ | s/image |", "|---|---|---|---|"]
        server = ComfyServer(comfy_root=comfy_root, base_dir=base, cpu=True, quiet=True,
                             extra_args=["--fp32-text-enc"], log_path=base / "comfyui.log")
        server.start()
        comfy = HostComfy(server)
        try:
            uploaded = [comfy.upload_image(c, name=f"tiling_usdu_{i:02d}.png") for i, c in enumerate(crops)]
            for label, build in rows_for(args):
                try:
                    history = run_prompt(comfy, prompt_for(uploaded, build, args.size, args.factor), args.timeout)
                except Exception as err:  # the row reports its failure; the others still run
                    print(f"{label}: FAILED {err}", flush=True)
                    lines.append(f"| {label} | failed: {' '.join(str(err).split())[:160]} | | |")
                    continue
                row = (label, metric(history, "psnr"), metric(history, "cons"),
                       execution_seconds(history) / len(uploaded))
                print(f"{row[0]}: PSNR {row[1]:.2f} dB, ‖Hx−y‖/‖y‖ {row[2]:.4f}, {row[3]:.1f} s/image", flush=True)
                lines.append(f"| {row[0]} | {row[1]:.2f} | {row[2]:.4f} | {row[3]:.1f} |")
            log_text = (base / "comfyui.log").read_text(errors="replace")
            lines += ["", "Solver log: " + "; ".join(sorted({ln.split("comfyui-inverse: ")[-1].strip()
                                                            for ln in log_text.splitlines() if "tiled mode" in ln}))]
        finally:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
