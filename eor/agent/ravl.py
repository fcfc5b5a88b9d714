"""The RAVL learner (docs/algorithm.md §3): SAC with an N-critic ensemble, the EDAC diversity term and auto-α.

One `RAVL.update(batch)` does, in this order (the reference's, which EDAC's paper uses):

1. α step:      L_α = −log α · mean(log π(a|s) + H̄),  a ~ π(·|s), no actor gradient;
2. actor step:  L_π = mean(α · log π(ã|s) − minᵢ Qᵢ(s, ã)),  ã ~ π(·|s), with the NEW α and the
                critics as they are before this update's critic step;
3. critic step: y = r + γ (1 − d) (minᵢ Q̄ᵢ(s′, a′) − α log π(a′|s′)),  a′ ~ π(·|s′) from the
                actor after step 2, min over all N target critics;
                L_Q = Σᵢ meanₙ (Qᵢ(s, a) − y)² + η · L_div  (`eor.ops.critic_loss_grads`);
4. Polyak:      Q̄ ← (1 − τ) Q̄ + τ Q.

With `auto_alpha=False` step 1 is skipped: α stays at `alpha` (the reference's fixed-α mode),
log α is not learned, there is no α optimiser and `update` returns no alpha_loss (the
reference logs None).

Where it departs from the reference (`eor.ref.RAVLRef`, CORL's EDAC as RAVL adapted it) for speed,
with the same result up to rounding:

* the actor step differentiates the critics with respect to the action only, and only through
  the critic attaining the min for each row (1/N of the backward work): the reference also
  computes every critic's weight gradients there and throws them away;
* the critic loss and its gradients come from `eor.ops.critic_loss_grads` (closed form, one
  forward shared by the TD and diversity terms, no autograd; written into the same gradient
  buffers every update) instead of autograd double backward over an input repeated per critic;
* the target uses `eor.ops.ensemble_mlp(..., reduce="min")` without autograd;
* logging-only work (q_random_std needs a whole extra critic forward; the reference runs it every
  update) runs only on updates with `log=True`;
* Polyak averaging is one `torch._foreach_lerp_` over all target tensors, Adam is fused;
* losses are read back to the host at most once per update (see `update`).

All random draws (ε of the three policy samples, the uniform actions of q_random_std) come from
the learner's own `torch.Generator`, saved in `state_dict`, so a restored learner continues the
same stream.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eor import ops
from eor.agent.networks import Actor, VectorizedCritic

LOGGED_KEYS: tuple[str, ...] = (
    "alpha_loss",
    "critic_loss",
    "actor_loss",
    "batch_entropy",
    "alpha",
    "q_policy_mean",
    "q_policy_std",
    "q_random_std",
)
"""Keys `update(..., log=True)` returns (docs/algorithm.md §3's logged quantities)."""

LOSS_KEYS: tuple[str, ...] = ("alpha_loss", "critic_loss", "actor_loss")
BATCH_KEYS: tuple[str, ...] = ("obs", "act", "rew", "next_obs", "done")


def batch_items(batch: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
    """The five entries of a batch in `BATCH_KEYS` order, from a mapping with those keys or a
    sequence of five; ValueError naming what is missing otherwise."""
    if isinstance(batch, Mapping):
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise ValueError(f"batch is missing {missing}; expected keys {list(BATCH_KEYS)}")
        return [batch[k] for k in BATCH_KEYS]
    items = list(batch)
    if len(items) != len(BATCH_KEYS):
        raise ValueError(
            f"batch must hold {len(BATCH_KEYS)} arrays {list(BATCH_KEYS)}, got {len(items)}"
        )
    return items


class NonFiniteLossError(FloatingPointError):
    """A loss of a RAVL update was NaN or infinite.

    The optimiser steps of that update have already run, so the learner's parameters are no
    longer trustworthy: stop, and restart from the last checkpoint written before the error.
    """


@dataclass
class RAVLHyperparams:
    """The RAVL learner's hyperparameters (docs/algorithm.md §3 defaults), without the shapes.

    Declared once, here: `RAVLConfig` adds the env's shapes, and `eor train-agent`'s
    `TrainAgentConfig` inherits these fields (its options; each `help` is the option's help).
    """

    hidden_dim: int = field(
        default=256, metadata={"help": "Width of the actor's and critics' three hidden layers."}
    )
    num_critics: int = field(
        default=10, metadata={"help": "Critics in the ensemble (N); >= 2 when eta > 0."}
    )
    # --- objective ---
    gamma: float = field(default=0.99, metadata={"help": "Discount factor."})
    tau: float = field(default=5e-3, metadata={"help": "Polyak rate of the target critics."})
    eta: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the EDAC diversity term (0 disables it, and then one "
            "critic is allowed)."
        },
    )
    actor_lr: float = field(default=3e-4, metadata={"help": "Actor learning rate (Adam)."})
    critic_lr: float = field(default=3e-4, metadata={"help": "Critic learning rate (Adam)."})
    alpha_lr: float = field(
        default=3e-4, metadata={"help": "Entropy temperature learning rate (Adam)."}
    )
    # Every supported env's action box is [-1, 1]: beyond it MuJoCo clips the controls (the
    # control cost uses the action as given), as with the reference.
    max_action: float = field(
        default=1.0,
        metadata={
            "help": "The actor acts in [-max_action, max_action] (tanh output scaled), in "
            "rollouts and evaluation."
        },
    )
    alpha: float = field(
        default=0.1,
        metadata={
            "help": "Fixed entropy coefficient, used when auto_alpha is False (ignored "
            "otherwise, as in the reference)."
        },
    )
    auto_alpha: bool = field(
        default=True,
        metadata={
            "help": "Learn the entropy coefficient (log alpha starts at 0, as the "
            "reference); False: alpha fixed."
        },
    )
    target_entropy: float | None = field(
        default=None,
        metadata={"help": "Target entropy of the alpha loss [default: -action dim]."},
    )

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and the range it must be in."""
        for name in ("hidden_dim", "num_critics"):
            _positive_int(self, name)

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            return float(value)

        if not 0.0 <= number("gamma") <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not 0.0 < number("tau") <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        if number("eta") < 0.0:
            raise ValueError(f"eta must be >= 0, got {self.eta!r}")
        if self.eta > 0 and self.num_critics < 2:
            raise ValueError(
                f"num_critics must be >= 2 when eta > 0 (the diversity term compares pairs of "
                f"critics), got num_critics={self.num_critics} with eta={self.eta}; "
                "set eta to 0 (--eta 0) for a single critic"
            )
        if number("max_action") <= 0.0:
            raise ValueError(f"max_action must be > 0, got {self.max_action!r}")
        for name in ("actor_lr", "critic_lr", "alpha_lr"):
            if number(name) <= 0.0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if self.target_entropy is not None:
            number("target_entropy")
        if not isinstance(self.auto_alpha, (bool, np.bool_)):
            raise ValueError(f"auto_alpha must be True or False, got {self.auto_alpha!r}")
        if number("alpha") < 0.0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")


def _positive_int(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(kw_only=True)
class RAVLConfig(RAVLHyperparams):
    """The learner's full config: its hyperparameters and the env's shapes."""

    obs_dim: int
    act_dim: int

    def __post_init__(self) -> None:
        self.validate()

    @property
    def entropy_target(self) -> float:
        """The target entropy H̄ in use: `target_entropy`, or −act_dim when that is None."""
        return -float(self.act_dim) if self.target_entropy is None else float(self.target_entropy)

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field and the range it must be in."""
        for name in ("obs_dim", "act_dim"):
            _positive_int(self, name)
        super().validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RAVLConfig:
        """Inverse of `to_dict`; keys that are not RAVLConfig fields are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _adam(params: Iterable[Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused implementation where torch has one for these tensors (CPU and CUDA
    since torch 2.4), else the multi-tensor
    one. Same maths as the reference's plain Adam."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


class RAVL:
    """The RAVL learner: actor, critic ensemble, target critics, log α and three Adam optimisers
    (two, and a constant α, with `config.auto_alpha` False).

    Args:
        config: the hyperparameters.
        device: where the networks live; batches are moved there.
        dtype: parameter dtype (float32; float64 is used by the equivalence tests).
        seed: seeds the initial weights and the learner's generator for all update-time draws.
            None draws a seed from torch's global RNG (so `torch.manual_seed` still fixes it).
    """

    def __init__(
        self,
        config: RAVLConfig,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        # Weights are drawn on the CPU so that the same seed gives the same net on every device.
        init_gen = torch.Generator().manual_seed(int(seed))
        c = config
        self.actor = Actor(c.obs_dim, c.act_dim, c.hidden_dim, c.max_action, generator=init_gen)
        self.critic = VectorizedCritic(
            c.obs_dim, c.act_dim, c.hidden_dim, c.num_critics, generator=init_gen
        )
        self.actor.to(self.device, dtype)
        self.critic.to(self.device, dtype)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optim = _adam(self.actor.parameters(), c.actor_lr)
        self.critic_optim = _adam(self.critic.parameters(), c.critic_lr)
        self.alpha_optim: torch.optim.Adam | None
        if c.auto_alpha:
            self.log_alpha = torch.zeros((), device=self.device, dtype=dtype, requires_grad=True)
            self.alpha = self.log_alpha.detach().exp()
            self.alpha_optim = _adam([self.log_alpha], c.alpha_lr)
        else:
            # α exactly as given (the reference keeps the tensor `alpha`, not exp(log alpha));
            # log α only for the state dict.
            self.alpha = torch.tensor(float(c.alpha), device=self.device, dtype=dtype)
            self.log_alpha = self.alpha.log()
            self.alpha_optim = None

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=init_gen).item()))
        self.num_updates = 0
        self._target_params: list[Tensor] = list(self.target_critic.parameters())
        self._online_params: list[Tensor] = list(self.critic.parameters())
        # Device-side record of a non-finite loss since the last host check (update(check_finite=False)).
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self._unchecked_since = 0

    # ------------------------------------------------------------------------------- properties
    @property
    def gamma(self) -> float:
        return self.config.gamma

    @property
    def eta(self) -> float:
        return self.config.eta

    @property
    def target_entropy(self) -> float:
        return self.config.entropy_target

    # ------------------------------------------------------------------------------- losses
    def _alpha_loss(self, dist: tuple[Tensor, Tensor]) -> Tensor:
        """L_α = −mean(log α · (log π(a|s) + H̄)), a ~ π, the actor held fixed. Scalar.

        dist: the actor's (μ, log σ) at the batch's obs (`Actor.dist_params`).
        """
        with torch.no_grad():
            mu, log_sigma = dist
            _, log_prob = self.actor.sample(mu, log_sigma, generator=self.generator)
        assert log_prob is not None
        return -(self.log_alpha * (log_prob + self.target_entropy)).mean()

    def _actor_loss(
        self, dist: tuple[Tensor, Tensor], obs: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """L_π = mean(α · log π(ã|s) − minᵢ Qᵢ(s, ã)), ã ~ π, with the current α.

        dist: the actor's (μ, log σ) at obs, differentiable (shared with the α step: the actor
        does not change between the two, only a fresh ε is drawn).
        Returns (loss, log π(ã|s) `[B]` detached, Q(s, ã) `[N, B]` detached). Gradients flow to
        the actor only: the critics' action gradient is computed without autograd and only
        through the critic that attains the min (`VectorizedCritic.min_q_and_action_grad`).
        """
        action, log_prob = self.actor.sample(*dist, generator=self.generator)  # [B, A], [B]
        assert log_prob is not None
        q, q_min, grad_a = self.critic.min_q_and_action_grad(obs, action.detach())
        # minᵢ Qᵢ(s, ã) as a function of ã for autograd: its value exactly (the added term is
        # 0) and its gradient ∇ₐ minᵢ Qᵢ, computed above through the selected critic only.
        q_min = q_min + ((action - action.detach()) * grad_a).sum(dim=-1)  # [B]
        loss = (self.alpha * log_prob - q_min).mean()
        return loss, log_prob.detach(), q

    @torch.no_grad()
    def _critic_target(self, rew: Tensor, next_obs: Tensor, done: Tensor) -> Tensor:
        """y = r + γ (1 − d) (minᵢ Q̄ᵢ(s′, a′) − α log π(a′|s′)), a′ ~ π. Shapes `[B]`."""
        next_action, next_log_prob = self.actor(next_obs, generator=self.generator)
        assert next_log_prob is not None
        q_next = self.target_critic.q_values(next_obs, next_action, reduce="min")  # [B]
        return rew + self.gamma * (1.0 - done) * (q_next - self.alpha * next_log_prob)

    def _critic_grads(
        self, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, done: Tensor
    ) -> Tensor:
        """L_Q = Σᵢ meanₙ (Qᵢ(s, a) − y)² + η · L_div and its gradients, set as the critics'
        `.grad` (closed form, no autograd; fresh gradient tensors every update).

        Returns L_Q, detached.
        """
        target = self._critic_target(rew, next_obs, done)  # [B]
        weights, biases = self.critic.params(detach=True)
        out = ops.critic_loss_grads(obs, act, target, weights, biases, self.eta)
        assert out.weight_grads is not None and out.bias_grads is not None
        for param, grad in zip(
            self._online_params, [*out.weight_grads, *out.bias_grads], strict=True
        ):
            param.grad = grad
        return out.td + self.eta * out.diversity

    @torch.no_grad()
    def _polyak(self) -> None:
        """Q̄ ← Q̄ + τ (Q − Q̄), all target tensors in one multi-tensor op."""
        torch._foreach_lerp_(self._target_params, self._online_params, self.config.tau)

    # ------------------------------------------------------------------------------- update
    def update(
        self,
        batch: Mapping[str, Any] | Sequence[Any],
        *,
        log: bool = False,
        check_finite: bool = True,
    ) -> dict[str, float]:
        """One RAVL update (module docstring) on a batch of B transitions.

        batch: a mapping with obs `[B, S]`, act `[B, A]`, rew `[B]`, next_obs `[B, S]`, done `[B]`
            (numpy arrays, as `eor.ReplayBuffer.sample` returns, or tensors), or those five in
            that order.
        log: also compute and return every key of `LOGGED_KEYS`; this costs an extra critic
            forward (q_random_std) and is meant for every `log_every`-th update only.
        check_finite: read the three losses back to the host (one sync) and raise
            `NonFiniteLossError` if any is NaN or infinite; returns them as floats. With False
            (and log=False) nothing leaves the device and {} is returned; a non-finite loss is
            then remembered on the device and raised by the next checked update or by
            `raise_if_nonfinite()`. On CPU the check costs nothing; on a GPU it drains the
            launch queue once per update.

        Returns: {} or the losses (alpha_loss, critic_loss, actor_loss) or, with log=True, every
        key of LOGGED_KEYS, as Python floats; without alpha_loss when α is fixed. critic_loss
        includes η · L_div, as the reference's.
        """
        obs, act, rew, next_obs, done = self._batch_tensors(batch)
        losses, log_prob, q_policy = self._update_step(obs, act, rew, next_obs, done)
        self.num_updates += 1
        stats = self._log_stats(obs, act, log_prob, q_policy) if log else None
        return self._read_losses(losses, stats, check_finite=check_finite)

    @property
    def loss_keys(self) -> tuple[str, ...]:
        """The keys of `_update_step`'s losses, in order: LOSS_KEYS, without alpha_loss when α
        is fixed."""
        if self.alpha_optim is not None:
            return LOSS_KEYS
        return tuple(k for k in LOSS_KEYS if k != "alpha_loss")

    def _update_step(
        self, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, done: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-4 of the module docstring on device tensors, with no host sync and no
        Python branch on a tensor value (so `eor.agent.cuda_graph` can capture it); it does not
        count the update (`num_updates`).

        Returns (losses `[len(loss_keys)]` detached, log π(ã|s) `[B]`, Q(s, ã) `[N, B]`), the
        last two for `_log_stats`.
        """
        # 1. α, from a fresh policy sample and without actor gradients. The actor's trunk at obs
        # is computed once for steps 1 and 2 (the actor only changes after step 2). Skipped,
        # with its draw, when α is fixed (as in the reference).
        dist = self.actor.dist_params(obs)
        alpha_loss: Tensor | None = None
        if self.alpha_optim is not None:
            alpha_loss = self._alpha_loss(dist)
            self.alpha_optim.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optim.step()
            self.alpha = self.log_alpha.detach().exp()

        # 2. actor, with the new α and the critics before their step.
        actor_loss, log_prob, q_policy = self._actor_loss(dist, obs)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()

        # 3. critics, target from the updated actor.
        critic_loss = self._critic_grads(obs, act, rew, next_obs, done)
        self.critic_optim.step()

        # 4. targets.
        self._polyak()

        parts = [critic_loss, actor_loss.detach()]
        if alpha_loss is not None:
            parts.insert(0, alpha_loss.detach())
        return torch.stack(parts), log_prob, q_policy

    def _read_losses(
        self, losses: Tensor, stats: Tensor | None, *, check_finite: bool
    ) -> dict[str, float]:
        """The host side of `update`: losses `[len(loss_keys)]` and the `_log_stats` tensor (or
        None) read back in one transfer and checked, or (stats None, check_finite False) only
        folded into the device-side non-finite flag."""
        keys = self.loss_keys
        if stats is None and not check_finite:
            self._nonfinite |= ~torch.isfinite(losses).all()
            self._unchecked_since += 1
            return {}
        if stats is not None:
            values = torch.cat([losses, stats])
            keys = keys + LOGGED_KEYS[len(LOSS_KEYS) :]
        else:
            values = losses
        host = values.tolist()  # the one device -> host transfer of this update
        out = dict(zip(keys, host, strict=True))
        self._raise_if_bad([out[k] for k in LOSS_KEYS if k in out], out)
        return out

    @torch.no_grad()
    def _log_stats(self, obs: Tensor, act: Tensor, log_prob: Tensor, q_policy: Tensor) -> Tensor:
        """batch_entropy, alpha, q_policy_mean, q_policy_std, q_random_std as one tensor `[5]`.

        Stds are over the ensemble (unbiased, as torch.std in the reference) then averaged over
        the batch; with one critic they are 0 (the reference would give NaN).
        q_random_std uses the critics after this update's step, at a ~ U[−max_action, max_action].
        """
        max_action = self.config.max_action
        random_act = -max_action + 2 * max_action * torch.rand(
            act.shape, generator=self.generator, device=act.device, dtype=act.dtype
        )
        q_random = self.critic.q_values(obs, random_act)  # [N, B]
        if self.config.num_critics > 1:
            q_policy_std = q_policy.std(dim=0).mean()
            q_random_std = q_random.std(dim=0).mean()
        else:
            q_policy_std = q_random_std = q_policy.new_zeros(())
        return torch.stack(
            [
                -log_prob.mean(),
                self.alpha.reshape(()),
                q_policy.mean(),
                q_policy_std,
                q_random_std,
            ]
        )

    def _raise_if_bad(self, losses: Sequence[float], out: Mapping[str, float]) -> None:
        pending = self._unchecked_since
        flagged = pending > 0 and bool(self._nonfinite.item())
        self._nonfinite.zero_()
        self._unchecked_since = 0
        if all(math.isfinite(v) for v in losses) and not flagged:
            return
        if flagged:
            where = f"in one of updates {self.num_updates - pending}..{self.num_updates}"
        else:
            where = f"at update {self.num_updates}"
        detail = ", ".join(f"{k}={out[k]!r}" for k in LOSS_KEYS if k in out)
        raise NonFiniteLossError(
            f"non-finite RAVL loss {where} ({detail}); the parameters are no longer valid: "
            "check the batch (NaN/inf in obs, act, rew, next_obs or done?) and restart from "
            "the last good checkpoint"
        )

    def raise_if_nonfinite(self) -> None:
        """Raise NonFiniteLossError if an unchecked update (check_finite=False) had a
        non-finite loss. One host sync."""
        if self._unchecked_since:
            self._raise_if_bad([0.0], {})

    def _batch_tensors(self, batch: Mapping[str, Any] | Sequence[Any]) -> list[Tensor]:
        items = batch_items(batch)
        out = [
            torch.as_tensor(x).to(device=self.device, dtype=self.dtype, non_blocking=True)
            for x in items
        ]
        obs, act, rew, next_obs, done = out
        b = obs.shape[0] if obs.dim() == 2 else -1
        c = self.config
        expected = {
            "obs": (b, c.obs_dim),
            "act": (b, c.act_dim),
            "rew": (b,),
            "next_obs": (b, c.obs_dim),
            "done": (b,),
        }
        for i, key in enumerate(BATCH_KEYS):
            t = out[i]
            if key in ("rew", "done") and t.dim() == 2 and t.shape[1] == 1:
                out[i] = t = t.reshape(-1)  # [B, 1] -> [B]
            if b < 1 or tuple(t.shape) != expected[key]:
                shape = f"[B, {expected[key][1]}]" if len(expected[key]) == 2 else "[B]"
                raise ValueError(
                    f"batch[{key!r}] must have shape {shape} with the same B >= 1 for all "
                    f"entries, got {tuple(t.shape)} (obs {tuple(obs.shape)})"
                )
        return out

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: config, actor, critics, targets, log α, the three
        optimisers (alpha_optim None when α is fixed), the update-time generator and the update
        counter."""
        return {
            "config": self.config.to_dict(),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            # Copies: torch's optimiser state_dict holds the live moment tensors, and
            # load_state_dict keeps tensors of the right dtype and device as they are, so an
            # in-memory round trip would make two learners share (and both step) one state.
            "actor_optim": copy.deepcopy(self.actor_optim.state_dict()),
            "critic_optim": copy.deepcopy(self.critic_optim.state_dict()),
            "alpha_optim": None
            if self.alpha_optim is None
            else copy.deepcopy(self.alpha_optim.state_dict()),
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "num_updates": self.num_updates,
        }

    def reference_state_dict(self) -> dict[str, Any]:
        """The learner in the reference's `Agent.state_dict()` layout (what its `--save` wrote
        to weights.pt), loadable by the reference's `Agent.load_state_dict`:

            actor           the actor's state dict (the same parameter names as the reference's)
            critic,         {"critic.{2l}.weight": `[N, I, O]`, "critic.{2l}.bias": `[N, 1, O]`},
            target_critic   l = 0..3 (the reference's nn.Sequential of VectorizedLinear)
            log_alpha       a float (log of the fixed α when auto_alpha is False)
            actor_optim,    torch Adam state dicts, parameters in the reference's order and
            critic_optim,   shapes (alpha_optim None when α is fixed: the reference has no α
            alpha_optim     optimiser then, and its own save crashed there)

        plus "config" (this learner's RAVLConfig as a dict), so `eor.agent.load_actor` reads
        the file too. Tensors are cloned to the CPU.
        """
        weights, biases = self.critic.params(detach=True)
        num_layers = len(weights)

        def critic_layout(module: Any) -> dict[str, Tensor]:
            ws, bs = module.params(detach=True)
            out: dict[str, Tensor] = {}
            for layer, (w, b) in enumerate(zip(ws, bs, strict=True)):
                out[f"critic.{2 * layer}.weight"] = w.cpu().clone()
                out[f"critic.{2 * layer}.bias"] = b.unsqueeze(1).cpu().clone()
            return out

        def optim_layout(
            optim: torch.optim.Optimizer, order: list[int], shapes: list[torch.Size]
        ) -> dict[str, Any]:
            """optim's state dict with parameter order[i] as parameter i, shaped shapes[i]."""
            sd = copy.deepcopy(optim.state_dict())
            state = {}
            for new_index, (old_index, shape) in enumerate(zip(order, shapes, strict=True)):
                if old_index in sd["state"]:
                    entry = sd["state"][old_index]
                    state[new_index] = {
                        k: (v.reshape(shape).cpu() if k != "step" else v.cpu())
                        for k, v in entry.items()
                    }
            for group in sd["param_groups"]:
                group["params"] = list(range(len(order)))
                group["fused"] = None  # torch's default, whatever optimiser loads it
            sd["state"] = state
            return sd

        critic_order = [i for layer in range(num_layers) for i in (layer, num_layers + layer)]
        critic_shapes = [
            weights[layer].shape if i < num_layers else biases[i - num_layers].unsqueeze(1).shape
            for layer in range(num_layers)
            for i in (layer, num_layers + layer)
        ]
        actor_shapes = [p.shape for p in self.actor.parameters()]
        return {
            "actor": {k: v.detach().cpu().clone() for k, v in self.actor.state_dict().items()},
            "critic": critic_layout(self.critic),
            "target_critic": critic_layout(self.target_critic),
            "log_alpha": float(self.log_alpha.detach().item()),
            "actor_optim": optim_layout(
                self.actor_optim, list(range(len(actor_shapes))), actor_shapes
            ),
            "critic_optim": optim_layout(self.critic_optim, critic_order, critic_shapes),
            "alpha_optim": None
            if self.alpha_optim is None
            else optim_layout(self.alpha_optim, [0], [torch.Size([1])]),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output (of a learner with the same shapes)."""
        saved = RAVLConfig.from_dict(state["config"])
        for name in ("obs_dim", "act_dim", "hidden_dim", "num_critics"):
            if getattr(saved, name) != getattr(self.config, name):
                raise ValueError(
                    f"state_dict was saved with {name}={getattr(saved, name)}, "
                    f"this learner has {name}={getattr(self.config, name)}"
                )
        for name in ("auto_alpha", "alpha") if not saved.auto_alpha else ("auto_alpha",):
            if getattr(saved, name) != getattr(self.config, name):
                raise ValueError(
                    f"state_dict was saved with {name}={getattr(saved, name)}, "
                    f"this learner has {name}={getattr(self.config, name)}"
                )
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        if self.alpha_optim is not None:
            with torch.no_grad():
                self.log_alpha.copy_(torch.as_tensor(state["log_alpha"]).reshape(()))
            self.alpha = self.log_alpha.detach().exp()
            self.alpha_optim.load_state_dict(state["alpha_optim"])
        gen_state = torch.as_tensor(state["generator"]).cpu()
        if state.get("generator_device", self.device.type) == self.device.type:
            self.generator.set_state(gen_state)
        else:
            # Generator states do not carry across device kinds (a CPU state cannot seed a CUDA
            # generator): continue from a seed derived from the saved state instead.
            digest = hashlib.sha256(gen_state.numpy().tobytes()).digest()
            self.generator.manual_seed(int.from_bytes(digest[:8], "little") % 2**62)
        self.num_updates = int(state.get("num_updates", 0))


def actor_from_state(
    state: Mapping[str, Any], config: RAVLConfig | Mapping[str, Any] | None = None
) -> Actor:
    """Rebuild the actor (in eval mode, on the CPU) from `RAVL.state_dict()` output.

    state: a learner state dict, or a checkpoint dict holding one under "learner".
    config: the RAVLConfig (or its dict); default: the one stored in the state dict.
    """
    if "actor" not in state and "learner" in state:
        state = state["learner"]
    if "actor" not in state:
        raise ValueError(
            f"not a RAVL learner state: expected an 'actor' (or 'learner') entry, "
            f"found keys {sorted(state)}"
        )
    if config is None:
        config = state.get("config")
        if config is None:
            raise ValueError("the state dict holds no 'config'; pass config=RAVLConfig(...)")
    if not isinstance(config, RAVLConfig):
        config = RAVLConfig.from_dict(config)
    actor = Actor(config.obs_dim, config.act_dim, config.hidden_dim, config.max_action)
    actor_state = {k: torch.as_tensor(v).cpu() for k, v in state["actor"].items()}
    dtype = next(iter(actor_state.values())).dtype
    actor.to(dtype).load_state_dict(actor_state)
    return actor.eval()
