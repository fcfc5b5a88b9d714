"""Triton kernels (kernels/ensemble_linear.py, kernels/ensemble_mlp.py) under
TRITON_INTERPRET=1 on CPU, against eor.ref: outputs and every gradient.

Shapes follow the issue: E in {1, 2, 7}, B in {1, 7, 33}, widths 23, 18 and 31 (prime), plus
one case at width 200/256 with small E and B. Most cases go through the public ops with
EOR_BACKEND=triton (dispatch, custom op and kernel together); a few call the launchers
directly.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from eor import ops, ref
from eor.ops import backend
from tests.helpers import assert_close_verbose

pytestmark = pytest.mark.interpret

ACTS = ("none", "relu", "silu")
WIDTHS = [(23, 18), (18, 31), (31, 23)]
LINEAR_CASES = [
    (e, b, *WIDTHS[n % 3], n % 2 == 0, ACTS[n % 3] if n % 4 else ACTS[(n + 1) % 3])
    for n, (e, b) in enumerate(itertools.product((1, 2, 7), (1, 7, 33)))
] + [(2, 7, 200, 256, True, "relu"), (1, 33, 256, 200, False, "silu")]


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("EOR_BACKEND", "triton")


def test_dispatch_picks_triton_under_interpreter() -> None:
    x = torch.randn(3, 4)
    assert backend._choose_backend("ensemble_linear", x) == "triton"
    assert backend._choose_backend("ensemble_mlp", x) == "triton"
    assert backend.load_kernels("ensemble_linear").INTERPRETED is True


@pytest.mark.parametrize("e,b,i,o,shared,activation", LINEAR_CASES)
def test_linear_forward_and_gradients(e, b, i, o, shared, activation) -> None:
    x = torch.randn((b, i) if shared else (e, b, i))
    w = torch.randn(e, i, o) / i**0.5
    bias = torch.randn(e, o) * 0.1
    leaves = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    y = ops.ensemble_linear(*leaves, activation)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    leaves_ref = [t.clone().requires_grad_(True) for t in (x, w, bias)]
    y_ref = ref.ensemble_linear_ref(*leaves_ref, activation)
    y_ref.backward(grad_out)
    scale = max(1.0, max(i, o) / 32)
    assert_close_verbose(y, y_ref, scale=scale, name="y")
    for name, leaf, leaf_ref in zip(("dx", "dW", "db"), leaves, leaves_ref, strict=True):
        assert_close_verbose(leaf.grad, leaf_ref.grad, scale=scale * 4, name=name)


@pytest.mark.parametrize(
    "needs", [(True, False, False), (False, True, False), (False, False, True)]
)
def test_linear_partial_gradients(needs) -> None:
    """The Triton autograd path with only some inputs requiring grad: the backward launcher
    computes just those (the others stay None)."""
    x, w, bias = torch.randn(2, 7, 18), torch.randn(2, 18, 23), torch.randn(2, 23)
    leaves = [t.clone().requires_grad_(n) for t, n in zip((x, w, bias), needs, strict=True)]
    y = ops.ensemble_linear(*leaves, "silu")
    y.sum().backward()
    leaves_ref = [t.clone().requires_grad_(n) for t, n in zip((x, w, bias), needs, strict=True)]
    ref.ensemble_linear_ref(*leaves_ref, "silu").sum().backward()
    for leaf, leaf_ref, need in zip(leaves, leaves_ref, needs, strict=True):
        if need:
            assert_close_verbose(leaf.grad, leaf_ref.grad, scale=4, name="grad")
        else:
            assert leaf.grad is None


def _mlp(e: int, dims: list[int]):
    weights = [torch.randn(e, i, o) / i**0.5 for i, o in zip(dims[:-1], dims[1:], strict=True)]
    biases = [torch.randn(e, o) * 0.1 for o in dims[1:]]
    return weights, biases


# NUM_HID (hidden-to-hidden layers) 0, 1, 2, 3 exercise every path of the fused kernel.
MLP_CASES = [
    (1, 1, [23, 18, 31], "relu"),
    (1, 33, [18, 31, 31, 1], "relu"),
    (2, 7, [31, 23, 23, 23, 18], "silu"),
    (2, 33, [23, 18, 18, 18, 18, 36], "silu"),
    (7, 1, [18, 23, 23, 1], "relu"),
    (7, 7, [23, 31, 31, 31, 31, 36], "silu"),
    (7, 33, [31, 18, 23], "none"),
]


@pytest.mark.parametrize("e,b,dims,activation", MLP_CASES)
def test_mlp_full_min_gathered(monkeypatch, e, b, dims, activation) -> None:
    # Small batches: the min runs fused in the kernel for odd E, as full forward + amin else.
    fused_min_blocks = 0 if e % 2 else 10**9
    monkeypatch.setattr(
        backend.load_kernels("ensemble_mlp"), "MIN_ROW_BLOCKS_FOR_FUSED_MIN", fused_min_blocks
    )
    weights, biases = _mlp(e, dims)
    x = torch.randn(b, dims[0])
    full = ops.ensemble_mlp(x, weights, biases, activation)
    assert_close_verbose(full, ref.ensemble_mlp_ref(x, weights, biases, activation), name="full")
    low = ops.ensemble_mlp(x, weights, biases, activation, reduce="min")
    assert_close_verbose(low, ref.ensemble_mlp_ref(x, weights, biases, activation).amin(0),
                         name="min")  # fmt: skip
    members = torch.randint(0, e, (b,))
    gathered = ops.ensemble_mlp(x, weights, biases, activation, members=members)
    assert_close_verbose(gathered, full[members, torch.arange(b)], name="gathered vs full")
    xe = torch.randn(e, b, dims[0])
    assert_close_verbose(
        ops.ensemble_mlp(xe, weights, biases, activation),
        ref.ensemble_mlp_ref(xe, weights, biases, activation),
        name="per-member input",
    )


@pytest.mark.parametrize("gathered", [False, True])
def test_gaussian_forward_width_200(gathered: bool) -> None:
    """The dynamics shape at small E and B: 23 -> 200 x 4 (SiLU) -> 2·18, bounding fused."""
    e, b, d = 2, 7, 18
    weights, biases = _mlp(e, [23, 200, 200, 200, 200, 2 * d])
    x = torch.randn(b, 23)
    max_lv = 0.5 + 0.1 * torch.randn(d)
    min_lv = -10.0 + 0.1 * torch.randn(d)
    biases[-1][:, d:] += torch.linspace(-15, 5, d)  # push raw log-variances past both bounds
    members = torch.tensor([1, 0, 1, 1, 0, 0, 1]) if gathered else None
    mean, logvar = ops.gaussian_ensemble_forward(
        x, weights, biases, max_lv, min_lv, members=members
    )
    emean, elogvar = ref.gaussian_ensemble_forward_ref(
        x, weights, biases, max_lv, min_lv, members=members
    )
    assert_close_verbose(mean, emean, scale=4, name="mean")
    assert_close_verbose(logvar, elogvar, scale=4, name="logvar")


def test_gathered_block_table_with_empty_members() -> None:
    """Members with no rows, and a segment longer than one block (BLOCK_M = 32)."""
    weights, biases = _mlp(7, [18, 23, 23, 31])
    members = torch.tensor([5] * 40 + [0] * 3 + [5] * 2)[torch.randperm(45)]
    x = torch.randn(45, 18)
    out = ops.ensemble_mlp(x, weights, biases, "silu", members=members)
    expected = ref.ensemble_mlp_ref(x, weights, biases, "silu", members=members)
    assert_close_verbose(out, expected, name="gathered")


def test_layerwise_fallback_for_unfused_shapes() -> None:
    """Unequal hidden widths and a single layer go layer by layer through the linear kernel."""
    mlp_kernels = backend.load_kernels("ensemble_mlp")
    weights, biases = _mlp(2, [18, 23, 31, 5])
    assert not mlp_kernels.fused_supported(weights)
    x = torch.randn(7, 18)
    members = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    for kwargs in ({}, {"reduce": "min"}, {"members": members}):
        out = ops.ensemble_mlp(x, weights, biases, "relu", **kwargs)
        assert_close_verbose(out, ref.ensemble_mlp_ref(x, weights, biases, "relu", **kwargs),
                             name=str(kwargs))  # fmt: skip
    out = ops.ensemble_mlp(x, weights[:1], biases[:1], "relu")
    assert_close_verbose(out, ref.ensemble_mlp_ref(x, weights[:1], biases[:1]), name="1 layer")


def test_custom_op_opcheck_on_the_triton_path() -> None:
    """Fake implementations and autograd registration agree with the Triton implementations."""
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(2, 7, 3, requires_grad=True)
    b = torch.randn(2, 3, requires_grad=True)
    torch.library.opcheck(
        torch.ops.eor.ensemble_linear.default,
        (x, w, b, "silu"),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    weights = [torch.randn(2, 7, 16), torch.randn(2, 16, 4)]
    biases = [torch.randn(2, 16), torch.randn(2, 4)]
    torch.library.opcheck(
        torch.ops.eor.gaussian_ensemble_forward.default,
        (x.detach(), weights, biases, torch.zeros(2), torch.full((2,), -5.0),
         torch.tensor([1, 0, 1, 1, 0]), "silu"),
        test_utils=("test_schema", "test_faketensor"),
    )  # fmt: skip
