"""Augmented assignments (`a += b`, `-=`, `*=`, `/=`) made out of place while backpropagating.

Some models update a tensor in place that autograd (or activation checkpointing) still needs:
ComfyUI's Flux blocks do `img += attn(norm(img))`, where the LayerNorm saved `img`. Plain
backprop then stops with a version-counter error; under non-reentrant checkpointing it does not
even error (saved-tensor hooks skip that check) — the block input is changed before the
backward pass recomputes the block from it, so the gradient is silently wrong.

Python rebinds `a` to what `a.__iadd__(b)` returns, so returning the new tensor `a + b` has the
same meaning for the statement itself while the old `a` stays intact for autograd. Torch reports
`a += b` as `a.add_(b)`, indistinguishable from an explicit `a.add_(b)` whose result is
discarded; the caller's bytecode tells them apart (an in-place BINARY_OP is executing), so
explicit in-place calls are never touched. The result is the in-place op's, bit for bit: same
kernel, cast to `a`'s dtype as the in-place op casts.

Left in place: a view `a` whose base a Python name still holds (`v = x[0]; v += 1` must change
`x`; `x[:, i:j] += m` is the same either way, the subscript assignment writes the slice back), a
Parameter or other subclass, or a result that differs in shape or cannot be cast to `a`'s dtype
(the in-place op then raises its own error). Not detectable, so not guarded: another live view
of a non-view `a` (`parts = a.chunk(2); a += b; use(parts)` would see the old values). Counting
the storage's users would catch it but also counts the detached copies non-reentrant
checkpointing saves while it recomputes a block, which must keep the old values. The host tests
check that a model's forward is bit for bit the same with and without the mode.
"""

from __future__ import annotations

import contextlib
import dis
import sys

import torch
from torch.overrides import TorchFunctionMode

_OUT_OF_PLACE = {torch.Tensor.add_: torch.add, torch.Tensor.sub_: torch.sub,
                 torch.Tensor.mul_: torch.mul, torch.Tensor.div_: torch.div}
_AUGMENTED = {"+=", "-=", "*=", "/="}


def _python_holders(t: torch.Tensor) -> int:
    return sys.getrefcount(t)


def _calibrate() -> int:
    view = torch.empty(2).view(1, 2)  # alive while its base is counted, as in _rebindable
    return _python_holders(view._base)


_BASE_UNNAMED = _calibrate()  # what a view's base reports when no Python name holds it


def _rebindable(t) -> bool:
    """A plain tensor that is not a view, or a view whose base no Python name holds (e.g. the
    unnamed matmul result a Linear layer's 3-D output is a view of)."""
    if type(t) is not torch.Tensor:
        return False
    return not t._is_view() or _python_holders(t._base) == _BASE_UNNAMED


def _is_augmented_assignment(frame, cache: dict) -> bool:
    key = (frame.f_code, frame.f_lasti)
    found = cache.get(key)
    if found is None:
        found = False
        for ins in dis.get_instructions(frame.f_code):
            if ins.offset == frame.f_lasti:
                found = ins.opname.startswith("INPLACE_") or (ins.opname == "BINARY_OP" and ins.argrepr in _AUGMENTED)
                break
        cache[key] = found
    return found


class OutOfPlaceAugmentedAssignment(TorchFunctionMode):
    """TorchFunctionMode: `a += b` (and -=, *=, /=) on a tensor nothing else aliases returns `a + b`."""

    def __init__(self):
        super().__init__()
        self._sites: dict = {}
        self.rebound = 0  # how many in-place updates were made out of place (for tests and logs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out_of_place = _OUT_OF_PLACE.get(func)
        if (out_of_place is not None and args and _rebindable(args[0])
                and _is_augmented_assignment(sys._getframe(1), self._sites)):
            a = args[0]
            result = out_of_place(*args, **kwargs)
            if result.shape == a.shape and torch.can_cast(result.dtype, a.dtype):
                self.rebound += 1
                return result.to(a.dtype)
        return func(*args, **kwargs)


@contextlib.contextmanager
def augmented_assignments_out_of_place():
    """Inside: augmented assignments on unaliased tensors make new tensors (see module doc)."""
    mode = OutOfPlaceAugmentedAssignment()
    with mode:
        yield mode
