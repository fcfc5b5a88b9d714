"""The closed-form dynamics training step (eor.dynamics.step) against autograd."""

from __future__ import annotations

import pytest
import torch

from eor.dynamics.model import DynamicsEnsemble
from eor.dynamics.step import ClosedFormStep
from eor.dynamics.train import DynamicsConfig, DynamicsTrainer

S, A = 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(dtype: torch.dtype = torch.float32, **kw) -> tuple[DynamicsEnsemble, DynamicsEnsemble]:
    """Two models with the same weights, logvar bounds moved off their init."""
    kw.setdefault("hidden_dim", 13)
    a = DynamicsEnsemble(S, A, **kw).to(dtype)
    b = DynamicsEnsemble(S, A, **kw).to(dtype)
    with torch.no_grad():
        a.max_logvar.uniform_(-0.5, 1.0)
        a.min_logvar.uniform_(-12.0, -8.0)
    b.load_state_dict(a.state_dict())
    return a, b


def _autograd_grads(model: DynamicsEnsemble, x: torch.Tensor, y: torch.Tensor):
    model.zero_grad(set_to_none=True)
    loss = model.loss(*model(x), y)  # plain autograd through ops.ensemble_linear + bounds
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "members, hidden_layers, batch",
    [(1, 1, 1), (3, 2, 7), (7, 4, 64), (2, 3, 123)],
)
def test_loss_and_every_gradient_match_autograd(members: int, hidden_layers: int, batch: int):
    torch.manual_seed(members + batch)
    model, twin = _pair(torch.float64, num_members=members, num_elites=1, num_hidden=hidden_layers)
    x = torch.randn(members, batch, S + A, dtype=torch.float64)
    y = torch.randn(members, batch, S + 1, dtype=torch.float64)
    loss = ClosedFormStep(model)(x, y)
    loss_ref, grads_ref = _autograd_grads(twin, x, y)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=0.0)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads_ref[name], rtol=1e-10, atol=1e-13, msg=name)


def test_float32_step_is_bitwise_the_trainers_autograd_step() -> None:
    """The same ops in the same order as training_loss().backward(): the same bits on the CPU
    (so switching the trainer to the closed form changed no result)."""
    torch.manual_seed(0)
    model, twin = _pair(num_members=7, num_elites=5, hidden_dim=40)
    x, y = torch.randn(7, 50, S + A), torch.randn(7, 50, S + 1)
    loss = ClosedFormStep(model)(x, y)
    ref = twin.training_loss(x, y)
    ref.backward()
    assert torch.equal(loss, ref.detach())
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_buffers_and_gradients_are_reused_and_overwritten() -> None:
    torch.manual_seed(1)
    model, twin = _pair(num_members=3, num_elites=2)
    step = ClosedFormStep(model)
    fresh = ClosedFormStep(twin)
    batches = [(torch.randn(3, b, S + A), torch.randn(3, b, S + 1)) for b in (16, 5, 16)]
    grads_first = None
    for k, (x, y) in enumerate(batches):
        if k == 2:
            model.zero_grad(set_to_none=True)  # the buffer comes back, fully overwritten
        loss = step(x, y)
        grads = [p.grad for p in model.parameters()]
        if grads_first is None:
            grads_first = grads
        assert all(g is h for g, h in zip(grads, grads_first, strict=True))  # no new tensors
        twin.zero_grad(set_to_none=True)
        expected = ClosedFormStep(twin)(x, y) if k else fresh(x, y)
        assert torch.equal(loss, expected)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)
    assert len(step._buffers) == 2  # one set per batch size
    # the returned loss is not a view of a reused buffer
    first = step(*batches[0]).clone()
    kept = step(*batches[0])
    step(*batches[1])
    assert torch.equal(kept, first)


@pytest.mark.parametrize(
    "x_shape, y_shape, dtype, match",
    [
        ((2, 4, S + A), (3, 4, S + 1), torch.float32, r"x_norm must have shape \[3, b, 8\]"),
        ((3, 4, S + 2), (3, 4, S + 1), torch.float32, r"x_norm must have shape \[3, b, 8\]"),
        ((3, 4, S + A), (3, 5, S + 1), torch.float32, r"target must have shape \[3, 4, 6\]"),
        ((3, 4, S + A), (3, 4, S + 1), torch.float64, "x_norm must be torch.float32"),
    ],
)
def test_bad_inputs(x_shape, y_shape, dtype, match) -> None:
    model, _ = _pair(num_members=3, num_elites=2)
    with pytest.raises(ValueError, match=match):
        ClosedFormStep(model)(torch.zeros(x_shape, dtype=dtype), torch.zeros(y_shape))


def _synthetic_arrays(n: int = 400):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, S, generator=g)
    act = torch.rand(n, A, generator=g) * 2 - 1
    next_obs = obs + 0.1 * torch.tanh(torch.cat([obs, act], 1) @ torch.randn(S + A, S, generator=g))
    rew = obs[:, 0] - act[:, 0] ** 2
    return obs.numpy(), act.numpy(), rew.numpy(), next_obs.numpy()


def _trainer() -> DynamicsTrainer:
    cfg = DynamicsConfig(
        num_models=3, num_elites=2, hidden_dim=16, epochs=3, min_epochs=0, batch_size=48
    )
    never = lambda o: torch.zeros(o.shape[0], dtype=torch.bool)  # noqa: E731
    return DynamicsTrainer(cfg, *_synthetic_arrays(), termination_fn=never)


def test_trainer_uses_the_closed_form_on_cpu_and_it_changes_no_result(monkeypatch) -> None:
    fast = _trainer()
    assert fast.closed_form is not None
    monkeypatch.setenv("EOR_BACKEND", "ref")  # the autograd path through the reference ops
    slow = _trainer()
    assert slow.closed_form is None
    monkeypatch.setenv("EOR_BACKEND", "torch")  # run: plain torch autograd, as before
    for _ in range(2):  # 320 training rows / 48: a last partial batch every epoch
        assert fast.run_epoch()["train_loss"] == slow.run_epoch()["train_loss"]
    for p, q in zip(fast.model.parameters(), slow.model.parameters(), strict=True):
        assert torch.equal(p, q)
