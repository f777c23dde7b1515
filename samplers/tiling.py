"""Tiled denoiser: D(x, σ) evaluated on overlapping latent tiles and blended (MultiDiffusion).

    D_tiled(x) = Σ_i E_iᵀ(ω_i ⊙ D(E_i x)),   ω_i = w_i / Σ_j E_jᵀ w_j

E_i crops tile i, w_i is its window. The blend is a per-pixel weighted average, so D_tiled is
an ordinary (differentiable) function of x and every sampler (C-ΠGDM, C-ΠGFM, TReg, ΠGDM, DPS)
runs on it unchanged; operators, P, H⁺ and the conjugate map stay global. Its exact VJP is

    J_tiledᵀ u = Σ_i E_iᵀ J_iᵀ(ω_i ⊙ E_i u),

one backward pass per tile batch on the blend-weighted share of u (`vjp_autograd`), so the
backward pass never holds more than `max_batch` tiles' activations.

Window (1-D, per axis; the 2-D window is the outer product): along a tile edge that lies inside
the image, the first `margin` pixels get weight 0 — a tile's outermost pixels only serve as
context, and they are the ones a local model gets wrong (a convolution of radius r ≤ margin is
reproduced exactly) — then a sin² ramp rises to 1 over the rest of the overlap; edges on the image
border get weight 1. For neighbours overlapping by exactly `overlap` the two ramps sum to 1
(sin² + cos²); Σ_j w_j > 0 everywhere as long as overlap > 2·margin, which is enforced.
"""

from __future__ import annotations

import math

import torch

from .out_of_place import augmented_assignments_out_of_place


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of tiles of size min(tile, length) covering [0, length), overlaps ≥ `overlap`."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def window_1d(length: int, start: int, tile: int, overlap: int, margin: int) -> torch.Tensor:
    """Weights of one tile [start, start + tile) of an axis of `length` pixels (float64)."""
    pos = torch.arange(tile, dtype=torch.float64)
    w = torch.ones(tile, dtype=torch.float64)
    blend = overlap - 2 * margin

    def ramp(d):
        t = ((d - margin + 1) / (blend + 1)).clamp(0.0, 1.0)
        return torch.where(d < margin, torch.zeros_like(d), torch.sin(0.5 * math.pi * t) ** 2)

    if start > 0:
        w = w * ramp(pos)
    if start + tile < length:
        w = w * ramp(tile - 1 - pos)
    return w


class TiledDenoiser:
    """Callable D_tiled(x, σ, *extra) over B×C×H×W latents; sizes in latent pixels.

    tile: tile height/width (an int, or (h, w)); tiles larger than the image shrink to it.
    overlap: pixels shared by neighbouring tiles (at least; tiles are spread evenly).
    margin: context-only pixels at inner tile edges (default overlap // 4).
    max_batch: tiles per model call (each tile carries the whole batch B).
    Extra positional/keyword tensors whose first dimension is B (e.g. a per-item embedding) are
    repeated per tile; σ must be a (B,) tensor.
    """

    def __init__(self, denoiser, tile, overlap: int, margin: int | None = None, max_batch: int = 1):
        if not callable(denoiser):
            raise ValueError("denoiser must be a callable (x, sigma) -> x0_hat.")
        th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
        margin = overlap // 4 if margin is None else int(margin)
        if min(th, tw) < 1 or overlap < 0 or margin < 0:
            raise ValueError(f"tile must be ≥ 1 and overlap, margin ≥ 0; got tile {tile}, overlap {overlap}, margin {margin}.")
        if overlap >= min(th, tw):
            raise ValueError(f"tile_overlap ({overlap} latent px) must be smaller than the tile ({min(th, tw)} latent px).")
        if overlap and overlap <= 2 * margin:
            raise ValueError(f"overlap ({overlap}) must exceed twice the context margin ({margin}).")
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}.")
        self.denoiser = denoiser
        self.tile = (int(th), int(tw))
        self.overlap = int(overlap)
        self.margin = margin if overlap else 0
        self.max_batch = int(max_batch)
        self._plans = {}

    # -- geometry ---------------------------------------------------------------------------
    def plan(self, height: int, width: int, device, dtype):
        """(tiles [(top, left, h, w)], normalised weights ω per tile (h×w)); cached per size/device/dtype."""
        key = (height, width, str(device), dtype)
        if key not in self._plans:
            th, tw = min(self.tile[0], height), min(self.tile[1], width)
            rows, cols = tile_starts(height, th, self.overlap), tile_starts(width, tw, self.overlap)
            tiles, windows = [], []
            total = torch.zeros(height, width, dtype=torch.float64)
            for top in rows:
                wy = window_1d(height, top, th, self.overlap, self.margin)
                for left in cols:
                    w2 = wy[:, None] * window_1d(width, left, tw, self.overlap, self.margin)[None, :]
                    tiles.append((top, left, th, tw))
                    windows.append(w2)
                    total[top:top + th, left:left + tw] += w2
            if not bool((total > 0).all()):  # cannot happen with overlap > 2·margin; guards edits
                raise RuntimeError("tile windows leave pixels with zero total weight.")
            # ordinary tensors even when first built under inference mode (the host's), since a later
            # autograd call multiplies by them and saves them for backward
            with torch.inference_mode(False):
                weights = [(w2 / total[t:t + h, l:l + w]).to(device=device, dtype=dtype)
                           for w2, (t, l, h, w) in zip(windows, tiles)]
            self._plans[key] = (tiles, weights)
        return self._plans[key]

    def num_tiles(self, height: int, width: int) -> int:
        th, tw = min(self.tile[0], height), min(self.tile[1], width)
        return len(tile_starts(height, th, self.overlap)) * len(tile_starts(width, tw, self.overlap))

    # -- evaluation -------------------------------------------------------------------------
    def _batches(self, tiles):
        for i in range(0, len(tiles), self.max_batch):
            yield range(i, min(i + self.max_batch, len(tiles)))

    def _call_tiles(self, x, sigma, idx, tiles, extra, kwextra):
        """D on the tiles `idx` stacked along the batch: (k·B)×C×h×w (tile-major)."""
        k, b = len(idx), x.shape[0]
        crops = torch.cat([x[:, :, t:t + h, l:l + w] for t, l, h, w in (tiles[i] for i in idx)], dim=0)
        rep = lambda a: a.repeat(k, *([1] * (a.ndim - 1))) if isinstance(a, torch.Tensor) and a.ndim and a.shape[0] == b else a  # noqa: E731
        out = self.denoiser(crops, rep(sigma), *[rep(a) for a in extra], **{n: rep(a) for n, a in kwextra.items()})
        return out.view(k, b, *out.shape[1:])

    def __call__(self, x, sigma, *extra, **kwextra):
        tiles, weights = self.plan(x.shape[-2], x.shape[-1], x.device, x.dtype)
        if len(tiles) == 1:  # one tile = the untiled call
            return self.denoiser(x, sigma, *extra, **kwextra)
        out = None
        for idx in self._batches(tiles):
            y = self._call_tiles(x, sigma, idx, tiles, extra, kwextra)
            if out is None:
                out = torch.zeros(x.shape[0], y.shape[2], *x.shape[2:], dtype=y.dtype, device=y.device)
            for j, i in enumerate(idx):
                t, l, h, w = tiles[i]
                part = y[j] * weights[i].to(y.dtype)
                if y.requires_grad:  # out of place, so autograd can differentiate through the blend
                    out = out + torch.nn.functional.pad(part, (l, x.shape[-1] - l - w, t, x.shape[-2] - t - h))
                else:
                    out[:, :, t:t + h, l:l + w] += part
        return out

    def num_batches(self, height: int, width: int) -> int:
        return math.ceil(self.num_tiles(height, width) / self.max_batch)

    def vjp_autograd(self, x, sigma, cotangent_fn):
        """(x̂0, c, J_tiledᵀc) with one backward per tile batch (peak: `max_batch` tiles' graphs).

        x̂0 first (no grad: the cotangent needs the whole x̂0), then per batch a forward with grad
        and autograd.grad on ω_i ⊙ c_i: one more forward than a single global backward, in
        exchange for memory that does not grow with the number of tiles.
        """
        tiles, weights = self.plan(x.shape[-2], x.shape[-1], x.device, x.dtype)
        with torch.no_grad():
            x0 = self(x, sigma)
        c = cotangent_fn(x0).detach()
        jtc = torch.zeros_like(x)
        for idx in self._batches(tiles):
            xg = x.detach().clone().requires_grad_(True)
            with augmented_assignments_out_of_place():  # as AutogradVJP does (samplers/vjp.py)
                y = self._call_tiles(xg, sigma.detach(), idx, tiles, (), {})
            if not y.requires_grad:
                from .vjp import AutogradUnavailable

                raise AutogradUnavailable("the denoiser output does not depend differentiably on x.")
            share = torch.stack([c[:, :, t:t + h, l:l + w] * weights[i].to(c.dtype)
                                 for i, (t, l, h, w) in ((i, tiles[i]) for i in idx)]).to(y.dtype)
            (g,) = torch.autograd.grad(y, xg, grad_outputs=share)
            jtc = jtc + g.detach().to(jtc.dtype)  # xg is the whole latent: g is zero outside the batch's tiles
        return x0, c, jtc


def tiled(denoiser, tile, overlap: int, margin: int | None = None, max_batch: int = 1):
    """`denoiser` itself when tile is None/0, else a TiledDenoiser."""
    if not tile:
        return denoiser
    return TiledDenoiser(denoiser, tile, overlap, margin=margin, max_batch=max_batch)
