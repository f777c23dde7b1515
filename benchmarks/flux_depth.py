"""Autograd VJP memory of a deeper Flux, with and without checkpointed blocks (results/tiling.md §3).

The tiny Flux has one double block and no single block (its detector fixes the width), so on it
the whole model is one block and checkpointing cannot show; real Flux-dev has 19 + 38. Here the
tiny model's double block runs `--double` times and one random SingleStreamBlock of the same width
`--single` times (repeated instances: their weights are shared, their activations are not). One
VJP Jᵀu through the pack's AutogradVJP (in-process ComfyUI --cpu, SDPA, one torch thread): peak
extra RSS (freed buffers returned to the OS) against the no-grad forward, CPU seconds, and whether
the checkpointed Jᵀu equals plain backprop bit for bit.

    python benchmarks/flux_depth.py --models /path/to/models [--size 512] [--double 3] [--single 6] [--no-plain]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True, help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--size", type=int, default=512, help="pixels")
    parser.add_argument("--double", type=int, default=3, help="passes through the tiny model's double block")
    parser.add_argument("--single", type=int, default=6, help="passes through one random single block")
    parser.add_argument("--no-plain", action="store_true", help="skip plain backprop (its memory grows with depth)")
    args = parser.parse_args(argv)

    from comfyui_inverse.benchmarks import comfy_overhead as co

    co.import_comfy(args.comfy, ["--use-pytorch-cross-attention"])
    import comfy.ldm.flux.layers
    import comfy.model_management
    import comfy.ops
    import torch

    from comfyui_inverse.nodes.checkpointing import autograd_forward
    from comfyui_inverse.nodes.comfy_bridge import make_differentiable
    from comfyui_inverse.samplers import AutogradVJP

    torch.set_num_threads(1)
    co._LIBC = co._libc()
    patcher, _ = co.load(Path(args.models), "flux")
    comfy.model_management.load_models_gpu([patcher])
    base, dm = patcher.model, patcher.model.diffusion_model
    make_differentiable(dm, patcher)
    hidden, heads = dm.hidden_size, dm.num_heads
    single = comfy.ldm.flux.layers.SingleStreamBlock(hidden, heads, mlp_ratio=4.0, dtype=torch.float32,
                                                     operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in single.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.fill_(1.0 if name.endswith("scale") else 0.0)
    dm.double_blocks = torch.nn.ModuleList([dm.double_blocks[0]] * args.double)
    dm.single_blocks = torch.nn.ModuleList([single] * args.single)

    lat = args.size // 8
    x, u = torch.randn(1, 16, lat, lat, generator=g), torch.randn(1, 16, lat, lat, generator=g)
    cond = {"c_crossattn": torch.randn(1, 256, 4096, generator=g), "y": torch.randn(1, 2048, generator=g),
            "guidance": torch.tensor([3.5])}
    sigma = torch.tensor([0.7])

    def denoiser(xx, s):
        return base.apply_model(xx, s, **cond)

    def vjp(checkpointed):
        def run():
            with autograd_forward(dm, checkpoint=checkpointed):  # as the sampler runs its VJP
                return AutogradVJP()(denoiser, x, sigma, lambda x0: u)[2]
        return run

    print(f"Flux, {args.double} double + {args.single} single block passes, {args.size}² "
          f"({lat // 2}² image tokens + 256 text tokens), hidden {hidden}", flush=True)
    with torch.no_grad():
        _, forward, sec = co.measure_call(lambda: denoiser(x, sigma))
    print(f"forward (no grad): peak +{forward:.0f} MiB, {sec:.1f} s CPU", flush=True)
    results = {}
    for name, checkpointed in (("plain backprop", False), ("checkpointed blocks (the default)", True)):
        if args.no_plain and not checkpointed:
            continue
        results[name], peak, sec = co.measure_call(vjp(checkpointed))
        print(f"VJP, {name}: peak +{peak:.0f} MiB ({peak / forward:.2f}× the forward), {sec:.1f} s CPU", flush=True)
    if len(results) == 2:
        plain, ckpt = results.values()
        print(f"checkpointed Jᵀu equals plain backprop bit for bit: {torch.equal(plain, ckpt)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
