"""eor.ops.ensemble_mlp / gaussian_ensemble_forward (fast torch path) against eor.ref.

Full forward, min over members, the gathered form (each row through its own member), the
fused log-variance bounding, and policy evaluation (E = 1).
"""

from __future__ import annotations

import pytest
import torch

from eor import ops, ref
from tests.helpers import assert_close_verbose


def _mlp(e: int, dims: list[int], dtype=torch.float32):
    weights = [
        torch.randn(e, i, o, dtype=dtype) / i**0.5 for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    biases = [torch.randn(e, o, dtype=dtype) * 0.1 for o in dims[1:]]
    return weights, biases


# (E, B, dims, activation, shared): the E/B/width matrix along a few diagonals.
CASES = [
    (1, 1, [23, 18, 31], "relu", True),
    (1, 257, [23, 256, 256, 256, 1], "relu", True),  # policy / single critic
    (2, 7, [18, 31, 23], "silu", False),
    (7, 256, [23, 200, 200, 200, 200, 36], "silu", True),  # dynamics model
    (7, 257, [31, 18, 18, 31], "silu", False),
    (10, 256, [23, 256, 256, 256, 1], "relu", True),  # critics
    (50, 7, [23, 256, 256, 1], "relu", True),
    (50, 257, [18, 23, 31], "none", False),
]


@pytest.mark.parametrize("e,b,dims,activation,shared", CASES)
def test_full_and_min_match_reference(e, b, dims, activation, shared) -> None:
    weights, biases = _mlp(e, dims)
    x = torch.randn((b, dims[0]) if shared else (e, b, dims[0]))
    w64 = [w.double() for w in weights]
    b64 = [v.double() for v in biases]
    expected = ref.ensemble_mlp_ref(x.double(), w64, b64, activation).float()
    out = ops.ensemble_mlp(x, weights, biases, activation)
    assert out.shape == (e, b, dims[-1])
    assert_close_verbose(out, expected, scale=4, name="full")
    low = ops.ensemble_mlp(x, weights, biases, activation, reduce="min")
    assert_close_verbose(low, expected.amin(0), scale=4, name="min over members")


@pytest.mark.parametrize(
    "e,b,dims,activation",
    [
        (1, 7, [23, 18, 31], "relu"),
        (2, 1, [18, 31, 23], "silu"),
        (7, 257, [23, 200, 200, 36], "silu"),
        (10, 256, [31, 256, 1], "relu"),
        (50, 257, [23, 18, 31], "relu"),
    ],
)
def test_gathered_equals_per_row_selection_of_full(e, b, dims, activation) -> None:
    weights, biases = _mlp(e, dims)
    x = torch.randn(b, dims[0])
    members = torch.randint(0, e, (b,))
    full = ops.ensemble_mlp(x, weights, biases, activation)  # [E, B, O]
    gathered = ops.ensemble_mlp(x, weights, biases, activation, members=members)
    assert gathered.shape == (b, dims[-1])
    picked = full[members, torch.arange(b)]
    assert_close_verbose(gathered, picked, scale=4, name="gathered vs full[members[b], b]")
    expected = ref.ensemble_mlp_ref(x, weights, biases, activation, members=members)
    assert_close_verbose(gathered, expected, scale=4, name="gathered vs ref")


def test_gathered_with_unused_members_int32_and_order() -> None:
    """Some members unused, unsorted members, int32 ids: the rows come back in caller order."""
    weights, biases = _mlp(7, [5, 9, 3])
    x = torch.randn(12, 5)
    members = torch.tensor([6, 2, 2, 6, 0, 6, 2, 0, 0, 6, 2, 6], dtype=torch.int32)
    out = ops.ensemble_mlp(x, weights, biases, "silu", members=members)
    for row in range(12):
        m = int(members[row])
        h = x[row]
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = h @ w[m] + b[m]
            if layer < len(weights) - 1:
                h = torch.nn.functional.silu(h)
        assert_close_verbose(out[row], h, name=f"row {row}")


@pytest.mark.parametrize("members_kind", [None, "gathered"])
def test_gaussian_forward_matches_reference(members_kind) -> None:
    e, b, s = 7, 33, 17
    d = s + 1
    weights, biases = _mlp(e, [s + 6, 200, 200, 2 * d], torch.float32)
    x = torch.randn(b, s + 6)
    max_lv = torch.full((d,), 0.5) + 0.1 * torch.randn(d)
    min_lv = torch.full((d,), -10.0) + 0.1 * torch.randn(d)
    members = torch.randint(0, 5, (b,)) if members_kind else None
    mean, logvar = ops.gaussian_ensemble_forward(
        x, weights, biases, max_lv, min_lv, members=members
    )
    emean, elogvar = ref.gaussian_ensemble_forward_ref(
        x, weights, biases, max_lv, min_lv, members=members
    )
    shape = (b, d) if members_kind else (e, b, d)
    assert mean.shape == shape and logvar.shape == shape
    assert_close_verbose(mean, emean, scale=4, name="mean")
    assert_close_verbose(logvar, elogvar, scale=4, name="logvar")
    assert bool((logvar <= max_lv).all()) and bool((logvar >= min_lv).all())


def test_gaussian_bounding_extremes() -> None:
    """Raw log-variances far outside the bounds are squashed to them, without inf/NaN."""
    d = 3
    weights = [torch.zeros(1, 2, 2 * d)]
    biases = [torch.tensor([[0.0, 0.0, 0.0, 1e4, -1e4, 0.0]])]
    max_lv, min_lv = torch.full((d,), 0.5), torch.full((d,), -10.0)
    mean, logvar = ops.gaussian_ensemble_forward(torch.zeros(4, 2), weights, biases, max_lv, min_lv)
    expected = ref.bound_logvar_ref(biases[0][:, d:].expand(4, -1), max_lv, min_lv)
    assert_close_verbose(logvar[0], expected, name="bounded")
    assert torch.equal(mean, torch.zeros(1, 4, d))


def test_policy_evaluation_single_member() -> None:
    weights, biases = _mlp(1, [17, 256, 256, 12])
    x = torch.randn(5, 17)
    out = ops.ensemble_mlp(x, weights, biases, "relu")
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.nn.functional.linear(h, w[0].t(), b[0])
        if layer < 2:
            h = torch.relu(h)
    assert_close_verbose(out[0], h, name="E=1 MLP")


def test_no_autograd_graph() -> None:
    weights, biases = _mlp(2, [3, 4, 1])
    for w in weights:
        w.requires_grad_(True)
    out = ops.ensemble_mlp(torch.randn(5, 3), weights, biases)
    assert not out.requires_grad


def test_bad_inputs() -> None:
    weights, biases = _mlp(3, [4, 5, 2])
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="reduce must be"):
        ops.ensemble_mlp(x, weights, biases, reduce="max")
    with pytest.raises(ValueError, match="activation must be"):
        ops.ensemble_mlp(x, weights, biases, "gelu")
    with pytest.raises(ValueError, match="members must lie in"):
        ops.ensemble_mlp(x, weights, biases, members=torch.tensor([0, 1, 2, 3, 0, 0]))
    with pytest.raises(ValueError, match="members must be \\[B\\]"):
        ops.ensemble_mlp(x, weights, biases, members=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="members must be int64"):
        ops.ensemble_mlp(x, weights, biases, members=torch.zeros(6))
    with pytest.raises(ValueError, match="with members, x must be"):
        ops.ensemble_mlp(x.expand(3, -1, -1), weights, biases, members=torch.zeros(6).long())
    with pytest.raises(ValueError, match="layer 1"):
        ops.ensemble_mlp(x, [weights[0], weights[0]], biases)
    with pytest.raises(ValueError, match="equal length"):
        ops.ensemble_mlp(x, weights, biases[:1])
    with pytest.raises(ValueError, match="members .* and reduce"):
        ops.ensemble_mlp(x, weights, biases, members=torch.zeros(6).long(), reduce="min")
    with pytest.raises(ValueError, match="even width"):
        ops.gaussian_ensemble_forward(x, [weights[0]], [biases[0]], torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="max_logvar must be"):
        ops.gaussian_ensemble_forward(x, weights, biases, torch.zeros(2), torch.zeros(1))
