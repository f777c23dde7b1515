"""The out-of-place augmented-assignment mode (samplers/out_of_place.py) on pure-torch blocks."""

import contextlib

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from comfyui_inverse.samplers.out_of_place import augmented_assignments_out_of_place

pytestmark = pytest.mark.usefixtures("one_thread")


class ResidualBlock(torch.nn.Module):
    """Flux's pattern: the residual stream is updated with `+=` after LayerNorm saved it."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.norm = torch.nn.LayerNorm(width, elementwise_affine=False)
        self.lin = torch.nn.Linear(width, width, dtype=torch.float64)
        self.mlp = torch.nn.Linear(width, width, dtype=torch.float64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)

    def forward(self, x, out_of_place: bool = False):
        x = self.lin(x.flatten(0, 1)).view(x.shape)  # a view of an unnamed matmul result, like Flux's img
        if out_of_place:
            x = x + torch.tanh(self.lin(self.norm(x)))
            x = x * 1.5
            x = x - torch.sigmoid(self.mlp(self.norm(x)))
            return x / 3.0
        x += torch.tanh(self.lin(self.norm(x)))
        x *= 1.5
        x -= torch.sigmoid(self.mlp(self.norm(x)))
        x /= 3.0
        return x


def _stack(n=3, width=8):
    return torch.nn.ModuleList(ResidualBlock(width, seed=i) for i in range(n))


def _run(blocks, x, ckpt: bool = False, recompute_mode: bool = True, out_of_place: bool = False):
    def contexts():
        mode = augmented_assignments_out_of_place if recompute_mode else contextlib.nullcontext
        return mode(), mode()

    for block in blocks:
        if ckpt:
            x = checkpoint(block, x, out_of_place, use_reentrant=False, context_fn=contexts)
        else:
            x = block(x, out_of_place)
    return x


def _vjp(blocks, x, u, **kw):
    xg = x.clone().requires_grad_(True)
    with augmented_assignments_out_of_place() as mode:
        out = _run(blocks, xg, **kw)
    return out.detach(), torch.autograd.grad(out, xg, u)[0], mode.rebound


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x, u = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64) for _ in range(2))
    return _stack(), x, u


def test_plain_backprop_of_the_in_place_blocks_fails(problem):
    """The problem the mode solves: autograd refuses the in-place residual update."""
    blocks, x, u = problem
    with pytest.raises(RuntimeError, match="inplace"):
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(_run(blocks, xg), xg, u)


def test_mode_gives_the_out_of_place_models_values_and_gradient(problem):
    blocks, x, u = problem
    ref_out, ref_grad, _ = _vjp(blocks, x, u, out_of_place=True)
    out, grad, rebound = _vjp(blocks, x, u)
    assert rebound == 4 * len(blocks)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)
    with torch.no_grad():
        assert torch.equal(_run(blocks, x.clone()), ref_out)  # the in-place model itself, no grad


def test_checkpointed_blocks_equal_plain_backprop_under_the_mode(problem):
    blocks, x, u = problem
    _, plain, _ = _vjp(blocks, x, u)
    _, ckpt, _ = _vjp(blocks, x, u, ckpt=True)
    assert torch.equal(plain, ckpt)


def test_checkpoint_without_the_mode_in_recomputation_is_silently_wrong(problem):
    """Why the checkpoint needs the mode in its recomputation too: the recomputed block updates its own
    saved input in place; no error is raised (saved-tensor hooks skip the version check), the gradient
    is just wrong. This is also what an earlier checkpointed Flux VJP did."""
    blocks, x, u = problem
    _, plain, _ = _vjp(blocks, x, u)
    xg = x.clone().requires_grad_(True)
    with augmented_assignments_out_of_place():  # forward only; checkpoint recomputes without it
        out = _run(blocks, xg, ckpt=True, recompute_mode=False)
    wrong = torch.autograd.grad(out, xg, u)[0]
    assert (wrong - plain).norm() > 0.05 * plain.norm()


def test_gradient_satisfies_the_dot_product_identity(problem):
    blocks, x, u = problem
    _, grad, _ = _vjp(blocks, x, u, ckpt=True)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    eps = 1e-5
    with torch.no_grad():
        jv = (_run(blocks, x + eps * v, out_of_place=True) - _run(blocks, x - eps * v, out_of_place=True)) / (2 * eps)
    assert torch.isclose((grad * v).sum(), (u * jv).sum(), rtol=1e-7)


def test_explicit_in_place_calls_and_aliased_views_keep_in_place_semantics():
    with augmented_assignments_out_of_place() as mode:
        a = torch.zeros(3)
        alias = a
        a.add_(1)  # an explicit in-place call: its result is usually discarded
        a.mul_(2).sub_(1)
        base = torch.zeros(4)
        view = base[1:]
        view += 1  # must change base: a Python name still holds it
        rows = torch.zeros(2, 3)
        rows[:, 1:] += 2  # subscript target: the slice is written back either way
        param = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
        param += 1
    assert alias.tolist() == [1.0, 1.0, 1.0]
    assert base.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert rows.tolist() == [[0.0, 2.0, 2.0], [0.0, 2.0, 2.0]]
    assert type(param) is torch.nn.Parameter and param.tolist() == [1.0, 1.0]
    assert mode.rebound == 0


def test_augmented_assignment_rebinds_with_the_in_place_ops_dtype_and_errors():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, generator=g).to(torch.bfloat16)
    b = torch.randn(4, 5, generator=g)
    expected = a.clone()
    expected += b  # outside the mode: the real in-place op
    with augmented_assignments_out_of_place() as mode:
        before = a
        a += b
        with pytest.raises(RuntimeError):
            n = torch.zeros(3, dtype=torch.long)
            n += 1.5  # in place this is an error (float result into a long tensor); so it stays
        with pytest.raises(RuntimeError):
            small = torch.zeros(1, 5)
            small += torch.ones(3, 5)  # broadcasting would grow `small`: the in-place op refuses
    assert mode.rebound == 1
    assert a.dtype == torch.bfloat16 and torch.equal(a, expected)
    assert before is not a and not torch.equal(before, a)  # rebound: the old tensor is untouched
