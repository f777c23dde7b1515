"""Which modules to activation-checkpoint during the autograd VJP (benchmarks/results/tiling.md §3).

One VJP of the tiny SD1.5/SDXL UNet (in-process ComfyUI --cpu, SDPA, one torch thread): Jᵀu for a
seeded latent, cotangent and context, with nodes/checkpointing.checkpointed_blocks patching the module
types listed per variant, against plain backprop. Prints peak extra RSS (freed buffers returned to the
OS), CPU seconds, and whether Jᵀu equals plain backprop bit for bit. The no-grad forward is the scale.

    python benchmarks/checkpoint_variants.py --models /path/to/models [--family sdxl] [--size 512]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True, help="models/ dir built by tests/host/tiny_models.py")
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sdxl")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--default-only", action="store_true",
                        help="only the no-grad forward and the default checkpointing (big sizes take long on a CPU)")
    args = parser.parse_args(argv)

    from comfyui_inverse.benchmarks import comfy_overhead as co

    co.import_comfy(args.comfy, ["--use-pytorch-cross-attention"])
    import torch

    from comfyui_inverse.nodes import checkpointing as cb
    from comfyui_inverse.nodes.comfy_bridge import make_differentiable

    torch.set_num_threads(1)
    co._LIBC = co._libc()
    model, _ = co.load(Path(args.models), args.family)
    dm = model.model.diffusion_model
    make_differentiable(dm, model)
    g = torch.Generator().manual_seed(0)
    lat = args.size // 8
    x, u = torch.randn(1, 4, lat, lat, generator=g), torch.randn(1, 4, lat, lat, generator=g)
    t = torch.tensor([500.0])
    ctx = torch.randn(1, 77, 2048 if args.family == "sdxl" else 768, generator=g)
    extra = {"y": torch.randn(1, 2816, generator=g)} if args.family == "sdxl" else {}

    def vjp(blocks, skip_pairs):
        def run():
            sampler_args = {"model_options": {}} if skip_pairs else None
            with torch.enable_grad(), (cb.checkpointed_blocks(dm, sampler_args, blocks) if blocks
                                       else contextlib.nullcontext()):
                options = sampler_args["model_options"].get("transformer_options", {}) if sampler_args else {}
                xg = x.clone().requires_grad_(True)
                return torch.autograd.grad(dm(xg, t, context=ctx, transformer_options=options, **extra), xg, u)[0]
        return run

    per_block = tuple(b for b in cb.CHECKPOINT_BLOCKS if b != "SpatialTransformer")
    variants = [("nested stacks + decoder blocks keep (h, skip) (the default)", cb.CHECKPOINT_BLOCKS, True),
                ("nested: SpatialTransformer around its checkpointed blocks + ResBlock", cb.CHECKPOINT_BLOCKS, False),
                ("blocks only: ResBlock, BasicTransformerBlock (before)", per_block, False),
                ("plain backprop", (), False)][:1 if args.default_only else None]
    with torch.inference_mode(False):
        with torch.no_grad():
            _, peak, sec = co.measure_call(lambda: dm(x, t, context=ctx, **extra))
        print(f"{args.family} {args.size}²: forward (no grad) peak +{peak:.0f} MiB, {sec:.1f} s CPU", flush=True)
        results = {}
        for name, blocks, skip_pairs in variants:
            jtu, peak_v, sec_v = co.measure_call(vjp(blocks, skip_pairs))
            results[name] = jtu
            print(f"{name}: peak +{peak_v:.0f} MiB ({peak_v / peak:.2f}× the forward), {sec_v:.1f} s CPU", flush=True)
        if "plain backprop" in results:  # not with --default-only
            ref = results["plain backprop"]
            for name, jtu in results.items():
                print(f"{name}: bit-exact vs plain backprop: {torch.equal(jtu, ref)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
