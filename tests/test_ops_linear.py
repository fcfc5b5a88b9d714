"""eor.ops.ensemble_linear (fast torch path) against eor.ref.ensemble_linear_ref.

Forward and every gradient, on the issue's shape matrix: E in {1, 2, 7, 10, 50}, B in
{1, 7, 256, 257}, widths 23, 18, 31 (prime), 200, 256, shared and per-member inputs. The small
widths run on the whole E × B grid; the large widths on a diagonal through it, so the file
stays fast. The reference runs in float64 on the same values.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from eor import ops, ref
from tests.helpers import assert_close_verbose

ACTS = ("none", "relu", "silu")
E_VALUES = (1, 2, 7, 10, 50)
B_VALUES = (1, 7, 256, 257)

_SMALL = [
    (e, b, i, o, shared, ACTS[n % 3])
    for n, (e, b, (i, o), shared) in enumerate(
        itertools.product(E_VALUES, B_VALUES, [(23, 18), (18, 31)], (True, False))
    )
]
_LARGE = [
    (1, 257, 200, 256, True, "relu"),
    (2, 256, 256, 200, False, "silu"),
    (7, 256, 23, 200, True, "silu"),
    (7, 257, 200, 200, False, "silu"),
    (10, 7, 256, 256, True, "relu"),
    (10, 256, 256, 256, True, "relu"),
    (50, 1, 200, 31, False, "none"),
    (50, 257, 23, 256, True, "relu"),
]


def _inputs(e: int, b: int, i: int, o: int, shared: bool, dtype=torch.float32):
    x = torch.randn((b, i) if shared else (e, b, i), dtype=dtype)
    w = torch.randn(e, i, o, dtype=dtype) / i**0.5
    bias = torch.randn(e, o, dtype=dtype) * 0.1
    return x, w, bias


def _check_against_ref(e, b, i, o, shared, activation, dtype=torch.float64) -> None:
    """Output and dx, dW, db against the reference evaluated in float64 on the same values.

    The main matrix runs in float64: in float32 a pre-activation within rounding of 0 can
    take the other side of the ReLU kink than in float64, which flips a whole gradient term.
    """
    x, w, bias = _inputs(e, b, i, o, shared, dtype)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    y = ops.ensemble_linear(*leaves, activation=activation)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)

    leaves64 = [t.double().requires_grad_(True) for t in (x, w, bias)]
    y64 = ref.ensemble_linear_ref(*leaves64, activation=activation)
    y64.backward(grad_out.double())

    assert y.shape == (e, b, o) and y.dtype == dtype
    scale = max(1.0, (max(i, o, b) / 64) ** 0.5)  # rounding error grows with the summed length
    assert_close_verbose(y, y64.to(dtype), scale=scale, name="y")
    for name, leaf, leaf64 in zip(("dx", "dW", "db"), leaves, leaves64, strict=True):
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape, name
        assert_close_verbose(leaf.grad, leaf64.grad.to(dtype), scale=scale * 4, name=name)


@pytest.mark.parametrize("e,b,i,o,shared,activation", _SMALL)
def test_small_widths_full_grid(e, b, i, o, shared, activation) -> None:
    _check_against_ref(e, b, i, o, shared, activation)


@pytest.mark.parametrize("e,b,i,o,shared,activation", _LARGE)
def test_large_widths(e, b, i, o, shared, activation) -> None:
    _check_against_ref(e, b, i, o, shared, activation)


@pytest.mark.parametrize(
    "e,b,i,o,shared,activation",
    [
        (7, 257, 23, 200, True, "silu"),
        (10, 256, 256, 256, False, "none"),
        (2, 7, 18, 31, True, "silu"),
    ],
)
def test_float32(e, b, i, o, shared, activation) -> None:
    _check_against_ref(e, b, i, o, shared, activation, torch.float32)


@pytest.mark.parametrize("activation", ACTS)
def test_float64_exact_to_rounding(activation: str) -> None:
    x, w, bias = _inputs(2, 3, 5, 4, True, torch.float64)
    leaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    assert torch.autograd.gradcheck(
        lambda a, b_, c: ops.ensemble_linear(a, b_, c, activation), leaves, eps=1e-6, atol=1e-6
    )


def test_shared_input_is_not_materialised() -> None:
    """The shared-x gradient is Σ_e of the per-member gradients (the input is read, not copied)."""
    x, w, bias = _inputs(4, 5, 7, 3, True)
    xs = x.clone().requires_grad_(True)
    ops.ensemble_linear(xs, w, bias, "silu").sum().backward()
    xe = x.unsqueeze(0).repeat(4, 1, 1).requires_grad_(True)
    ops.ensemble_linear(xe, w, bias, "silu").sum().backward()
    assert_close_verbose(xs.grad, xe.grad.sum(0), name="dx shared vs summed")


def test_only_requested_gradients() -> None:
    x, w, bias = _inputs(2, 5, 7, 3, False)
    w.requires_grad_(True)
    ops.ensemble_linear(x, w, bias, "relu").sum().backward()
    assert x.grad is None and bias.grad is None and w.grad is not None


def test_relu_gradient_at_zero_matches_autograd() -> None:
    """Pre-activations exactly 0 get zero gradient, as torch.relu's backward gives."""
    x = torch.zeros(1, 4, 3)
    w = torch.ones(1, 3, 2, requires_grad=True)
    bias = torch.zeros(1, 2, requires_grad=True)
    ops.ensemble_linear(x, w, bias, "relu").sum().backward()
    assert torch.equal(bias.grad, torch.zeros(1, 2))


@pytest.mark.parametrize(
    "shapes,match",
    [
        (((5, 7), (2, 7, 3), (2, 3)), None),  # valid, sanity
        (((5, 6), (2, 7, 3), (2, 3)), "x must be"),
        (((3, 5, 7), (2, 7, 3), (2, 3)), "x must be"),
        (((5, 7), (7, 3), (2, 3)), "weight must be"),
        (((5, 7), (2, 7, 3), (3,)), "bias must be"),
        (((1, 2, 5, 7), (2, 7, 3), (2, 3)), "x must be"),
    ],
)
def test_bad_shapes(shapes, match) -> None:
    tensors = [torch.randn(s) for s in shapes]
    if match is None:
        assert ops.ensemble_linear(*tensors).shape == (2, 5, 3)
        return
    with pytest.raises(ValueError, match=match):
        ops.ensemble_linear(*tensors)


def test_bad_activation_and_dtype() -> None:
    x, w, bias = _inputs(2, 3, 4, 5, True)
    with pytest.raises(ValueError, match="activation must be one of"):
        ops.ensemble_linear(x, w, bias, "tanh")
    with pytest.raises(ValueError, match="weight dtype"):
        ops.ensemble_linear(x, w.double(), bias)
    with pytest.raises(ValueError, match="floating-point"):
        ops.ensemble_linear(x.long(), w.long(), bias.long())
