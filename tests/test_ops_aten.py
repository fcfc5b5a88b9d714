"""eor.ops.aten, the guard around aten's private overloads: each is used only when its schema
is the expected one, and the public fallback gives the same bits, alone and inside every hot
path that uses it (the closed-form critic loss, the actor step, the dynamics step, the
ensemble layer's backward)."""

from __future__ import annotations

import pytest
import torch

from eor.agent.networks import VectorizedCritic
from eor.dynamics.model import DynamicsEnsemble, head_nll_grads
from eor.dynamics.step import ClosedFormStep
from eor.ops import aten
from eor.ops.critic_closed_form import closed_form_grads
from eor.ops.linear import _linear_bwd_torch, _linear_fwd_torch


def _same(a: torch.Tensor, b: torch.Tensor, name: str = "") -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a torch whose overloads all differ: every function takes the public route."""
    monkeypatch.setattr(aten, "FAST", dict.fromkeys(aten.FAST, False))


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    grad = torch.randn(4, 9, 11, generator=gen, dtype=dtype)
    x = torch.randn(4, 9, 11, generator=gen, dtype=dtype) * 8  # some beyond softplus' threshold
    x[0, 0, :3] = torch.tensor([0.0, -0.0, float("nan")], dtype=dtype)  # the mask's edge cases
    x[1, 1, :2] = torch.tensor([25.0, -25.0], dtype=dtype)
    return grad, x


def test_every_overload_is_checked_and_used_on_the_pinned_torch() -> None:
    assert set(aten.FAST) == set(aten.EXPECTED)
    if torch.__version__.startswith("2.13."):  # the version eor pins (TORCH_SPEC)
        assert all(aten.FAST.values()), aten.FAST


def test_a_changed_or_missing_overload_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not aten.overload_matches("silu.out", "aten::silu.out(Tensor self) -> Tensor")
    assert not aten.overload_matches("no_such_op.out", "aten::no_such_op.out() -> Tensor")
    assert not aten.overload_matches("silu.no_such_overload", aten.EXPECTED["silu.out"])
    monkeypatch.setitem(aten.EXPECTED, "silu.out", "aten::silu.out(Tensor self) -> Tensor")
    fast = aten.checked_overloads()
    assert fast["silu.out"] is False
    assert all(ok for name, ok in fast.items() if name != "silu.out")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_function_gives_the_same_bits_either_way(monkeypatch, dtype) -> None:
    grad, x = _inputs(dtype)

    def run() -> dict[str, torch.Tensor]:
        return {
            "relu_backward": aten.relu_backward(grad, x),
            "relu_into_grad": aten.relu_backward_into(grad.clone(), x, grad.clone()),
            "relu_into_h": aten.relu_backward_into(grad, *(2 * [x.clone()])),
            "relu_expanded": aten.relu_backward_into(grad[:1].expand_as(x), x, x.clone()),
            "silu_into": aten.silu_into(x, torch.empty_like(x)),
            "silu_backward": aten.silu_backward(grad, x),
            "silu_backward_into": aten.silu_backward_into(grad.clone(), x, torch.empty_like(x)),
            "softplus_backward": aten.softplus_backward(grad, x, 1.0, 20.0),
        }

    fast = run()
    monkeypatch.setattr(aten, "FAST", dict.fromkeys(aten.FAST, False))
    public = run()
    for name in fast:
        _same(public[name], fast[name], name)
    # the values themselves: relu' mask (0 where h <= 0, NaN h passes the gradient as aten does)
    mask = ~(x <= 0)
    _same(fast["relu_backward"], torch.where(mask, grad, torch.zeros_like(grad)), "relu")
    torch.testing.assert_close(fast["silu_into"], torch.nn.functional.silu(x), equal_nan=True)


def test_into_functions_write_into_out(public_only) -> None:
    grad, x = _inputs()
    h = x.clone()
    assert aten.relu_backward_into(grad, h, h) is h  # out may be the mask's own input
    _same(h, aten.relu_backward(grad, x))
    out = torch.empty_like(x)
    assert aten.silu_into(x, out) is out
    assert aten.silu_backward_into(grad, x, out) is out


def _critic_case():
    gen = torch.Generator().manual_seed(0)
    dims = [7, 16, 16, 16, 1]
    ws = [
        torch.randn(3, i, o, generator=gen) * 0.5 for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    bs = [torch.randn(3, o, generator=gen) * 0.1 for o in dims[1:]]
    obs, act = torch.randn(9, 5, generator=gen), torch.rand(9, 2, generator=gen) * 2 - 1
    return obs, act, torch.randn(9, generator=gen), ws, bs


def _hot_paths() -> list[torch.Tensor]:
    """Every hot path that goes through eor.ops.aten, flattened to tensors."""
    torch.manual_seed(0)
    obs, act, target, ws, bs = _critic_case()
    out: list[torch.Tensor] = []
    for tgt, need_q in ((target, True), (None, False)):  # both δ3 variants of the closed form
        g = closed_form_grads(obs, act, tgt, ws, bs, 0.7, need_q=need_q)
        out += [g.td, g.diversity, g.q, *g.weight_grads, *g.bias_grads]
    critic = VectorizedCritic(5, 2, hidden_dim=16, num_critics=3)
    for grouped in (True, False):
        out += list(critic.min_q_and_action_grad(obs, act, grouped=grouped))
    model = DynamicsEnsemble(5, 2, hidden_dim=13, num_members=3, num_elites=2)
    x, y = torch.randn(3, 11, 7), torch.randn(3, 11, 6)
    out.append(ClosedFormStep(model)(x, y))
    out += [p.grad for p in model.parameters()]
    head = torch.randn(3, 11, 12) * 10
    out += list(head_nll_grads(head, y, model.max_logvar.detach(), model.min_logvar.detach()))
    for act_name in ("relu", "silu"):
        xs, w, b = torch.randn(3, 9, 7), torch.randn(3, 7, 5), torch.randn(3, 5)
        yv, saved = _linear_fwd_torch(xs, w, b, act_name)
        out += [
            g
            for g in _linear_bwd_torch(
                torch.randn(3, 9, 5), xs, w, yv, saved, act_name, (True,) * 3
            )
        ]
    return out


def test_hot_paths_give_the_same_bits_on_the_public_route(monkeypatch) -> None:
    fast = _hot_paths()
    monkeypatch.setattr(aten, "FAST", dict.fromkeys(aten.FAST, False))
    public = _hot_paths()
    assert len(fast) == len(public) > 40
    for i, (a, b) in enumerate(zip(fast, public, strict=True)):
        _same(b, a, f"tensor {i}")
