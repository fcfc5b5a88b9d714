"""The RAVL update (docs/algorithm.md §3) against the plain autograd reference `eor.ref.RAVLRef` and by hand."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from eor.agent import RAVL, RAVLConfig, actor_from_state, load_actor
from eor.agent.ravl import LOGGED_KEYS, NonFiniteLossError
from eor.ref import ActorRef, RAVLRef, VectorizedCriticRef, critic_q_ref

F64 = torch.float64


def _batch(cfg: RAVLConfig, b: int, seed: int, dtype: torch.dtype = F64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    done = (torch.rand(b, generator=g) < 0.25).to(dtype)
    return {
        "obs": torch.randn(b, cfg.obs_dim, generator=g, dtype=dtype),
        "act": torch.rand(b, cfg.act_dim, generator=g, dtype=dtype) * 2 - 1,
        "rew": torch.randn(b, generator=g, dtype=dtype),
        "next_obs": torch.randn(b, cfg.obs_dim, generator=g, dtype=dtype),
        "done": done,
    }


def _reference_of(learner: RAVL) -> RAVLRef:
    """A reference learner with the same weights, hyperparameters and generator state."""
    c = learner.config
    actor = ActorRef(c.obs_dim, c.act_dim, c.hidden_dim, c.max_action).to(learner.dtype)
    actor.load_state_dict(learner.actor.state_dict())
    critic = VectorizedCriticRef(c.obs_dim, c.act_dim, c.hidden_dim, c.num_critics)
    critic = critic.to(learner.dtype)
    critic.load_stacked(*learner.critic.params(detach=True))
    gen = torch.Generator().manual_seed(0)
    gen.set_state(learner.generator.get_state())
    ref = RAVLRef(
        actor,
        critic,
        gamma=c.gamma,
        tau=c.tau,
        eta=c.eta,
        actor_lr=c.actor_lr,
        critic_lr=c.critic_lr,
        alpha_lr=c.alpha_lr,
        target_entropy=c.target_entropy,
        generator=gen,
    )
    ref.target_critic.load_stacked(*learner.target_critic.params(detach=True))
    return ref


def _ref_batch(batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [
        batch["obs"],
        batch["act"],
        batch["rew"].reshape(-1, 1),
        batch["next_obs"],
        batch["done"].reshape(-1, 1),
    ]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """|actual − expected| <= tol · (max|expected| + tol), reporting the worst entry."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = (actual - expected).abs()
    scale = expected.abs().max().item() + tol
    worst = int(err.argmax())
    assert err.max().item() <= tol * scale, (
        f"{what}: max error {err.max().item():.3g} at flat index {worst} "
        f"(actual {actual.flatten()[worst].item():.6g}, expected "
        f"{expected.flatten()[worst].item():.6g}, scale {scale:.3g})"
    )


def _compare_with_reference(learner: RAVL, ref: RAVLRef, tol: float, log_tol: float) -> None:
    batch = _batch(learner.config, 24, seed=11, dtype=learner.dtype)
    ours = learner.update(batch, log=True)
    theirs = ref.update(_ref_batch(batch))
    assert set(ours) == set(LOGGED_KEYS)
    for key in LOGGED_KEYS:
        assert ours[key] == pytest.approx(theirs[key], rel=log_tol, abs=log_tol), key
    # gradients of the three steps (each optimiser zeroes its own before its backward)
    assert learner.log_alpha.grad is not None and ref.log_alpha.grad is not None
    _assert_close(learner.log_alpha.grad.reshape(1), ref.log_alpha.grad, tol, "grad log_alpha")
    for (name, p), q in zip(learner.actor.named_parameters(), ref.actor.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        _assert_close(p.grad, q.grad, tol, f"actor grad {name}")
    for layer in range(4):
        ref_layer = ref.critic.critic[2 * layer]
        w, b = learner.critic.weights[layer], learner.critic.biases[layer]
        assert w.grad is not None and b.grad is not None
        _assert_close(w.grad, ref_layer.weight.grad, tol, f"critic grad W{layer + 1}")
        _assert_close(b.grad, ref_layer.bias.grad.squeeze(1), tol, f"critic grad b{layer + 1}")
    # the resulting parameters: actor, critics, targets (Polyak), log α
    _assert_close(learner.log_alpha.detach().reshape(1), ref.log_alpha.detach(), tol, "log_alpha")
    for (name, p), q in zip(learner.actor.named_parameters(), ref.actor.parameters(), strict=True):
        _assert_close(p.detach(), q.detach(), tol, f"actor {name}")
    for module, ref_module, what in (
        (learner.critic, ref.critic, "critic"),
        (learner.target_critic, ref.target_critic, "target"),
    ):
        for layer in range(4):
            ref_layer = ref_module.critic[2 * layer]
            _assert_close(
                module.weights[layer].detach(), ref_layer.weight.detach(), tol, f"{what} W{layer}"
            )
            _assert_close(
                module.biases[layer].detach(),
                ref_layer.bias.detach().squeeze(1),
                tol,
                f"{what} b{layer}",
            )


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_one_update_matches_reference_float64(eta: float) -> None:
    """Same init, same batch, same draws: every gradient and parameter to 1e-9 (float64)."""
    cfg = RAVLConfig(obs_dim=7, act_dim=3, hidden_dim=24, num_critics=5, eta=eta)
    learner = RAVL(cfg, dtype=F64, seed=3)
    # make the targets differ from the critics so that a mix-up cannot pass
    with torch.no_grad():
        for p in learner.target_critic.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = _reference_of(learner)
    _compare_with_reference(learner, ref, tol=1e-9, log_tol=1e-9)


def test_one_update_matches_reference_float32_real_sizes() -> None:
    """Default sizes (H 256, N 10, halfcheetah dims), float32: to 2e-4 of each tensor's scale."""
    cfg = RAVLConfig(obs_dim=17, act_dim=6)
    learner = RAVL(cfg, seed=4)
    ref = _reference_of(learner)
    _compare_with_reference(learner, ref, tol=2e-4, log_tol=1e-4)


def _replay_draws(learner: RAVL, n: int, b: int, a: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    gen.set_state(learner.generator.get_state())
    return [torch.randn(b, a, generator=gen, dtype=learner.dtype) for _ in range(n)]


def _log_prob(actor: Any, obs: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Action and log π by hand from the actor's layers and a known ε."""
    hidden = actor.trunk(obs)
    mu, log_sigma = actor.mu(hidden), actor.log_sigma(hidden).clamp(-5, 2)
    u = mu + log_sigma.exp() * eps
    gauss = -0.5 * eps**2 - log_sigma - 0.5 * math.log(2 * math.pi)
    return torch.tanh(u), (gauss - torch.log(1 - torch.tanh(u) ** 2 + 1e-6)).sum(-1)


def test_alpha_is_updated_before_the_actor_uses_it() -> None:
    cfg = RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3, alpha_lr=0.1)
    learner = RAVL(cfg, dtype=F64, seed=5)
    batch = _batch(cfg, 16, seed=2)
    eps_alpha, eps_actor = _replay_draws(learner, 2, 16, 2)
    with torch.no_grad():
        _, logp_alpha = _log_prob(learner.actor, batch["obs"], eps_alpha)
        act_actor, logp_actor = _log_prob(learner.actor, batch["obs"], eps_actor)
        ws, bs = learner.critic.params(detach=True)
        q_min = critic_q_ref(batch["obs"], act_actor, ws, bs).min(0).values
    # α step: gradient of −log α (log π + H̄) at log α = 0; Adam's first step is lr·g/(|g| + eps)
    grad = -(logp_alpha + cfg.entropy_target).mean().item()
    new_log_alpha = -0.1 * grad / (abs(grad) + 1e-8)
    out = learner.update(batch, log=True)
    assert learner.log_alpha.item() == pytest.approx(new_log_alpha, abs=1e-12)
    assert out["alpha"] == pytest.approx(math.exp(new_log_alpha), abs=1e-12)
    assert out["alpha_loss"] == pytest.approx(-0.0, abs=1e-12)  # log α = 0 when it is computed
    with_new = (math.exp(new_log_alpha) * logp_actor - q_min).mean().item()
    with_old = (1.0 * logp_actor - q_min).mean().item()
    assert abs(with_new - with_old) > 1e-3  # the test can tell them apart
    assert out["actor_loss"] == pytest.approx(with_new, abs=1e-10)
    assert out["batch_entropy"] == pytest.approx(-logp_actor.mean().item(), abs=1e-10)


def test_critic_target_on_a_hand_made_batch() -> None:
    cfg = RAVLConfig(obs_dim=3, act_dim=2, hidden_dim=8, num_critics=4, gamma=0.9)
    learner = RAVL(cfg, dtype=F64, seed=6)
    with torch.no_grad():
        for p in learner.target_critic.parameters():  # targets differ from the critics
            p.add_(0.1 * torch.randn_like(p))
        learner.target_critic.biases[-1][3] -= 5.0  # the LAST target member is the minimum
    learner.alpha = torch.tensor(0.5, dtype=F64)
    rew = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    done = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    next_obs = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0], [-0.5, 0.5, 2.0]], dtype=F64)
    (eps,) = _replay_draws(learner, 1, 3, 2)
    y = learner._critic_target(rew, next_obs, done)
    with torch.no_grad():
        next_act, next_logp = _log_prob(learner.actor, next_obs, eps)
        ws, bs = learner.target_critic.params(detach=True)
        q_target = critic_q_ref(next_obs, next_act, ws, bs)  # [N, B]
        online = critic_q_ref(next_obs, next_act, *learner.critic.params(detach=True))
    assert torch.equal(q_target.argmin(0), torch.full((3,), 3))
    expected = [
        rew[i].item()
        + 0.9 * (1 - done[i].item()) * (q_target[:, i].min().item() - 0.5 * next_logp[i].item())
        for i in range(3)
    ]
    torch.testing.assert_close(y, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)
    assert y[1].item() == -2.0  # terminal: y = r
    wrong = rew + 0.9 * (1 - done) * (online.min(0).values - 0.5 * next_logp)
    assert not torch.allclose(y, wrong)  # the online critics would give another target


def test_logging_only_work_runs_only_when_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RAVLConfig(obs_dim=4, act_dim=2, hidden_dim=8, num_critics=3)
    learner = RAVL(cfg, seed=0)
    calls = []
    original = learner.critic.q_values
    monkeypatch.setattr(
        learner.critic, "q_values", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    batch = _batch(cfg, 8, seed=0, dtype=torch.float32)
    assert set(learner.update(batch)) == {"alpha_loss", "critic_loss", "actor_loss"}
    assert learner.update(batch, check_finite=False) == {}
    assert calls == []
    out = learner.update(batch, log=True)
    assert set(out) == set(LOGGED_KEYS) and calls == [1]
    assert all(math.isfinite(v) for v in out.values())


def test_numpy_batch_and_shape_errors() -> None:
    cfg = RAVLConfig(obs_dim=4, act_dim=2, hidden_dim=8, num_critics=2)
    learner = RAVL(cfg, seed=0)
    batch = {k: v.numpy().astype(np.float32) for k, v in _batch(cfg, 8, seed=0).items()}
    batch["rew"] = batch["rew"].reshape(-1, 1)  # [B, 1] is accepted too
    assert math.isfinite(learner.update(batch)["critic_loss"])
    bad = dict(batch, act=np.zeros((8, 3), np.float32))
    with pytest.raises(ValueError, match=r"batch\['act'\] must have shape \[B, 2\]"):
        learner.update(bad)
    with pytest.raises(ValueError, match=r"batch\['done'\] must have shape \[B\]"):
        learner.update(dict(batch, done=np.zeros(7, np.float32)))
    with pytest.raises(ValueError, match="missing"):
        learner.update({k: v for k, v in batch.items() if k != "next_obs"})


def test_nonfinite_loss_raises() -> None:
    cfg = RAVLConfig(obs_dim=4, act_dim=2, hidden_dim=8, num_critics=2)
    learner = RAVL(cfg, seed=0)
    batch = _batch(cfg, 8, seed=0, dtype=torch.float32)
    learner.update(batch)
    bad = dict(batch, rew=batch["rew"].clone())
    bad["rew"][3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="critic_loss=nan"):
        learner.update(bad)
    assert issubclass(NonFiniteLossError, FloatingPointError)
    # deferred: nothing raised until the check
    learner2 = RAVL(cfg, seed=0)
    assert learner2.update(bad, check_finite=False) == {}
    with pytest.raises(NonFiniteLossError, match="in one of updates"):
        learner2.raise_if_nonfinite()
    learner2.raise_if_nonfinite()  # the flag is cleared once raised


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_critics": 1, "eta": 1.0}, "num_critics must be >= 2 when eta > 0"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"gamma": -0.1}, r"gamma must be in \[0, 1\]"),
        ({"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ({"tau": 1.01}, r"tau must be in \(0, 1\]"),
        ({"actor_lr": 0.0}, "actor_lr must be a positive number"),
        ({"critic_lr": -1e-3}, "critic_lr must be a positive number"),
        ({"alpha_lr": float("nan")}, "alpha_lr must be finite"),
        ({"eta": -1.0}, "eta must be >= 0"),
        ({"hidden_dim": 0}, "hidden_dim must be a positive integer"),
        ({"num_critics": 2.5}, "num_critics must be a positive integer"),
        ({"max_action": 0.0}, "max_action must be > 0"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RAVLConfig(obs_dim=4, act_dim=2, **kwargs)


def test_single_critic_without_diversity_trains() -> None:
    cfg = RAVLConfig(obs_dim=4, act_dim=2, hidden_dim=8, num_critics=1, eta=0.0)
    learner = RAVL(cfg, seed=0)
    out = learner.update(_batch(cfg, 8, seed=0, dtype=torch.float32), log=True)
    assert out["q_policy_std"] == 0.0 and out["q_random_std"] == 0.0


def _params(learner: RAVL) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in learner.actor.parameters()]
    tensors += [p.detach().clone() for p in learner.critic.parameters()]
    tensors += [p.detach().clone() for p in learner.target_critic.parameters()]
    return tensors + [learner.log_alpha.detach().clone()]


def test_state_dict_round_trip_gives_identical_updates() -> None:
    cfg = RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3)
    batches = [_batch(cfg, 8, seed=s, dtype=torch.float32) for s in range(4)]
    learner = RAVL(cfg, seed=1)
    for b in batches[:2]:
        learner.update(b)
    buf = io.BytesIO()
    torch.save(learner.state_dict(), buf)
    later = [learner.update(b, log=True) for b in batches[2:]]
    restored = RAVL(cfg, seed=99)  # different init and generator, all overwritten
    buf.seek(0)
    restored.load_state_dict(torch.load(buf, weights_only=False))
    assert restored.num_updates == 2
    again = [restored.update(b, log=True) for b in batches[2:]]
    assert later == again
    for p, q in zip(_params(learner), _params(restored), strict=True):
        assert torch.equal(p, q)


def test_load_state_dict_refuses_other_shapes() -> None:
    learner = RAVL(RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3), seed=1)
    other = RAVL(RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=4), seed=1)
    with pytest.raises(ValueError, match="num_critics=3"):
        other.load_state_dict(learner.state_dict())


def test_load_actor_from_checkpoint_and_run_dir(tmp_path: Any) -> None:
    cfg = RAVLConfig(obs_dim=5, act_dim=3, hidden_dim=16, num_critics=2)
    learner = RAVL(cfg, seed=2)
    learner.update(_batch(cfg, 8, seed=0, dtype=torch.float32))
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "latest.pt"
    torch.save({"learner": learner.state_dict(), "config": {"env_name": "x"}}, path)
    obs = torch.randn(4, 5)
    expected = learner.actor.act(obs, deterministic=True)
    for source in (tmp_path, path, str(path)):
        actor = load_actor(source)
        assert not actor.training
        torch.testing.assert_close(actor.act(obs, deterministic=True), expected)
    torch.testing.assert_close(
        actor_from_state(learner.state_dict()).act(obs, deterministic=True), expected
    )
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in run directory"):
        load_actor(tmp_path / "empty_run")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_actor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_actor(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a RAVL learner state"):
        actor_from_state({"weights": 1})


def test_state_from_another_device_kind_reseeds_deterministically() -> None:
    """A generator state saved on another device kind cannot be restored; the learner then
    continues from a seed derived from it: the same state gives the same draws."""
    cfg = RAVLConfig(obs_dim=4, act_dim=2, hidden_dim=8, num_critics=2)
    state = RAVL(cfg, seed=1).state_dict()
    state["generator_device"] = "cuda"  # as if saved on a GPU
    a, b = RAVL(cfg, seed=2), RAVL(cfg, seed=3)
    a.load_state_dict(state)
    b.load_state_dict(state)
    draw_a = torch.randn(5, generator=a.generator)
    assert torch.equal(draw_a, torch.randn(5, generator=b.generator))
    other = dict(state, generator=RAVL(cfg, seed=4).generator.get_state())
    c = RAVL(cfg, seed=2)
    c.load_state_dict(other)
    assert not torch.equal(draw_a, torch.randn(5, generator=c.generator))
