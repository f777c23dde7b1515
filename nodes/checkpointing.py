"""Activation checkpointing of the model's blocks during the autograd VJP (benchmarks/results/tiling.md §3).

Backprop through a UNet/DiT keeps every block's activations at once. Checkpointed, a block keeps only
its input and the backward pass recomputes it, so the VJP step needs about one block's activations
at a time. All of it is exact: the gradients equal plain backprop bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint

import comfy.model_management

from ..samplers.out_of_place import augmented_assignments_out_of_place

# UNet res/transformer blocks, MMDiT joint blocks, Flux double/single blocks. SpatialTransformer is
# checkpointed around its own (also checkpointed) blocks: forward then keeps one input per transformer
# stack instead of one per block plus its norm/projection activations, and the backward pass rebuilds
# one stack's block inputs at a time (SDXL stacks hold up to 10 blocks).
CHECKPOINT_BLOCKS = ("ResBlock", "SpatialTransformer", "BasicTransformerBlock", "JointBlock", "DoubleStreamBlock",
                     "SingleStreamBlock")


class _CopyGrad(torch.autograd.Function):
    """Identity whose backward copies the gradient. A UNet skip tensor gets its gradient as a slice of
    the concatenation's; the slice would keep the whole buffer alive until the encoder side's gradient
    arrives to be added to it (one buffer per decoder block)."""

    @staticmethod
    def forward(ctx, tensor):
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone()


class _SkipConcat:
    """Lets the checkpointed decoder ResBlock keep the UNet's (h, skip) pair instead of their
    concatenation, which would be a new tensor of both sizes per decoder block.

    ComfyUI's UNet hands (h, skip) to its `output_block_patch`es, concatenates them and calls the
    decoder block's ResBlock on the result; the pair is held here until that ResBlock takes it, and used
    only when the ResBlock's input equals the pair's concatenation exactly.
    """

    def __init__(self):
        self.pending = None
        self.blocks = 0  # modules checkpointed
        self.pairs = 0  # decoder blocks that kept the pair

    def output_block_patch(self, h, skip, transformer_options):
        if torch.is_grad_enabled() and (h.requires_grad or skip.requires_grad):
            skip = _CopyGrad.apply(skip)
            self.pending = (h, skip)
        return h, skip

    def take(self, x):
        """The pending (h, skip) if x is their concatenation along channels, else None."""
        pair, self.pending = self.pending, None
        if pair is None:
            return None
        h, skip = pair
        c = h.shape[1]
        if (x.ndim != h.ndim or x.shape[1] != c + skip.shape[1] or x.shape[2:] != h.shape[2:]
                or not torch.equal(x[:, :c], h) or not torch.equal(x[:, c:], skip)):
            return None
        self.pairs += 1
        return pair


def _out_of_place_contexts():
    # The block's forward and its recomputation in the backward pass, where the VJP's own mode is
    # not active (torch.autograd.grad runs with torch-function modes off): both must make Flux's
    # `img += …` out of place, or the recomputation changes the block input it recomputes from.
    return augmented_assignments_out_of_place(), augmented_assignments_out_of_place()


def _checkpointed_forward(module, skips: _SkipConcat):
    plain = module.forward

    def forward(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
            return plain(*args, **kwargs)
        pair = skips.take(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        if pair is not None:
            def concatenated(h, skip, *rest, **kw):
                return plain(torch.cat([h, skip], dim=1), *rest, **kw)

            return torch.utils.checkpoint.checkpoint(concatenated, *pair, *args[1:], use_reentrant=False,
                                                     context_fn=_out_of_place_contexts, **kwargs)
        return torch.utils.checkpoint.checkpoint(plain, *args, use_reentrant=False, context_fn=_out_of_place_contexts,
                                                 **kwargs)

    return forward


def _with_output_block_patch(model_options: dict, patch) -> dict:
    """A copy of `model_options` with `patch` run last among its output_block_patches."""
    options = dict(model_options)
    transformer_options = dict(options.get("transformer_options", {}))
    patches = dict(transformer_options.get("patches", {}))
    patches["output_block_patch"] = [*patches.get("output_block_patch", []), patch]
    transformer_options["patches"] = patches
    options["transformer_options"] = transformer_options
    return options


@contextlib.contextmanager
def checkpointed_blocks(diffusion_model: torch.nn.Module, extra_args: dict | None = None, blocks=None):
    """Activation checkpointing of the model's blocks while inside (only where grad flows).

    Inference calls (no grad) run the blocks unchanged; the patch is removed on exit, so other
    samplers using the same model never see it. Nested listed blocks are checkpointed at every level.
    `extra_args` (the sampler's, passed to every model call) gets the UNet skip patch while inside.
    Yields a report: `.blocks` checkpointed, `.pairs` decoder blocks that kept the (h, skip) pair.
    """
    names = CHECKPOINT_BLOCKS if blocks is None else blocks
    skips = _SkipConcat()
    patched = []
    for module in diffusion_model.modules():
        if type(module).__name__ in names and "forward" not in module.__dict__:
            module.forward = _checkpointed_forward(module, skips)
            patched.append(module)
    options = extra_args.get("model_options") if extra_args is not None else None
    if options is not None:
        extra_args["model_options"] = _with_output_block_patch(options, skips.output_block_patch)
    skips.blocks = len(patched)
    try:
        yield skips
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)
        if options is not None:
            extra_args["model_options"] = options
        skips.pending = None


@contextlib.contextmanager
def _differentiable_paths():
    # ComfyUI's own switch for its differentiable code paths, which its training nodes set: newer
    # ComfyUI otherwise runs e.g. Flux's rotary embedding through a kernel without a gradient formula.
    mm = comfy.model_management
    if not hasattr(mm, "in_training"):  # older ComfyUI: every path is differentiable
        yield
        return
    saved, mm.in_training = mm.in_training, True
    try:
        yield
    finally:
        mm.in_training = saved


@contextlib.contextmanager
def autograd_forward(diffusion_model: torch.nn.Module, extra_args: dict | None = None, checkpoint: bool = True):
    """What the autograd VJP through ComfyUI's model needs while inside: ComfyUI's differentiable code
    paths, and (unless `checkpoint` is False) the blocks checkpointed. Yields checkpointed_blocks'
    report, or None."""
    with _differentiable_paths():
        if not checkpoint:
            yield None
            return
        with checkpointed_blocks(diffusion_model, extra_args) as report:
            yield report
