"""Refuse restorations that cannot fit in memory, before anything large is allocated.

Pixel-space solvers decode (and re-encode) the whole image without tiling, so an 8k×8k request
would otherwise run out of memory deep inside a step (or swap for hours). The estimate uses
ComfyUI's own per-VAE figures, scaled to what a CPU fp32 pass was measured to need:
AutoencoderKL decode peaked at 0.44–0.54 and TAESD at 0.16 of ComfyUI's estimate (256² and
512², no grad), so half of it is a fair upper figure.
"""

from __future__ import annotations

import comfy.model_management
import torch

from .comfy_bridge import vae_downscale

VAE_ESTIMATE_SHARE = 0.5
GRAD_FACTOR = 6.0  # decode + backward keeps activations: measured 5.4× (AutoencoderKL) and 2.7× (TAESD) at 256²
PIXEL_BUFFERS = 8  # float32 image-sized tensors a solver holds at once (y, H⁺y, x̂0, CG vectors)
VAE_TILE = 512  # pixels: the tiled VAE's tile side in tiled mode (the stock VAE Decode (Tiled) default)


def gigabytes(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def free_memory(device, patcher=None) -> int:
    """Bytes free on `device`. The patcher's own figure where the host has one (ComfyUI ≥ 0.16): with
    dynamic VRAM it adds what the loader can evict from resident weights, which the plain figure misses."""
    probe = getattr(patcher, "get_free_memory", None)
    if callable(probe):
        return int(probe(device))
    return int(comfy.model_management.get_free_memory(device))


def check_memory(required_bytes: int, device, what: str, fix: str = "Use a smaller image.",
                 free_bytes: int | None = None, patcher=None) -> None:
    """ValueError naming `what`, the estimate and the free memory if `required_bytes` won't fit."""
    free = free_memory(device, patcher) if free_bytes is None else free_bytes
    if required_bytes > free:
        raise ValueError(f"{what} needs about {gigabytes(required_bytes)} of memory but only {gigabytes(free)} "
                         f"is free on {device}. {fix}")


PINV_COPIES = 4  # float32 image-sized tensors while a node makes H⁺y and its IMAGE output (movedim copy, clamp)


def check_pseudo_inverse_memory(operator, image_shape, what: str, fix: str) -> None:
    """Before an operator node applies H / H⁺ to images of `image_shape`: refuse what cannot fit in CPU memory (a
    ×32 upscale of a large photo, the SVD matrices of a zero-boundary blur on a 16k image), which would otherwise
    fail deep in torch's allocator or get the server OOM-killed."""
    b, c, h, w = (int(v) for v in image_shape)
    matrices = int(operator.working_bytes((b, c, h, w)))
    batch = f" × {b} images" if b > 1 else ""
    if matrices > PINV_COPIES * b * c * h * w * 4:  # the operator's matrices dominate: say so, and what is cheaper
        what = f"{what}: building {operator.describe()} for a {w}×{h} image{batch}"
        fix += " A blur with boundary circular (FFT) or a box upscale needs no such matrices."
    else:
        what = f"{what}: its pseudo-inverse H⁺y, a {w}×{h} image{batch},"  # "…, needs about …"
    check_memory(PINV_COPIES * b * c * h * w * 4 + matrices, torch.device("cpu"), what, fix)


def solver_memory_bytes(vae, image_shape, latent_channels: int | None = None, with_grad: bool = False,
                        tiled: bool = False) -> int:
    """Peak working memory of one decode/encode pass of `vae` over images of `image_shape` (B×C×H×W).

    tiled: the VAE works on VAE_TILE² tiles (one image of the batch at a time); only the image-sized
    solver buffers grow with the image.
    """
    b, _, h, w = (int(v) for v in image_shape)
    if tiled:
        vae_part = solver_memory_bytes(vae, (1, 3, min(h, VAE_TILE), min(w, VAE_TILE)), latent_channels, with_grad)
        return int(vae_part + PIXEL_BUFFERS * b * 3 * h * w * 4)
    latent_channels = latent_channels or int(getattr(vae, "latent_channels", 4))
    down = vae_downscale(vae)
    dtype = vae.vae_dtype
    decode = vae.memory_used_decode((b, latent_channels, h // down, w // down), dtype)
    encode = vae.memory_used_encode((b, 3, h, w), dtype)
    vae_peak = VAE_ESTIMATE_SHARE * max(decode, encode) * (GRAD_FACTOR if with_grad else 1.0)
    return int(vae_peak + PIXEL_BUFFERS * b * 3 * h * w * 4)


def check_solver_memory(vae, measurement, latent_channels: int | None = None, with_grad: bool = False,
                        what: str = "measurement", free_bytes: int | None = None, tiled: bool = False) -> None:
    """Call in a solver node's execute (or sampler factory) before loading models or sampling.

    with_grad: the solver backpropagates through the VAE decoder (TReg use_dps, pixel-bridge VJP).
    """
    b, _, h, w = (int(v) for v in measurement.image_shape)
    required = solver_memory_bytes(vae, measurement.image_shape, latent_channels, with_grad, tiled)
    half = solver_memory_bytes(vae, (b, 3, h // 2, w // 2), latent_channels, with_grad, tiled)
    batch = f"{b} images of " if b > 1 else ""
    check_memory(
        required, vae.device, f"{what}: restoring {batch}{w}×{h} pixels",
        fix=(f"Restore a smaller image (half the size, {w // 2}×{h // 2}, needs about {gigabytes(half)})"
             + (", fewer images per batch" if b > 1 else "")
             + ("" if tiled else ", or turn on tiled mode (tile_size 1024 for SDXL/SD3/Flux, 512 for SD1.5)") + "."),
        free_bytes=free_bytes, patcher=getattr(vae, "patcher", None),
    )


# Peak of an autograd C-ΠGDM/C-ΠGFM step over a stock inference step, with the model's blocks
# checkpointed during the VJP: measured 1.1–2.2× on the four tiny models at 512² and 1024²
# (benchmarks/results/tiling.md §3). A full-depth Flux is projected at ~5.6× (one saved input per block):
# there an out-of-memory VJP falls back to finite differences (nodes/conjugate_nodes.py). Also sizes tiled
# mode's tile batch (nodes/tiling.py).
AUTOGRAD_STEP_FACTOR = 2.5


def autograd_fits(base_model, latent_shape, device, tile: int | None = None, free_bytes: int | None = None):
    """(fits, needed bytes, free bytes) for the autograd VJP of one model call on `latent_shape`
    (one tile of side `tile` latent pixels in tiled mode), from ComfyUI's own inference estimate."""
    b, c, h, w = (int(v) for v in latent_shape)
    if tile:
        h, w = min(h, tile), min(w, tile)
    needed = AUTOGRAD_STEP_FACTOR * base_model.memory_required((b, c, h, w))
    free = free_memory(device) if free_bytes is None else free_bytes
    return needed <= free, int(needed), int(free)
