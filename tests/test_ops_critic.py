"""The RAVL critic loss (TD + η·EDAC diversity) of eor.ops and its closed-form torch path
(eor.ops.critic_closed_form), against the autograd double-backward reference of eor.ref and by hand.

Tolerances: float64 results must equal the reference to 1e-10 relative (rounding only: the
closed form is exact algebra); float32 results must be within 1e-4 relative / 1e-5 of the
tensor's largest magnitude of the float64 reference, the same bound the float32 reference
itself meets (checked alongside).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from eor import ops, ref
from eor.ops import backend
from eor.ops.critic_closed_form import closed_form_grads
from tests.helpers import assert_close_verbose


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EOR_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def make_critics(
    n: int,
    s: int,
    a: int,
    h: int,
    b: int,
    dtype: torch.dtype = torch.float64,
    spec_init: bool = False,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor], list[Tensor]]:
    """Random critics (leaf tensors requiring grad) and a batch. spec_init: docs/algorithm.md §3's init
    (kaiming-uniform(a=√5) ⇒ U(±1/√fan_in), biases 0.1, last layer U(±3e-3))."""
    dims = [s + a, h, h, h, 1]
    weights, biases = [], []
    for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if spec_init:
            bound = 3e-3 if layer == 3 else 1.0 / math.sqrt(fan_in)
            w = (torch.rand(n, fan_in, fan_out, dtype=dtype) * 2 - 1) * bound
            bias = torch.full((n, fan_out), 0.1, dtype=dtype)
            if layer == 3:
                bias = (torch.rand(n, fan_out, dtype=dtype) * 2 - 1) * bound
        else:
            w = torch.randn(n, fan_in, fan_out, dtype=dtype) / math.sqrt(fan_in)
            bias = 0.1 * torch.randn(n, fan_out, dtype=dtype)
        weights.append(w.requires_grad_(True))
        biases.append(bias.requires_grad_(True))
    obs = torch.randn(b, s, dtype=dtype)
    act = torch.rand(b, a, dtype=dtype) * 2 - 1
    target = torch.randn(b, dtype=dtype)
    return obs, act, target, weights, biases


def grads_of(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    """d loss / d params, zeros where a parameter is unused (b4 in the diversity term)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


NAMES = ["dW1", "dW2", "dW3", "dW4", "db1", "db2", "db3", "db4"]


def assert_grads_close(
    actual: list[Tensor], expected: list[Tensor], rtol: float, atol_rel: float
) -> None:
    for name, g, e in zip(NAMES, actual, expected, strict=True):
        scale = float(e.abs().max()) if e.numel() else 0.0
        assert_close_verbose(g, e, rtol=rtol, atol=atol_rel * max(scale, 1e-30), name=name)


# ----------------------------------------------------------------------------- vs autograd


@pytest.mark.parametrize(
    "n,s,a,h,b",
    [(2, 3, 2, 5, 1), (2, 17, 6, 16, 7), (3, 5, 4, 23, 33), (7, 11, 3, 18, 9), (10, 4, 6, 13, 64)],
)
@pytest.mark.parametrize("eta", [0.0, 1.0, 0.37])
def test_matches_autograd_float64(n, s, a, h, b, eta) -> None:
    obs, act, target, weights, biases = make_critics(n, s, a, h, b)
    params = weights + biases
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, eta)
    expected_grads = grads_of(expected, params)
    out = ops.critic_loss(obs, act, target, weights, biases, eta)
    assert out.loss.shape == () and out.q.shape == (n, b)
    assert_close_verbose(out.loss, expected, rtol=1e-10, atol=0, name="loss")
    assert_close_verbose(
        out.q, ref.critic_q_ref(obs, act, weights, biases), rtol=1e-10, atol=1e-12, name="q"
    )
    td = ((out.q - target) ** 2).mean(dim=1).sum()
    assert_close_verbose(out.td, td, rtol=1e-10, atol=0, name="td")
    div = ref.diversity_loss_ref(obs, act, weights, biases) if eta > 0 else torch.zeros(())
    assert_close_verbose(
        out.diversity, div.to(out.diversity), rtol=1e-10, atol=1e-12, name="diversity"
    )
    assert_grads_close(grads_of(out.loss, params), expected_grads, rtol=1e-10, atol_rel=1e-12)


@pytest.mark.parametrize("n,h,b", [(2, 16, 7), (3, 23, 33), (10, 32, 64)])
def test_diversity_loss_matches_autograd_float64(n, h, b) -> None:
    obs, act, _, weights, biases = make_critics(n, 17, 6, h, b)
    params = weights + biases
    expected = ref.diversity_loss_ref(obs, act, weights, biases)
    value = ops.diversity_loss(obs, act, weights, biases)
    assert_close_verbose(value, expected, rtol=1e-10, atol=0, name="L_div")
    grads = grads_of(value, params)
    assert_grads_close(grads, grads_of(expected, params), rtol=1e-10, atol_rel=1e-12)
    # Masks are piecewise constant: every bias gradient of L_div is exactly zero; so is the
    # gradient of W1's observation rows (v = δ1 W1aᵀ reads only the action rows).
    for g in grads[4:]:
        assert torch.count_nonzero(g) == 0
    assert torch.count_nonzero(grads[0][:, :17]) == 0
    assert torch.count_nonzero(grads[0][:, 17:]) > 0


@pytest.mark.parametrize("with_target", [True, False])
@pytest.mark.parametrize("zero_head", [False, True])
def test_zero_head_weights_match_autograd(with_target, zero_head) -> None:
    """dW3 = M ⊙ w4ᵀ and dw4 = Σ_j W3 ⊙ M share M: a zero (or tiny) head weight must still give
    autograd's gradients, never a NaN (guards any rewrite that divides by w4)."""
    obs, act, target, weights, biases = make_critics(3, 7, 4, 12, 19)
    if zero_head:
        with torch.no_grad():
            weights[3][1, 5, 0] = 0.0  # critic 1, hidden unit 5: the m3 path
            weights[3][2, 0, 0] = 1e-200  # below the threshold too
    params = weights + biases
    tgt = target if with_target else None
    if with_target:
        expected = ref.critic_loss_ref(obs, act, target, weights, biases, 0.8)
    else:
        expected = 0.8 * ref.diversity_loss_ref(obs, act, weights, biases)
    out = closed_form_grads(
        obs, act, tgt, [w.detach() for w in weights], [b.detach() for b in biases], 0.8
    )
    assert out.weight_grads is not None and out.bias_grads is not None
    assert_grads_close(out.weight_grads + out.bias_grads, grads_of(expected, params), 1e-10, 1e-12)
    assert torch.isfinite(out.weight_grads[3]).all()


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_float32_to_rounding(eta) -> None:
    """float32 closed form vs the float64 reference, at docs/algorithm.md §3's init and halfcheetah dims."""
    obs, act, target, weights, biases = make_critics(5, 17, 6, 64, 48, spec_init=True)
    params64 = weights + biases
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, eta)
    expected_grads = grads_of(expected, params64)
    p32 = [p.detach().float().requires_grad_(True) for p in params64]
    obs32, act32, target32 = obs.float(), act.float(), target.float()
    out = ops.critic_loss(obs32, act32, target32, p32[:4], p32[4:], eta)
    assert out.loss.dtype == torch.float32
    assert_close_verbose(out.loss, expected.float(), rtol=1e-5, atol=0, name="loss")
    assert_grads_close(grads_of(out.loss, p32), [g.float() for g in expected_grads], 1e-4, 1e-5)
    # The float32 reference meets the same bound (the bound is fp32 rounding, not slack).
    ref32 = ref.critic_loss_ref(obs32, act32, target32, p32[:4], p32[4:], eta)
    assert_grads_close(grads_of(ref32, p32), [g.float() for g in expected_grads], 1e-4, 1e-5)


# ----------------------------------------------------------------------------- by hand


def test_hand_checked_tiny_case() -> None:
    """N=2, one hidden unit per layer, every unit active, x = 0 so h1 = b1.

    With W2 = W3 = W4 = 1, ∇ₐQ_i = the action rows of W1_i: v_1 = (3, 4), v_2 = (1, 0), so
    g_1 = (0.6, 0.8), g_2 = (1, 0) and L_div = 2⟨g1, g2⟩ / (N − 1) = 1.2 for every row.
    ∂L/∂v_1 = 2 (g_2 − ⟨g_1, g_2⟩ g_1) / ‖v_1‖ = (0.256, −0.192),
    ∂L/∂v_2 = 2 (g_1 − ⟨g_1, g_2⟩ g_2) / ‖v_2‖ = (0, 1.6) (each row contributes 1/B).
    g is invariant to positive scalings of W2, W3, W4, so their L_div gradients are 0.
    Q_i = b1 = 1 for both, y = 3: L_td = 2·(1 − 3)² = 8, ∂L_td/∂b4_i = 2(1 − 3) = −4,
    ∂L_td/∂W4_i = h3 · (−4) = −4, ∂L_td/∂W3_i = h2 · w4 · (−4) = −4, same for W2 and b1..b3.
    """
    dt = torch.float64
    b = 3
    obs, act = torch.zeros(b, 1, dtype=dt), torch.zeros(b, 2, dtype=dt)
    w1 = torch.tensor([[[0.5], [3.0], [4.0]], [[-2.0], [1.0], [0.0]]], dtype=dt)  # [2, 3, 1]
    ones = torch.ones(2, 1, 1, dtype=dt)
    weights = [w1, ones.clone(), ones.clone(), ones.clone()]
    biases = [torch.ones(2, 1, dtype=dt)] + [torch.zeros(2, 1, dtype=dt) for _ in range(3)]
    params = [p.requires_grad_(True) for p in weights + biases]
    target = torch.full((b,), 3.0, dtype=dt)

    div = ops.diversity_loss(obs, act, weights, biases)
    assert div.item() == pytest.approx(1.2, rel=1e-9)
    g = grads_of(div, params)
    assert g[0][0, 1:, 0].tolist() == pytest.approx([0.256, -0.192], rel=1e-9)
    assert g[0][1, 1:, 0].tolist() == pytest.approx([0.0, 1.6], abs=1e-9)
    assert g[0][:, 0].abs().max().item() == 0.0  # the obs row
    for t in g[1:]:
        assert t.abs().max().item() < 1e-9

    out = ops.critic_loss(obs, act, target, weights, biases, eta=0.5)
    assert out.q.tolist() == [[1.0] * b, [1.0] * b]
    assert out.td.item() == pytest.approx(8.0)
    assert out.loss.item() == pytest.approx(8.0 + 0.5 * 1.2)
    g = grads_of(out.loss, params)
    for layer in (1, 2, 3):  # W2, W3, W4: TD only
        assert g[layer].flatten().tolist() == pytest.approx([-4.0, -4.0])
    for bias in range(4, 8):
        assert g[bias].flatten().tolist() == pytest.approx([-4.0, -4.0])
    assert g[0][0, 1:, 0].tolist() == pytest.approx([0.128, -0.096])  # x = 0: TD adds nothing
    assert g[0][1, 1:, 0].tolist() == pytest.approx([0.0, 0.8], abs=1e-9)  # 1e-10 in the norm


# ----------------------------------------------------------------------------- edge cases


def _compare_to_ref(obs, act, target, weights, biases, eta) -> list[Tensor]:
    params = weights + biases
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, eta)
    out = ops.critic_loss(obs, act, target, weights, biases, eta)
    assert_close_verbose(out.loss, expected, rtol=1e-10, atol=1e-12, name="loss")
    grads = grads_of(out.loss, params)
    assert_grads_close(grads, grads_of(expected, params), rtol=1e-10, atol_rel=1e-12)
    for name, t in zip(NAMES, grads, strict=True):
        assert torch.isfinite(t).all(), name
    return grads


def test_zero_action_gradient_from_zero_action_rows() -> None:
    """W1's action rows zero for critic 0: ∇ₐQ_0 = 0 exactly, g_0 = 0 / (0 + 1e-10) = 0. The
    norm's backward is 0 there, and ∂L/∂v_0 = U_0 / 1e-10 (huge, as autograd gives)."""
    obs, act, target, weights, biases = make_critics(3, 4, 3, 8, 5)
    with torch.no_grad():
        weights[0][0, 4:] = 0.0
    grads = _compare_to_ref(obs, act, target, weights, biases, 1.0)
    assert grads[0][0, 4:].abs().max() > 1e6  # the 1/1e-10 factor reaches W1's action rows


def test_zero_action_gradient_from_dead_relus() -> None:
    """Critic 1 has every first-layer ReLU dead (b1 ≪ 0): δ1 = 0, v = 0, and every diversity
    gradient through it is 0; rows where only some critics are dead mix both cases."""
    obs, act, target, weights, biases = make_critics(3, 4, 3, 8, 6)
    with torch.no_grad():
        biases[0][1] = -100.0
        biases[1][2, :4] = -100.0  # critic 2: half of layer 2 dead
    out = closed_form_grads(
        obs, act, None, [w.detach() for w in weights], [b.detach() for b in biases], 1.0
    )
    assert out.weight_grads is not None
    for g in out.weight_grads:
        assert torch.count_nonzero(g[1]) == 0
    _compare_to_ref(obs, act, target, weights, biases, 1.0)


def test_some_rows_dead() -> None:
    """Rows whose actions push critic 0 past its last live unit: a per-row zero gradient."""
    obs, act, target, weights, biases = make_critics(2, 2, 2, 1, 8)
    with torch.no_grad():
        act[:4] = 50.0 * torch.sign(weights[0][0, 2:, 0]) * -1.0  # pre1 of critic 0 ≪ 0
    _compare_to_ref(obs, act, target, weights, biases, 1.0)


def test_identical_critics() -> None:
    """N copies of one critic: g_i all equal, L_div = N per row (Σ_{i≠j} 1 / (N − 1))."""
    obs, act, target, weights, biases = make_critics(1, 5, 3, 8, 4)
    weights = [w.detach().repeat(4, 1, 1).requires_grad_(True) for w in weights]
    biases = [b.detach().repeat(4, 1).requires_grad_(True) for b in biases]
    assert ops.diversity_loss(obs, act, weights, biases).item() == pytest.approx(
        4.0, rel=1e-6
    )  # 1 − O(1e-10/‖v‖)
    _compare_to_ref(obs, act, target, weights, biases, 0.5)


# ----------------------------------------------------------------------------- semantics


def test_eta_zero_is_the_td_loss() -> None:
    obs, act, target, weights, biases = make_critics(1, 3, 2, 6, 5)  # N = 1 is fine at eta 0
    out = ops.critic_loss(obs, act, target, weights, biases, 0.0)
    assert out.diversity.item() == 0.0
    assert out.loss.item() == pytest.approx(out.td.item(), rel=1e-12)
    q = ref.critic_q_ref(obs, act, weights, biases)
    td = ((q - target) ** 2).mean(dim=1).sum()
    params = weights + biases
    assert_grads_close(grads_of(out.loss, params), grads_of(td, params), rtol=1e-10, atol_rel=1e-12)


def test_backward_scales_and_inputs_get_no_gradient() -> None:
    obs, act, target, weights, biases = make_critics(3, 3, 2, 6, 5)
    for t in (obs, act, target):
        t.requires_grad_(True)
    params = weights + biases
    out = ops.critic_loss(obs, act, target, weights, biases, 1.0)
    g1 = [
        g.clone()
        for g in grads_of(ops.critic_loss(obs, act, target, weights, biases, 1.0).loss, params)
    ]
    (2.5 * out.loss).backward()
    for name, p, g in zip(NAMES, params, g1, strict=True):
        assert_close_verbose(p.grad, 2.5 * g, rtol=1e-12, atol=0, name=name)
    assert obs.grad is None and act.grad is None and target.grad is None
    assert not out.q.requires_grad and not out.td.requires_grad and not out.diversity.requires_grad


def test_second_backward_raises() -> None:
    obs, act, target, weights, biases = make_critics(2, 3, 2, 4, 3)
    out = ops.critic_loss(obs, act, target, weights, biases, 1.0)
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        out.loss.backward()


def test_no_grad_gives_values() -> None:
    obs, act, target, weights, biases = make_critics(3, 3, 2, 6, 5)
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, 1.0).item()
    with torch.no_grad():
        out = ops.critic_loss(obs, act, target, weights, biases, 1.0)
    assert not out.loss.requires_grad
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("backend", ["ref", "torch", "auto"])
def test_backends_agree(monkeypatch, backend) -> None:
    monkeypatch.setenv("EOR_BACKEND", backend)
    obs, act, target, weights, biases = make_critics(3, 4, 2, 7, 6)
    params = weights + biases
    out = ops.critic_loss(obs, act, target, weights, biases, 1.0)
    monkeypatch.setenv("EOR_BACKEND", "ref")
    expected = ops.critic_loss(obs, act, target, weights, biases, 1.0)
    assert_close_verbose(out.loss, expected.loss, rtol=1e-10, atol=0, name="loss")
    assert_grads_close(grads_of(out.loss, params), grads_of(expected.loss, params), 1e-10, 1e-12)
    div = ops.diversity_loss(obs, act, weights, biases)
    assert_close_verbose(div, expected.diversity, rtol=1e-10, atol=0, name="L_div")


# ----------------------------------------------------------------------------- bad input


def test_one_critic_with_eta_raises() -> None:
    obs, act, target, weights, biases = make_critics(1, 3, 2, 4, 3)
    with pytest.raises(ValueError, match="num_critics"):
        ops.critic_loss(obs, act, target, weights, biases, 1.0)
    with pytest.raises(ValueError, match="num_critics"):
        ops.diversity_loss(obs, act, weights, biases)


@pytest.mark.parametrize("eta", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_eta_raises(eta) -> None:
    obs, act, target, weights, biases = make_critics(2, 3, 2, 4, 3)
    with pytest.raises(ValueError, match="eta"):
        ops.critic_loss(obs, act, target, weights, biases, eta)


def test_bad_shapes_and_dtypes_raise() -> None:
    obs, act, target, weights, biases = make_critics(2, 3, 2, 4, 3)
    with pytest.raises(ValueError, match="target"):
        ops.critic_loss(obs, act, target[:2], weights, biases, 1.0)
    with pytest.raises(ValueError, match="obs"):
        ops.critic_loss(obs[:2], act, target, weights, biases, 1.0)
    with pytest.raises(ValueError, match=r"weights\[0\]"):
        ops.critic_loss(obs[:, :2], act, target, weights, biases, 1.0)
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        ops.critic_loss(
            obs, act, target, [weights[0], weights[1], weights[2][:, :3], weights[3]], biases, 1.0
        )
    with pytest.raises(ValueError, match=r"biases\[1\]"):
        ops.critic_loss(obs, act, target, weights, [biases[0], biases[1][:, :2], *biases[2:]], 1.0)
    with pytest.raises(ValueError, match="4 tensors"):
        ops.critic_loss(obs, act, target, weights[:3], biases[:3], 1.0)
    with pytest.raises(ValueError, match="act is torch.float32"):
        ops.critic_loss(obs, act.float(), target, weights, biases, 1.0)
    with pytest.raises(ValueError, match="one output"):
        w4 = weights[3].detach().repeat(1, 1, 2)
        ops.critic_loss(
            obs, act, target, [*weights[:3], w4], [*biases[:3], biases[3].repeat(1, 2)], 1.0
        )


# ----------------------------------------------------------------------------- custom op


@pytest.mark.parametrize(
    "with_target,eta,need", [(True, 1.0, True), (True, 0.0, False), (False, 1.0, True)]
)
def test_custom_op_schema_and_fake(with_target, eta, need) -> None:
    """eor::critic_loss_grads is a torch.library custom op whose fake implementation gives the
    real shapes (what torch.compile / CUDA-graph capture rely on)."""
    obs, act, target, weights, biases = make_critics(3, 4, 2, 5, 6, dtype=torch.float32)
    args = (
        obs,
        act,
        target if with_target else None,
        [w.detach() for w in weights],
        [b.detach() for b in biases],
        eta,
        need,
        False,
    )
    torch.library.opcheck(
        torch.ops.eor.critic_loss_grads.default, args, test_utils=("test_schema", "test_faketensor")
    )
    real = torch.ops.eor.critic_loss_grads(*args)
    assert len(real) == (11 if need else 3)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_args = tuple(
            mode.from_tensor(a)
            if isinstance(a, Tensor)
            else [mode.from_tensor(t) for t in a]
            if isinstance(a, list)
            else a
            for a in args
        )
        fake = torch.ops.eor.critic_loss_grads(*fake_args)
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert all(t.dtype == r.dtype for t, r in zip(fake, real, strict=True))


def test_explicit_triton_without_gpu_or_interpreter_raises(monkeypatch) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    obs, act, target, weights, biases = make_critics(2, 3, 2, 4, 3, dtype=torch.float32)
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.critic_loss(obs, act, target, weights, biases, 1.0)
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.diversity_loss(obs, act, weights, biases)
    monkeypatch.setenv("EOR_BACKEND", "auto")  # auto on CPU: the torch closed form
    assert backend._choose_backend("critic_loss", obs) == "torch"
    assert ops.backend_report("cpu")["diversity_loss"] == "torch"


# ----------------------------------------------------------------------------- ops.critic_loss_grads


@pytest.mark.parametrize("backend", ["torch", "ref"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_critic_loss_grads_op_matches_autograd(
    monkeypatch: pytest.MonkeyPatch, backend: str, eta: float
) -> None:
    """ops.critic_loss_grads (no autograd) gives the reference loss's values and gradients, on
    both backends."""
    monkeypatch.setenv("EOR_BACKEND", backend)
    obs, act, target, weights, biases = make_critics(3, 5, 2, 9, 17)
    expected = ref.critic_loss_ref(obs, act, target, weights, biases, eta)
    expected_grads = grads_of(expected, weights + biases)
    fresh = ops.critic_loss_grads(obs, act, target, weights, biases, eta)
    assert fresh.weight_grads is not None and fresh.bias_grads is not None
    value = fresh.td + eta * fresh.diversity
    assert_close_verbose(value, expected.detach(), rtol=1e-10, atol=0.0, name="loss")
    assert_grads_close(fresh.weight_grads + fresh.bias_grads, expected_grads, 1e-10, 1e-12)
    assert not any(g.requires_grad for g in fresh.weight_grads + fresh.bias_grads)


def test_critic_loss_grads_op_needs_two_critics() -> None:
    obs, act, target, weights, biases = make_critics(2, 5, 2, 9, 4)
    with pytest.raises(ValueError, match="num_critics >= 2"):
        w1, b1 = [w[:1] for w in weights], [b[:1] for b in biases]
        ops.critic_loss_grads(obs, act, target, w1, b1, 1.0)
