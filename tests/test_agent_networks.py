"""RAVL networks (docs/algorithm.md §3): initialisation, the tanh-Gaussian log-probability, clipping, shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from eor.agent import Actor, VectorizedCritic
from eor.ref import ActorRef, VectorizedCriticRef, critic_q_ref


def _uniform_std(bound: float) -> float:
    return bound / math.sqrt(3.0)


def test_actor_init_matches_spec() -> None:
    actor = Actor(17, 6, 256, generator=torch.Generator().manual_seed(1))
    linears = [m for m in actor.trunk if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    assert [layer.weight.shape for layer in linears] == [(256, 17), (256, 256), (256, 256)]
    for layer in linears:
        assert torch.all(layer.bias == 0.1)
        bound = 1.0 / math.sqrt(layer.weight.shape[1])  # nn.Linear's kaiming-uniform(a=√5)
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.98 * bound
        assert layer.weight.std().item() == pytest.approx(_uniform_std(bound), rel=0.05)
    for head in (actor.mu, actor.log_sigma):
        for p in (head.weight, head.bias):
            assert p.abs().max() <= 1e-3
        assert head.weight.std().item() == pytest.approx(_uniform_std(1e-3), rel=0.1)
        assert head.bias.abs().max() > 0  # drawn, not zero


def test_actor_state_dict_is_the_reference_layout() -> None:
    actor = Actor(5, 3, 16)
    ref = ActorRef(5, 3, 16)
    assert set(actor.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(actor.state_dict())  # loads without renaming


def test_critic_init_matches_spec() -> None:
    n, s, a, h = 10, 17, 6, 256
    critic = VectorizedCritic(s, a, h, n, generator=torch.Generator().manual_seed(2))
    shapes = [tuple(w.shape) for w in critic.weights]
    assert shapes == [(n, s + a, h), (n, h, h), (n, h, h), (n, h, 1)]
    assert [tuple(b.shape) for b in critic.biases] == [(n, h), (n, h), (n, h), (n, 1)]
    for layer in range(3):
        w = critic.weights[layer].detach()
        assert torch.all(critic.biases[layer] == 0.1)
        # kaiming-uniform(a=√5) on each member's [I, O] slice: torch's fan_in is O (see the
        # VectorizedCritic docstring), so the bound is 1/√O, as in the reference.
        bound = 1.0 / math.sqrt(w.shape[2])
        for member in range(n):
            assert w[member].abs().max() <= bound
            assert w[member].abs().max() > 0.95 * bound
        assert w.std().item() == pytest.approx(_uniform_std(bound), rel=0.05)
        assert not torch.equal(w[0], w[1])  # members are drawn independently
    for p in (critic.weights[-1], critic.biases[-1]):
        assert p.abs().max() <= 3e-3
        assert p.abs().max() > 0.5 * 3e-3
    assert critic.weights[-1].std().item() == pytest.approx(_uniform_std(3e-3), rel=0.15)


def test_critic_init_has_reference_statistics() -> None:
    """Same per-layer bounds as the reference's own init (a check of the fan quirk)."""
    torch.manual_seed(3)
    ref = VectorizedCriticRef(11, 4, 64, 5)
    ours = VectorizedCritic(11, 4, 64, 5)
    for layer in range(4):
        ref_w = ref.critic[2 * layer].weight.detach()
        our_w = ours.weights[layer].detach()
        assert ref_w.shape == our_w.shape
        assert our_w.abs().max() <= ref_w.abs().max() * 1.1 + 1e-12
        assert our_w.std().item() == pytest.approx(ref_w.std().item(), rel=0.1)


def test_critic_forward_matches_reference() -> None:
    critic = VectorizedCritic(7, 3, 32, 4).double()
    obs, act = torch.randn(9, 7, dtype=torch.float64), torch.rand(9, 3, dtype=torch.float64)
    ws, bs = critic.params(detach=True)
    expected = critic_q_ref(obs, act, ws, bs)  # [N, B]
    torch.testing.assert_close(critic(obs, act), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(critic.q_values(obs, act), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        critic.q_values(obs, act, reduce="min"), expected.min(0).values, rtol=1e-12, atol=1e-12
    )
    ref = VectorizedCriticRef(7, 3, 32, 4).double()
    ref.load_stacked(ws, bs)
    torch.testing.assert_close(ref(obs, act), expected, rtol=1e-12, atol=1e-12)


def test_critic_detached_forward_gives_action_gradient_only() -> None:
    critic = VectorizedCritic(5, 2, 16, 3)
    obs = torch.randn(4, 5)
    act = torch.rand(4, 2, requires_grad=True)
    critic(obs, act, detach_params=True).sum().backward()
    assert act.grad is not None and act.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def _actor_pre_tanh(actor: Actor, obs: torch.Tensor, eps: torch.Tensor):
    hidden = actor.trunk(obs)
    mu = actor.mu(hidden)
    log_sigma = actor.log_sigma(hidden).clamp(-5, 2)
    return mu, log_sigma, mu + log_sigma.exp() * eps


def test_log_prob_correction_by_hand_and_torch_distributions() -> None:
    actor = Actor(6, 4, 32).double()
    with torch.no_grad():  # spread μ and σ so that the correction matters
        actor.mu.weight.normal_(0, 0.3)
        actor.log_sigma.weight.normal_(0, 0.3)
    obs = torch.randn(50, 6, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    action, log_prob = actor(obs, need_log_prob=True, generator=gen)
    eps = torch.randn(50, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    with torch.no_grad():
        mu, log_sigma, u = _actor_pre_tanh(actor, obs, eps)
        sigma = log_sigma.exp()
        # by hand: log N(u; μ, σ) − log(1 − tanh(u)² + 1e-6), summed over the action dims
        gauss = -((u - mu) ** 2) / (2 * sigma**2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
        hand = (gauss - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)
        # torch.distributions' exact tanh density (no 1e-6): equal up to the 1e-6 term
        dist = TransformedDistribution(Normal(mu, sigma), [TanhTransform()])
        exact = dist.log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(action, torch.tanh(u), rtol=1e-12, atol=1e-12)
    assert log_prob is not None
    torch.testing.assert_close(log_prob, hand, rtol=1e-10, atol=1e-10)
    # the +1e-6 moves each term by at most 1e-6 / (1 − tanh²); the tails of u are modest here
    bound = (1e-6 / (1 - torch.tanh(u) ** 2)).sum(-1)
    assert torch.all((log_prob - exact).abs() <= bound + 1e-9)
    assert not torch.allclose(log_prob, gauss.sum(-1))  # the correction is applied


def test_log_sigma_is_clipped_and_deterministic_is_tanh_mu() -> None:
    actor = Actor(3, 2, 8, max_action=2.0).double()
    obs = torch.randn(5, 3, dtype=torch.float64)
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for bias, clipped in ((10.0, 2.0), (-10.0, -5.0)):
        with torch.no_grad():
            actor.log_sigma.bias.fill_(bias)
        action, _ = actor(obs, generator=torch.Generator().manual_seed(1))
        mu = actor.mu(actor.trunk(obs)).detach()
        expected = torch.tanh(mu + math.exp(clipped) * eps) * 2.0
        torch.testing.assert_close(action.detach(), expected, rtol=1e-10, atol=1e-12)
    det = actor.act(obs, deterministic=True)
    torch.testing.assert_close(det, torch.tanh(mu) * 2.0, rtol=1e-12, atol=1e-12)
    assert det.abs().max() <= 2.0


def test_act_shapes_and_errors() -> None:
    actor = Actor(4, 2, 8)
    assert actor.act(torch.randn(3, 4), deterministic=False).shape == (3, 2)
    assert actor.act(torch.randn(4), deterministic=True).shape == (2,)
    assert actor.act(torch.randn(3, 4, dtype=torch.float64), True).dtype == torch.float32
    with pytest.raises(ValueError, match=r"obs must have shape \[B, 4\]"):
        actor.act(torch.randn(3, 5), deterministic=True)


@pytest.mark.parametrize("n", [1, 3, 10])
@pytest.mark.parametrize("grouped", [True, False])
def test_min_q_action_gradient_matches_autograd(n: int, grouped: bool) -> None:
    """The actor step's ∇ₐ minᵢ Qᵢ (through the selected critic only) equals autograd's."""
    critic = VectorizedCritic(7, 3, 32, n).double()
    with torch.no_grad():  # larger weights: rows pick different critics, many ReLUs switch
        for w in critic.weights:
            w.normal_(0, 0.3)
    obs = torch.randn(40, 7, dtype=torch.float64)
    act = (torch.rand(40, 3, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    q_full = critic(obs, act)  # [N, B]
    q_full.min(0).values.sum().backward()
    q, q_min, grad = critic.min_q_and_action_grad(obs, act.detach(), grouped=grouped)
    torch.testing.assert_close(q, q_full.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q_min, q_full.detach().min(0).values, rtol=0, atol=0)
    assert act.grad is not None
    torch.testing.assert_close(grad, act.grad, rtol=1e-10, atol=1e-12)
    if n > 1:
        assert len(set(q_full.argmin(0).tolist())) > 1  # the case exercises several critics


@pytest.mark.parametrize("grouped", [True, False])
def test_min_q_action_gradient_follows_eor_backend(monkeypatch, grouped: bool) -> None:
    """Every layer of the actor step's forward goes through eor.ops, so EOR_BACKEND=ref runs
    the reference there too (and gives the torch path's values)."""
    from eor.ops import linear as linear_module

    critic = VectorizedCritic(7, 3, 16, 4).double()
    obs, act = torch.randn(9, 7, dtype=torch.float64), torch.rand(9, 3, dtype=torch.float64)
    fast = critic.min_q_and_action_grad(obs, act, grouped=grouped)
    calls: list[tuple[int, ...]] = []
    ref_fn = linear_module.ref.ensemble_linear_ref

    def counting(x, w, b, activation="none"):
        calls.append(tuple(w.shape))
        return ref_fn(x, w, b, activation)

    monkeypatch.setattr(linear_module.ref, "ensemble_linear_ref", counting)
    monkeypatch.setenv("EOR_BACKEND", "ref")
    slow = critic.min_q_and_action_grad(obs, act, grouped=grouped)
    assert calls == [tuple(w.shape) for w in critic.weights]  # 3 hidden layers and the head
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("skew", [False, True])
def test_grouped_action_gradient_any_assignment(skew: bool) -> None:
    """The grouped backward for a given row -> critic assignment (every critic with a few rows,
    one empty; or one critic with nearly all rows) equals autograd's ∇ₐ Σ_b Q_{idx[b]}(s_b, a_b)."""
    n, b = 8, 64
    critic = VectorizedCritic(5, 2, 16, n).double()
    with torch.no_grad():
        for w in critic.weights:
            w.normal_(0, 0.3)
    obs = torch.randn(b, 5, dtype=torch.float64)
    act = (torch.rand(b, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    if skew:  # critic 3 takes all rows but five
        idx = torch.full((b,), 3)
        idx[:5] = torch.randint(0, n, (5,), generator=gen)
    else:  # every critic but the last, a few rows each
        idx = torch.randint(0, n - 1, (b,), generator=gen)
    q_full = critic(obs, act)  # [N, B]
    q_full[idx, torch.arange(b)].sum().backward()
    ws, bs = critic.params(detach=True)
    h, hidden = torch.cat([obs, act.detach()], dim=-1), []
    for w, bias in zip(ws[:-1], bs[:-1], strict=True):
        h = torch.relu(torch.matmul(h, w) + bias.unsqueeze(1))  # [N, B, H]
        hidden.append(h)
    grad = critic._grouped_action_grad(ws, hidden, idx)
    torch.testing.assert_close(grad, act.grad, rtol=1e-10, atol=1e-12)
