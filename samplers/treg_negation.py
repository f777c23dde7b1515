"""TReg adaptive negation (AN): push the null/negative text embedding away from the image.

Loss per batch item (treg_spec §3):  L(u) = mean_j ⟨ f̂ , u_j ⟩,  f̂ = f/‖f‖ the projected CLIP
image embedding of the data-consistent image, u_j the token rows of the null embedding.
The official code runs 10 steps of a fresh Adam on it. L is linear in u, so Adam's moments see a
constant gradient g = f̂/T and each step is lr·g/(|g|+eps) ≈ lr·sign(f̂): the "sign" method is
that closed form, equal to Adam up to eps/|g| (≤ 1e-4 relative for CLIP-sized embeddings).
"""

from __future__ import annotations

from typing import Callable

import torch

AN_METHODS = ("adam", "sign")


def _as_columns(columns, width: int) -> tuple[int, int]:
    if columns is None:
        return 0, width
    if isinstance(columns, slice):
        if columns.step not in (None, 1):
            raise ValueError(f"columns must be a contiguous slice, got step {columns.step}.")
        start, stop = columns.start or 0, width if columns.stop is None else columns.stop
    else:
        try:
            start, stop = (int(c) for c in columns)
        except (TypeError, ValueError):
            raise ValueError(f"columns must be None, a slice or a (start, stop) pair, got {columns!r}.") from None
    if not 0 <= start < stop <= width:
        raise ValueError(
            f"columns ({start}, {stop}) do not fit a null embedding {width} wide; "
            f"use 0 <= start < stop <= {width}, e.g. (0, 768) for the CLIP-L part of SDXL."
        )
    return start, stop


class AdaptiveNegation:
    """Holds the (per batch item) null embedding B×T×D in fp32 and updates it from images.

    `image_embed(pixels in [-1, 1], B×3×H×W) -> B×d` is the projected CLIP image embedding.
    `columns` restricts AN to a column range of the token width (e.g. (0, 768): the CLIP-L
    half of SDXL's 2048-wide embedding); d must equal the width of that range.
    The embedding the sampler must use is `.embedding`; `reset()` restores the initial one.
    """

    def __init__(
        self,
        null_embedding: torch.Tensor,
        image_embed: Callable[[torch.Tensor], torch.Tensor],
        *,
        lr: float = 8e-4,
        steps: int = 10,
        columns=None,
        method: str = "adam",
    ):
        if null_embedding.dim() == 2:
            null_embedding = null_embedding.unsqueeze(0)
        if null_embedding.dim() != 3:
            raise ValueError(
                f"null_embedding must be a B×T×D token embedding, got shape {tuple(null_embedding.shape)}."
            )
        if lr < 0:
            raise ValueError(f"AN lr must be >= 0, got {lr}.")
        if steps < 0:
            raise ValueError(f"AN steps must be >= 0, got {steps}.")
        if method not in AN_METHODS:
            raise ValueError(f"AN method must be one of {AN_METHODS}, got {method!r}.")
        self.image_embed = image_embed
        self.lr = float(lr)
        self.steps = int(steps)
        self.method = method
        self.columns = _as_columns(columns, null_embedding.shape[-1])
        # fp32 always: fp16 Adam underflows v and eps and returns NaN (treg_spec §3).
        self._initial = null_embedding.detach().to(torch.float32).clone()
        self._embedding = self._initial.clone()
        self.updates = 0

    @property
    def embedding(self) -> torch.Tensor:
        """Current null embedding, B×T×D, fp32 (batch 1 until `expand_to_batch`)."""
        return self._embedding

    @property
    def width(self) -> int:
        start, stop = self.columns
        return stop - start

    def reset(self) -> None:
        """Back to the initial null embedding (so a rerun with the same seed is identical)."""
        self._embedding = self._initial.clone()
        self.updates = 0

    def expand_to_batch(self, batch: int) -> None:
        """Give each of `batch` items its own copy of a shared (batch-1) null embedding."""
        current = self._embedding.shape[0]
        if current == batch:
            return
        if current != 1:
            raise ValueError(
                f"null embedding has batch {current} but the image batch is {batch}; "
                f"pass one null embedding (batch 1) or one per image."
            )
        self._embedding = self._embedding.expand(batch, -1, -1).clone()

    def check_image_embedding_width(self, dim: int) -> None:
        """ValueError naming both widths and the fix when the CLIP image embedding cannot act on u."""
        if dim != self.width:
            start, stop = self.columns
            raise ValueError(
                f"Adaptive negation: the CLIP image embedding is {dim} wide but the null-embedding "
                f"columns {start}:{stop} are {self.width} wide (token width {self._embedding.shape[-1]}). "
                f"Use a CLIP vision model whose projection is {self.width}-d (CLIP ViT-L/14 for SD1.5's "
                f"768-d text tokens), or set columns to a {dim}-wide range of the text embedding."
            )

    def loss(self, features: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        """Per-item AN loss, shape B: mean over token rows of ⟨normalize(f), u_j[columns]⟩."""
        u = self._embedding if embedding is None else embedding
        start, stop = self.columns
        f_hat = self._normalized(features, u)
        return (u[..., start:stop] * f_hat[:, None, :]).sum(-1).mean(-1)

    def _normalized(self, features: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        f = features.detach().to(device=u.device, dtype=torch.float32)
        return f / f.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    def update(self, pixels: torch.Tensor, should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """One AN call on the data-consistent images (B×3×H×W in [-1, 1]); returns the new embedding."""
        features = self.image_embed(pixels)
        if features.dim() != 2:
            raise ValueError(f"image_embed must return a B×D tensor, got shape {tuple(features.shape)}.")
        self.check_image_embedding_width(features.shape[-1])
        self.expand_to_batch(features.shape[0])
        start, stop = self.columns
        # Outside ComfyUI's inference mode: the stored embedding must stay a normal tensor.
        with torch.inference_mode(False):
            u = self._embedding.clone()
            f_hat = self._normalized(features.clone(), u)
            if self.method == "sign":
                u[..., start:stop] -= (self.steps * self.lr) * torch.sign(f_hat)[:, None, :]
            else:
                u[..., start:stop] = self._adam(u[..., start:stop], f_hat, should_stop)
            self._embedding = u
        self.updates += 1
        return self._embedding

    def _adam(self, part: torch.Tensor, f_hat: torch.Tensor, should_stop) -> torch.Tensor:
        with torch.enable_grad():
            param = part.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([param], lr=self.lr)  # fresh per call, as the reference
            for _ in range(self.steps):
                if should_stop is not None and should_stop():
                    break
                optimizer.zero_grad(set_to_none=True)
                # Sum over items: each item's gradient is its own f̂/T, independent of batch size.
                loss = (param * f_hat[:, None, :]).sum(-1).mean(-1).sum()
                loss.backward()
                optimizer.step()
        return param.detach()
