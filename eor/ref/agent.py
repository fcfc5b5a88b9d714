"""The RAVL learner as the reference code writes it (`eor.agent`): the actor, the vectorised
critics and one update, with explicit generators so eor can be checked draw for draw."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# ============================================================================ RAVL agent
# (plain autograd reference update of docs/algorithm.md §3; owned by eor/agent)
#
# CORL's EDAC as RAVL adapted it (agent_training/agent.py of the RAVL code), restyled: nn.Module
# critics fed an input repeated per critic, torch.distributions for the policy, autograd double
# backward for the diversity term, the logging-only q_random_std pass and .item() syncs on every
# update. Two additions so that `eor.agent.RAVL` can be checked against it draw for draw: every
# random draw takes an explicit torch.Generator, and the critics can load stacked tensors.


class ActorRef(torch.nn.Module):
    """Tanh-Gaussian actor exactly as the reference (parameter names included)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, max_action: float = 1.0):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, hidden_dim),
            torch.nn.ReLU(),
        )
        self.mu = torch.nn.Linear(hidden_dim, act_dim)
        self.log_sigma = torch.nn.Linear(hidden_dim, act_dim)
        for layer in self.trunk:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.constant_(layer.bias, 0.1)
        for head in (self.mu, self.log_sigma):
            torch.nn.init.uniform_(head.weight, -1e-3, 1e-3)
            torch.nn.init.uniform_(head.bias, -1e-3, 1e-3)
        self.act_dim = act_dim
        self.max_action = max_action

    def forward(
        self,
        state: Tensor,
        deterministic: bool = False,
        need_log_prob: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        hidden = self.trunk(state)
        mu, log_sigma = self.mu(hidden), self.log_sigma(hidden)
        log_sigma = torch.clip(log_sigma, -5, 2)
        policy_dist = torch.distributions.Normal(mu, torch.exp(log_sigma))
        if deterministic:
            action = mu
        else:  # = policy_dist.rsample(), with the noise from `generator`
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            action = mu + torch.exp(log_sigma) * eps
        tanh_action, log_prob = torch.tanh(action), None
        if need_log_prob:
            log_prob = policy_dist.log_prob(action).sum(dim=-1)
            log_prob = log_prob - torch.log(1 - tanh_action.pow(2) + 1e-6).sum(dim=-1)
        return tanh_action * self.max_action, log_prob


class VectorizedLinearRef(torch.nn.Module):
    """x `[N, B, I]` @ W `[N, I, O]` + b `[N, 1, O]`; per-member kaiming init as the reference."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = torch.nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        for member in range(ensemble_size):
            torch.nn.init.kaiming_uniform_(self.weight[member], a=5**0.5)
        bound = 1 / out_features**0.5  # torch's fan_in of an [I, O] slice is O
        torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class VectorizedCriticRef(torch.nn.Module):
    """N critics concat(s, a) -> H -> H -> H -> 1, the input repeated once per critic."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, num_critics: int):
        super().__init__()
        self.critic = torch.nn.Sequential(
            VectorizedLinearRef(obs_dim + act_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, 1, num_critics),
        )
        self.layers = [m for m in self.critic if isinstance(m, VectorizedLinearRef)]
        with torch.no_grad():
            for layer in self.layers:
                torch.nn.init.constant_(layer.bias, 0.1)
            torch.nn.init.uniform_(self.layers[-1].weight, -3e-3, 3e-3)
            torch.nn.init.uniform_(self.layers[-1].bias, -3e-3, 3e-3)
        self.num_critics = num_critics

    @torch.no_grad()
    def load_stacked(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Copy in eor's layout: weights[l] `[N, I, O]`, biases[l] `[N, O]`."""
        for layer, w, b in zip(self.layers, weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b.unsqueeze(1))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """state `[B, S]` or `[N, B, S]`, action likewise -> Q `[N, B]`."""
        state_action = torch.cat([state, action], dim=-1)
        if state_action.dim() != 3:
            state_action = state_action.unsqueeze(0).repeat_interleave(self.num_critics, dim=0)
        return self.critic(state_action).squeeze(-1)


def soft_update_ref(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


RAVL_STEPS: tuple[str, ...] = ("alpha", "actor", "critic", "polyak")
"""The four steps of one RAVL update, in the reference's order (docs/algorithm.md §3)."""


class RAVLRef:
    """The reference SAC-N + EDAC update (docs/algorithm.md §3 order: α, actor, critic, Polyak).

    All draws come from `generator`, in this order: α-step ε `[B, A]`, actor-step ε, target ε
    (at s′), then, on updates with `log=True` only, the uniform actions of q_random_std (the
    reference computes it on every update, though it logs only every `log_every`-th; eor's
    learner computes it on log updates only, so `update(..., log=False)` skips it and its draw
    to keep the two draw for draw in step).

    step_order: for tests only: a permutation of `RAVL_STEPS` runs the four steps in that order
        (the equivalence tests use it to show that they notice a moved step). Each step still
        takes the ε of its own slot in the default order, so only the order of the steps
        differs.
    """

    def __init__(
        self,
        actor: ActorRef,
        critic: VectorizedCriticRef,
        *,
        gamma: float = 0.99,
        tau: float = 5e-3,
        eta: float = 1.0,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        target_entropy: float | None = None,
        generator: torch.Generator | None = None,
        step_order: Sequence[str] = RAVL_STEPS,
    ):
        import copy

        if sorted(step_order) != sorted(RAVL_STEPS):
            raise ValueError(
                f"step_order must be a permutation of {list(RAVL_STEPS)}, got {list(step_order)}"
            )
        if tuple(step_order) != RAVL_STEPS and generator is None:
            raise ValueError("step_order other than the default needs an explicit generator")
        self.step_order = tuple(step_order)
        self.actor = actor
        self.critic = critic
        with torch.no_grad():
            self.target_critic = copy.deepcopy(critic)
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=actor_lr)
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_lr)
        self.gamma, self.tau, self.eta = gamma, tau, eta
        self.target_entropy = -float(actor.act_dim) if target_entropy is None else target_entropy
        param = next(actor.parameters())
        self.log_alpha = torch.tensor(
            [0.0], dtype=param.dtype, device=param.device, requires_grad=True
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=alpha_lr)
        self.alpha = self.log_alpha.exp().detach()
        self.generator = generator

    def _alpha_loss(self, state: Tensor, generator: torch.Generator | None) -> Tensor:
        with torch.no_grad():
            _, action_log_prob = self.actor(state, need_log_prob=True, generator=generator)
        return (-self.log_alpha * (action_log_prob + self.target_entropy)).mean()

    def _actor_loss(
        self, state: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, float, float, float]:
        action, action_log_prob = self.actor(state, need_log_prob=True, generator=generator)
        q_value_dist = self.critic(state, action)
        q_value_min = q_value_dist.min(0).values
        q_value_std = q_value_dist.std(0).mean().item()
        batch_entropy = -action_log_prob.mean().item()
        q_value_mean = q_value_dist.mean().item()
        loss = (self.alpha * action_log_prob - q_value_min).mean()
        return loss, batch_entropy, q_value_std, q_value_mean

    def _critic_diversity_loss(self, state: Tensor, action: Tensor) -> Tensor:
        num_critics = self.critic.num_critics
        state = state.unsqueeze(0).repeat_interleave(num_critics, dim=0)  # [N, B, S]
        action = action.unsqueeze(0).repeat_interleave(num_critics, dim=0).requires_grad_(True)
        q_ensemble = self.critic(state, action)  # [N, B]
        (q_action_grad,) = torch.autograd.grad(
            q_ensemble.sum(), action, retain_graph=True, create_graph=True
        )  # [N, B, A]
        q_action_grad = q_action_grad / (
            torch.norm(q_action_grad, p=2, dim=2).unsqueeze(-1) + 1e-10
        )
        q_action_grad = q_action_grad.transpose(0, 1)  # [B, N, A]
        masks = (
            torch.eye(num_critics, dtype=state.dtype, device=state.device)
            .unsqueeze(0)
            .repeat(q_action_grad.shape[0], 1, 1)
        )
        q_action_grad = q_action_grad @ q_action_grad.permute(0, 2, 1)  # [B, N, N]
        q_action_grad = (1 - masks) * q_action_grad
        return q_action_grad.sum(dim=(1, 2)).mean() / (num_critics - 1)

    def _critic_target(
        self, reward: Tensor, next_state: Tensor, done: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """y `[B, 1]` from reward and done `[B, 1]`."""
        with torch.no_grad():
            next_action, next_action_log_prob = self.actor(
                next_state, need_log_prob=True, generator=generator
            )
            q_next = self.target_critic(next_state, next_action).min(0).values
            q_next = q_next - self.alpha * next_action_log_prob
            return reward + self.gamma * (1 - done) * q_next.unsqueeze(-1)

    def _critic_loss(
        self,
        state: Tensor,
        action: Tensor,
        reward: Tensor,
        next_state: Tensor,
        done: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        q_target = self._critic_target(reward, next_state, done, generator)
        q_values = self.critic(state, action)
        critic_loss = ((q_values - q_target.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)
        if self.eta == 0.0:
            return critic_loss
        return critic_loss + self.eta * self._critic_diversity_loss(state, action)

    def _slot_generators(self, shape: torch.Size, like: Tensor) -> list[torch.Generator | None]:
        """The generators of the three policy samples (α, actor, target).

        In the default order all three are `self.generator`, drawn from in turn. With another
        `step_order`, three copies positioned where the default order's α, actor and target ε
        start, and `self.generator` advanced past the three, as the default order leaves it.
        """
        if self.step_order == RAVL_STEPS or self.generator is None:
            return [self.generator] * 3
        copies: list[torch.Generator | None] = []
        for _ in range(3):
            slot = torch.Generator(device=self.generator.device)
            slot.set_state(self.generator.get_state())
            copies.append(slot)
            torch.randn(shape, generator=self.generator, dtype=like.dtype, device=like.device)
        return copies

    def update(self, batch: Sequence[Tensor], log: bool = True) -> dict[str, float]:
        """batch: [state `[B, S]`, action `[B, A]`, reward `[B, 1]`, next_state, done `[B, 1]`].

        log: False skips the logging-only q_random_std (and its draw); every other key is
        returned either way.
        """
        state, action, reward, next_state, done = batch
        alpha_gen, actor_gen, target_gen = self._slot_generators(action.shape, action)
        info: dict[str, float] = {}

        def alpha_step() -> None:
            alpha_loss = self._alpha_loss(state, alpha_gen)
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()
            self.alpha = self.log_alpha.exp().detach()
            info["alpha_loss"] = alpha_loss.item()

        def actor_step() -> None:
            actor_loss, batch_entropy, q_policy_std, q_policy_mean = self._actor_loss(
                state, actor_gen
            )
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            info["actor_loss"] = actor_loss.item()
            info["batch_entropy"] = batch_entropy
            info["q_policy_mean"] = q_policy_mean
            info["q_policy_std"] = q_policy_std

        def critic_step() -> None:
            critic_loss = self._critic_loss(state, action, reward, next_state, done, target_gen)
            self.critic_optimizer.zero_grad()
            critic_loss.backward()
            self.critic_optimizer.step()
            info["critic_loss"] = critic_loss.item()

        def polyak_step() -> None:
            with torch.no_grad():
                soft_update_ref(self.target_critic, self.critic, tau=self.tau)

        steps = {
            "alpha": alpha_step,
            "actor": actor_step,
            "critic": critic_step,
            "polyak": polyak_step,
        }
        for name in self.step_order:  # RAVL_STEPS unless a test moves one
            steps[name]()

        info["alpha"] = self.alpha.item()
        if log:
            with torch.no_grad():
                max_action = self.actor.max_action
                random_actions = -max_action + 2 * max_action * torch.rand(
                    action.shape,
                    generator=self.generator,
                    dtype=action.dtype,
                    device=action.device,
                )
                info["q_random_std"] = self.critic(state, random_actions).std(0).mean().item()
        return info


def sample_mixed_ref(
    buffers: Sequence[dict[str, object]], counts: Sequence[int], rng: object, device: str = "cpu"
) -> list[Tensor]:
    """The reference's batch: per buffer `rng.choice(len, n, replace=False)` (numpy Generator),
    gathered and concatenated, as [state, action, reward `[B, 1]`, next_state, done `[B, 1]`].

    buffers: dicts of numpy arrays with keys obs, act, rew, next_obs, done (rows = transitions).
    """
    import numpy as np

    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for buf, n in zip(buffers, counts, strict=True):
        size = len(buf["obs"])  # type: ignore[arg-type]
        idx = rng.choice(size, size=n, replace=False)  # type: ignore[attr-defined]
        for i, key in enumerate(("obs", "act", "rew", "next_obs", "done")):
            parts[i].append(np.asarray(buf[key])[idx])
    out = [torch.as_tensor(np.concatenate(p), device=device) for p in parts]
    out[2] = out[2].reshape(-1, 1)
    out[4] = out[4].reshape(-1, 1)
    return out
