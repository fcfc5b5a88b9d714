"""Triton critic-loss kernels (kernels/diversity.py) under TRITON_INTERPRET=1 on CPU, through
`eor.ops.critic_loss` / `diversity_loss` with EOR_BACKEND=triton (dispatch + launcher + kernels),
against the autograd double-backward reference of eor.ref: value, q and every gradient.

The kernels run in float32 and the reference in float64. "Equal to fp32 rounding" is checked per
tensor as  max|triton − ref64| ≤ 8·max|torch32 − ref64| + 2e-5·max|ref64|,  where torch32 is the
float32 closed form on the CPU (itself checked against autograd in tests/test_ops_critic.py):
the bound follows the problem's own conditioning (gradients that cancel), and a wrong kernel
misses it by orders of magnitude.

Shapes (the interpreter is slow): N ∈ {2, 3, 7}, B ∈ {1, 7, 33}, widths 23, 18 and 31 (prime),
plus one case at hidden width 256 with N = 2, B = 7.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from eor import ops, ref
from eor.ops import backend
from eor.ops.critic_closed_form import closed_form_grads
from tests.test_ops_critic import NAMES, grads_of, make_critics

pytestmark = pytest.mark.interpret

# (S, A, H): input widths S + A of 23, 18 and 31, hidden widths 18, 31 and 23.
WIDTHS = [(17, 6, 18), (13, 5, 31), (26, 5, 23)]
ETAS = [1.0, 0.5, 0.0]
CASES = [
    (n, b, *WIDTHS[k % 3], ETAS[k % 3] if k % 4 else 1.0)
    for k, (n, b) in enumerate(itertools.product((2, 3, 7), (1, 7, 33)))
]


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("EOR_BACKEND", "triton")


def _assert_rounding(name: str, actual: Tensor, expected64: Tensor, torch32: Tensor) -> None:
    assert actual.dtype == torch.float32, name
    assert actual.shape == expected64.shape, name
    assert torch.isfinite(actual).all(), f"{name}: NaN/inf"
    err = float((actual.double() - expected64).abs().max()) if actual.numel() else 0.0
    own = float((torch32.double() - expected64).abs().max()) if actual.numel() else 0.0
    bound = 8.0 * own + 2e-5 * float(expected64.abs().max()) + 1e-30
    assert err <= bound, f"{name}: max error {err:.3g} > bound {bound:.3g} (torch fp32: {own:.3g})"


def _check_critic_loss(n: int, b: int, s: int, a: int, h: int, eta: float, edit=None) -> None:
    obs, act, target, weights, biases = make_critics(n, s, a, h, b, spec_init=False)
    if edit is not None:
        with torch.no_grad():
            edit(weights, biases)
    params64 = weights + biases
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, eta)
    expected_grads = grads_of(expected, params64)
    p32 = [p.detach().float().requires_grad_(True) for p in params64]
    obs32, act32, target32 = obs.float(), act.float(), target.float()
    torch32 = closed_form_grads(obs32, act32, target32, p32[:4], p32[4:], eta)
    assert torch32.weight_grads is not None and torch32.bias_grads is not None

    out = ops.critic_loss(obs32, act32, target32, p32[:4], p32[4:], eta)
    _assert_rounding(
        "loss", out.loss.detach(), expected.detach(), torch32.td + eta * torch32.diversity
    )
    _assert_rounding("q", out.q, ref.critic_q_ref(obs, act, weights, biases).detach(), torch32.q)
    grads = grads_of(out.loss, p32)
    for name, g, e, t in zip(
        NAMES, grads, expected_grads, torch32.weight_grads + torch32.bias_grads, strict=True
    ):
        _assert_rounding(name, g, e, t)


def test_dispatch_picks_triton_under_interpreter() -> None:
    obs = torch.randn(3, 4)
    assert backend._choose_backend("critic_loss", obs) == "triton"
    assert backend._choose_backend("diversity_loss", obs) == "triton"
    assert backend.load_kernels("diversity").INTERPRETED is True


@pytest.mark.parametrize("n,b,s,a,h,eta", CASES)
def test_critic_loss_kernels(n, b, s, a, h, eta) -> None:
    _check_critic_loss(n, b, s, a, h, eta)


def test_critic_loss_kernels_hidden_256() -> None:
    _check_critic_loss(2, 7, 17, 6, 256, 1.0)


@pytest.mark.parametrize("n,b,h", [(2, 7, 31), (3, 33, 18), (2, 70, 18)])  # 70: two row blocks
def test_diversity_loss_kernels(n, b, h) -> None:
    obs, act, _, weights, biases = make_critics(n, 17, 6, h, b)
    expected = ref.diversity_loss_ref(obs, act, weights, biases)
    expected_grads = grads_of(expected, weights + biases)
    p32 = [p.detach().float().requires_grad_(True) for p in weights + biases]
    torch32 = closed_form_grads(obs.float(), act.float(), None, p32[:4], p32[4:], 1.0)
    assert torch32.weight_grads is not None and torch32.bias_grads is not None
    value = ops.diversity_loss(obs.float(), act.float(), p32[:4], p32[4:])
    _assert_rounding("L_div", value.detach(), expected.detach(), torch32.diversity)
    grads = grads_of(value, p32)
    for name, g, e, t in zip(
        NAMES, grads, expected_grads, torch32.weight_grads + torch32.bias_grads, strict=True
    ):
        _assert_rounding(name, g, e, t)
    for g in grads[4:]:  # L_div's bias gradients are exactly 0
        assert torch.count_nonzero(g) == 0


def test_zero_action_gradients() -> None:
    """Critic 0: W1's action rows zero (v = 0, the 1e-10 in the norm); critic 2: every first
    layer unit dead (δ1 = 0); critic 1 partly dead in layer 2."""

    def edit(weights: list[Tensor], biases: list[Tensor]) -> None:
        weights[0][0, 7:] = 0.0
        biases[0][2] = -100.0
        biases[1][1, :9] = -100.0

    _check_critic_loss(3, 7, 7, 4, 18, 1.0, edit)


def test_float64_explicit_triton_raises() -> None:
    obs, act, target, weights, biases = make_critics(2, 3, 2, 4, 3)
    with pytest.raises(ops.BackendUnavailableError, match="float32"):
        ops.critic_loss(obs, act, target, weights, biases, 1.0)
