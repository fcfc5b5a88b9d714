"""eor's learner against the plain autograd reference `eor.ref.RAVLRef` over many consecutive
updates (docs/algorithm.md §3): same initial weights, same batches, same random draws, float64.

One update is compared gradient by gradient in tests/test_agent_ravl.py; here the two run side
by side for `N_UPDATES` updates, optimiser state included (eor's fused `torch.optim.Adam`,
the reference's plain `torch.optim.Adam`), with a log step every `LOG_EVERY` updates as the
trainer does, and every parameter, the target critics, log α and the returned losses are
compared after every update. The tolerance is a rounding-level one: the two compute the same
maths in different orders (closed-form critic gradients, min-critic actor gradient, fused Adam)
and any mistake in the steps, their order or the draws is many orders of magnitude above it,
which the moved-step tests at the end measure.
"""

from __future__ import annotations

import math

import pytest
import torch

from eor.agent import RAVL, RAVLConfig
from eor.agent.ravl import LOGGED_KEYS, LOSS_KEYS
from eor.ref import RAVL_STEPS, RAVLRef
from tests.test_agent_ravl import _batch, _ref_batch, _reference_of

F64 = torch.float64
N_UPDATES = 120
LOG_EVERY = 10
BATCH = 32
TOL = 1e-11
"""Largest allowed |eor − ref| / max|ref| per tensor, and |eor − ref| / max(|ref|, 1) per
logged scalar. float64 rounds at ~1e-16 relative; the two compute the same maths in a different
order, and their differences grow over the updates (Adam's step g/√v passes on relative
differences of small gradients) to a measured worst of 3.4e-15 (critic.W3, eta 1; target.W2,
eta 0) over 120 updates. 1e-11 leaves a factor ~3000 for other CPUs and BLAS builds, and stays
1000 times below the smallest effect of a moved step on the parameters (α after the actor step:
4e-8 after one update; the others move some parameter by 1e-6 or more, see the last tests)."""


def _pair(eta: float, step_order: tuple[str, ...] = RAVL_STEPS) -> tuple[RAVL, RAVLRef]:
    cfg = RAVLConfig(obs_dim=5, act_dim=3, hidden_dim=16, num_critics=4, eta=eta)
    learner = RAVL(cfg, dtype=F64, seed=7)
    # targets unlike the critics, so that mixing them up, or a Polyak step in the wrong place,
    # changes the result from the first update on
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in learner.target_critic.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=F64))
    ref = _reference_of(learner)
    if step_order != RAVL_STEPS:
        lrs = [o.param_groups[0]["lr"] for o in (ref.actor_optimizer, ref.critic_optimizer)]
        ref = RAVLRef(
            ref.actor,
            ref.critic,
            gamma=ref.gamma,
            tau=ref.tau,
            eta=ref.eta,
            actor_lr=lrs[0],
            critic_lr=lrs[1],
            alpha_lr=ref.alpha_optimizer.param_groups[0]["lr"],
            target_entropy=ref.target_entropy,
            generator=ref.generator,
            step_order=step_order,
        )
        ref.target_critic.load_stacked(*learner.target_critic.params(detach=True))
    return learner, ref


def _tensors(learner: RAVL, ref: RAVLRef) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, eor's tensor, the reference's) for every parameter, target and log α."""
    pairs = [("log_alpha", learner.log_alpha.reshape(1), ref.log_alpha)]
    for (name, p), q in zip(learner.actor.named_parameters(), ref.actor.parameters(), strict=True):
        pairs.append((f"actor.{name}", p, q))
    for module, ref_module, what in (
        (learner.critic, ref.critic, "critic"),
        (learner.target_critic, ref.target_critic, "target"),
    ):
        for layer, ref_layer in enumerate(ref_module.layers):
            pairs.append((f"{what}.W{layer}", module.weights[layer], ref_layer.weight))
            pairs.append((f"{what}.b{layer}", module.biases[layer], ref_layer.bias.squeeze(1)))
    return [(n, a.detach(), b.detach()) for n, a, b in pairs]


def _errors(learner: RAVL, ref: RAVLRef, ours: dict, theirs: dict) -> dict[str, float]:
    """Relative error of every compared tensor and logged value (see TOL)."""
    out = {}
    for name, a, b in _tensors(learner, ref):
        assert a.shape == b.shape, f"{name}: shape {a.shape} vs {b.shape}"
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        out[name] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
    for key, value in ours.items():
        assert math.isfinite(value), f"{key}: {value}"
        out[key] = abs(value - theirs[key]) / max(abs(theirs[key]), 1.0)
    return out


def _run(
    eta: float, step_order: tuple[str, ...] = RAVL_STEPS, n_updates: int = N_UPDATES
) -> tuple[RAVL, list[dict[str, float]]]:
    """Run both for n_updates: eor's learner and the errors after each update (`_errors`)."""
    learner, ref = _pair(eta, step_order)
    history = []
    for i in range(n_updates):
        batch = _batch(learner.config, BATCH, seed=1000 + i)
        log = (i + 1) % LOG_EVERY == 0
        ours = learner.update(batch, log=log)
        theirs = ref.update(_ref_batch(batch), log=log)
        assert set(ours) == set(LOGGED_KEYS if log else LOSS_KEYS)
        history.append(_errors(learner, ref, ours, theirs))
    return learner, history


def _worst(errors: dict[str, float]) -> tuple[str, float]:
    name = max(errors, key=errors.__getitem__)
    return name, errors[name]


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_many_updates_match_reference_float64(eta: float) -> None:
    learner, history = _run(eta)
    for i, errors in enumerate(history):
        name, err = _worst(errors)
        assert err <= TOL, f"update {i + 1}: {name} differs from the reference by {err:.3g}"
    # every parameter (actor, critics, targets, log α) and every logged key was compared
    n_params = sum(1 for _ in learner.actor.parameters()) + 2 * len(learner._online_params) + 1
    assert len(set().union(*history)) == n_params + len(LOGGED_KEYS)
    # eor's optimisers are torch's fused Adam
    optims = [learner.actor_optim, learner.critic_optim, learner.alpha_optim]
    assert all(o.defaults["fused"] for o in optims)


def _parameter_errors(errors: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in errors.items() if k not in LOGGED_KEYS}


@pytest.mark.parametrize(
    "step_order",
    [
        ("alpha", "actor", "polyak", "critic"),  # Polyak before the critic step
        ("actor", "alpha", "critic", "polyak"),  # α after the actor step
        ("alpha", "critic", "actor", "polyak"),  # critic before the actor step
    ],
    ids=["polyak-before-critic", "alpha-after-actor", "critic-before-actor"],
)
def test_a_moved_step_is_far_outside_the_tolerance(step_order: tuple[str, ...]) -> None:
    """The same comparison against a reference with one step moved (each step still with its
    own draws) fails on the parameters by over 1000 times the tolerance from the first update.

    Measured worst parameter error after updates 1 / 10 / 120: Polyak before critic
    3.9e-5 / 3.9e-4 / 3.4e-2; α after actor 4.2e-8 / 3.7e-6 / 1.9e-6; critic before actor
    1.3e-6 / 4.2e-4 / 3.4e-2 (and 2.5e-4 to 3.9e-4 on a loss from the first update).
    """
    _, history = _run(1.0, step_order, n_updates=LOG_EVERY)
    for i in (0, LOG_EVERY - 1):
        name, err = _worst(_parameter_errors(history[i]))
        assert err > 1e3 * TOL, f"{step_order}, update {i + 1}: worst {name} only {err:.3g}"
    assert _worst(history[0])[1] > 1e6 * TOL  # a logged loss tells at once, too


def test_reference_rejects_a_step_order_that_is_not_a_permutation() -> None:
    _, ref = _pair(1.0)
    with pytest.raises(ValueError, match="step_order must be a permutation"):
        RAVLRef(ref.actor, ref.critic, generator=ref.generator, step_order=("alpha", "actor"))
    with pytest.raises(ValueError, match="needs an explicit generator"):
        RAVLRef(ref.actor, ref.critic, step_order=("actor", "alpha", "critic", "polyak"))
