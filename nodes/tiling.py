"""Tiled mode of the solver nodes: the two widgets, the tiled denoiser sized to free memory, tiled VAE.

The denoiser runs on overlapping latent tiles blended as in samplers/tiling.py (exact VJP per
tile); operators, P, H⁺, the conjugate map and TReg's CG stay global. The VAE encodes and decodes
through ComfyUI's tiled paths (VAE.encode_tiled / decode_tiled), which have no gradient, so the
modes that backpropagate through the decoder (consistent_target, TReg's use_dps) are refused.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from comfy_api.latest import io

import comfy.utils

from ..samplers.tiling import TiledDenoiser
from .comfy_bridge import VaeBridge, interrupted, vae_downscale
from .limits import AUTOGRAD_STEP_FACTOR, VAE_TILE, free_memory

log = logging.getLogger("comfyui-inverse")

DEFAULT_OVERLAP = 128  # pixels: 16 latent pixels, a quarter of which is context margin
VAE_OVERLAP = 64  # pixels: the stock VAE Decode/Encode (Tiled) default (tile side: limits.VAE_TILE)
MAX_TILE_BATCH = 64  # tiles per model call at most, however much memory is free


def tile_inputs() -> list:
    """The two widgets, appended at the end of a solver's inputs (saved workflows store widgets by position)."""
    return [
        io.Int.Input("tile_size", default=0, min=0, max=16384, step=32, optional=True,
                     tooltip="Tiled mode for big photos: the model runs on overlapping tiles of this many pixels "
                             "(0 = off, the whole image at once). Use the model's native size: 1024 for SDXL, SD3 and "
                             "Flux, 512 for SD1.5. The measurement, the operator and the conjugate update stay global "
                             "and exact; the VAE uses ComfyUI's tiled encode/decode."),
        io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=4096, step=8, optional=True,
                     tooltip="Pixels shared by neighbouring tiles (tiled mode only). 128 for 1024 tiles, 64 for 512; "
                             "more hides seams better and costs more tiles."),
    ]


def latent_tiles(tile_size: int, tile_overlap: int, downscale: int = 8):
    """(tile, overlap) in latent pixels, or None when tiling is off; ValueError naming the widget."""
    tile_size, tile_overlap = int(tile_size or 0), int(tile_overlap or 0)
    if tile_size <= 0:
        return None
    if tile_size < 4 * downscale:
        raise ValueError(f"tile_size: {tile_size} pixels is too small; use at least {4 * downscale} (e.g. 512 for "
                         "SD1.5, 1024 for SDXL/SD3/Flux), or 0 to turn tiling off.")
    if tile_overlap < 0 or tile_overlap >= tile_size:
        raise ValueError(f"tile_overlap: must be between 0 and tile_size ({tile_size}), got {tile_overlap}. "
                         f"Try {tile_size // 8}.")
    return tile_size // downscale, tile_overlap // downscale


def tile_batch(base_model, latent_shape, tile: int, autograd: bool, device) -> int:
    """Tiles per model call that fit in free memory (ComfyUI's own per-call estimate), ≥ 1."""
    b, c, h, w = (int(v) for v in latent_shape)
    per_tile = base_model.memory_required((b, c, min(tile, h), min(tile, w))) * (AUTOGRAD_STEP_FACTOR if autograd else 1.0)
    free = free_memory(device)
    return max(1, min(MAX_TILE_BATCH, int(0.5 * free // max(per_tile, 1.0))))


def tiled_denoiser(denoiser, base_model, latent_shape, tiles, autograd: bool, device, what: str):
    """`denoiser` on overlapping tiles (checks Cancel before every tile batch); `denoiser` when tiles is None."""
    if tiles is None:
        return denoiser
    tile, overlap = tiles

    def interruptible(x, sigma, *extra, **kw):
        interrupted()  # raises on Cancel
        return denoiser(x, sigma, *extra, **kw)

    td = TiledDenoiser(interruptible, tile, overlap, max_batch=1)
    h, w = int(latent_shape[-2]), int(latent_shape[-1])
    n = td.num_tiles(h, w)
    td.max_batch = min(n, tile_batch(base_model, latent_shape, tile, autograd, device))
    log.info("comfyui-inverse: %s in tiled mode: %d tile(s) of %d×%d latent px (overlap %d), %d per model call.",
             what, n, min(tile, h), min(tile, w), overlap, td.max_batch)
    return td


def refuse_decoder_gradient(tiles, what: str) -> None:
    if tiles is not None:
        raise ValueError(f"{what} backpropagates through the VAE decoder, which ComfyUI's tiled VAE cannot do. "
                         "Turn it off, or set tile_size to 0 (no tiling).")


@contextlib.contextmanager
def quiet_progress():
    """No progress events from the stock tiled VAE inside a sampler: the node's bar counts sampling steps."""
    hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.PROGRESS_BAR_HOOK = None
    try:
        yield
    finally:
        comfy.utils.PROGRESS_BAR_HOOK = hook


class TiledVaeBridge(VaeBridge):
    """VaeBridge whose decode/encode go through VAE.decode_tiled / encode_tiled (no gradient).

    The stock tiled decode clamps to [0, 1]; encode gives the VAE's own latent (the generator of
    VaeBridge.encode is ignored).
    """

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        raw = self.latent_format.process_out(latent.detach().float())
        down = self.downscale
        with torch.inference_mode(), quiet_progress():  # the stock tiled path updates inference tensors in place
            image = self.vae.decode_tiled(raw, tile_x=VAE_TILE // down, tile_y=VAE_TILE // down,
                                          overlap=VAE_OVERLAP // down)
        image = image.clone()  # an ordinary tensor again (callers may run with inference mode off)
        if image.ndim == 5:
            image = image.reshape(-1, *image.shape[-3:])
        return (image.movedim(-1, 1).float() * 2.0 - 1.0).to(latent.device)

    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        image = ((pixels.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)
        with torch.inference_mode(), quiet_progress():
            raw = self.vae.encode_tiled(image, tile_x=VAE_TILE, tile_y=VAE_TILE, overlap=VAE_OVERLAP)
        raw = raw.clone()
        return self.latent_format.process_in(raw.float()).to(pixels.device)


def bridge_for(vae, latent_format, tiles) -> VaeBridge:
    return VaeBridge(vae, latent_format) if tiles is None else TiledVaeBridge(vae, latent_format)


def decode_output(vae, samples: torch.Tensor, tiles) -> torch.Tensor:
    """The solver's output image (B×H×W×C in [0, 1]), through the tiled VAE path in tiled mode."""
    if tiles is None:
        image = vae.decode(samples)
    else:
        down = vae_downscale(vae)
        image = vae.decode_tiled(samples, tile_x=VAE_TILE // down, tile_y=VAE_TILE // down,
                                 overlap=VAE_OVERLAP // down)
    if image.ndim == 5:
        image = image.reshape(-1, *image.shape[-3:])
    return image

