"""Tiled vs untiled C-ΠGFM step inside the sampler, per torch thread count (benchmarks/results/tiling.md §4).

In-process ComfyUI on the tiny SD3 (TAESD): the pack's sampler (make_sampler, autograd VJP with the
blocks checkpointed) through a stock CFGGuider, SR ×4, one tile per model call (as benchmarks/tiling.py
measures memory). Prints wall and process-CPU seconds of every step after a 1-step warm-up, untiled
then tiled, for each --threads value in turn (same process, same load).

    python benchmarks/tiling_threads.py --models /path/to/models [--size 512] [--tile 256] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True, help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    from comfyui_inverse.benchmarks.comfy_overhead import conds, import_comfy, load

    import_comfy(args.comfy, ["--use-pytorch-cross-attention"])
    import torch

    import comfy.samplers
    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes import conjugate_nodes as cn
    from comfyui_inverse.nodes import tiling as node_tiling
    from comfyui_inverse.nodes.comfy_bridge import model_sampling_of
    from comfyui_inverse.nodes.types import Measurement

    node_tiling.MAX_TILE_BATCH = 1
    with torch.inference_mode():
        model, vae = load(Path(args.models), "sd3")
        cond = conds("sd3", torch)
        size = args.size
        img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        op = ops.SuperResolution(4, kernel="bicubic")
        meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, size, size))
        latent = torch.zeros(1, model.model.latent_format.latent_channels, size // 8, size // 8)

        def sample(tile: int, steps: int, callback=None):
            sampler = cn.make_sampler("flow", meas, vae, 20.0, 0.2, "autograd", "latent_surrogate", tile_size=tile,
                                      tile_overlap=args.overlap)
            guider = comfy.samplers.CFGGuider(model)
            guider.set_conds(cond, cond)
            guider.set_cfg(1.0)
            sigmas = cn.inverse_sigmas(model_sampling_of(model), steps, 0.4)
            return guider.sample(torch.zeros_like(latent), latent, sampler, sigmas, disable_pbar=True, seed=0,
                                 callback=callback)

        for threads in args.threads:
            torch.set_num_threads(threads)
            for tile in (0, args.tile):
                sample(tile, 1)
                marks = []
                sample(tile, args.steps, lambda *_: marks.append((time.perf_counter(), time.process_time())))
                steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]
                print(f"{threads} thread(s), {size}², tile {tile or 'off'}: s/step wall "
                      + " ".join(f"{w:.2f}" for w, _ in steps) + " | CPU " + " ".join(f"{c:.2f}" for _, c in steps)
                      + f" | load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
