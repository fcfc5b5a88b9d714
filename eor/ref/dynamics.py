"""Per-member-loop reference of the dynamics ensemble (`eor.dynamics`): one nn.Module per
member as the reference code runs it, its loss, optimiser, training epoch and model step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from eor.ref.ops import bound_logvar_ref

# ============================================================================ dynamics model
# (per-member-loop reference of docs/algorithm.md §2; owned by eor/dynamics)


class DynamicsMemberRef(torch.nn.Module):
    """One dynamics member as the reference code runs it: nn.Linear layers, SiLU, two heads.

    `S+A -> H (x num_hidden, SiLU) -> mean [D]` and `-> raw logvar [D]`.
    """

    mean_head: torch.nn.Linear
    logvar_head: torch.nn.Linear

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 200, num_hidden: int = 4
    ) -> None:
        super().__init__()
        sizes = [in_dim] + [hidden_dim] * num_hidden
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.mean_head = torch.nn.Linear(hidden_dim, out_dim)
        self.logvar_head = torch.nn.Linear(hidden_dim, out_dim)
        for layer in [*self.hidden, self.mean_head, self.logvar_head]:
            std = 1.0 / (2.0 * layer.in_features**0.5)
            torch.nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
            torch.nn.init.zeros_(layer.bias)

    def layers(self) -> list[torch.nn.Linear]:
        """The hidden layers, typed (a ModuleList yields plain Modules)."""
        return [layer for layer in self.hidden if isinstance(layer, torch.nn.Linear)]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers():
            x = F.silu(layer(x))
        return self.mean_head(x), self.logvar_head(x)


class DynamicsEnsembleRef(torch.nn.Module):
    """docs/algorithm.md §2 ensemble as a Python loop over E separate member modules (the speed baseline).

    Inputs here are already normalised (`input_mean`/`input_std` buffers hold the statistics).
    """

    input_mean: Tensor
    input_std: Tensor
    elites: Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_members: int = 7,
        num_elites: int = 5,
        hidden_dim: int = 200,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.out_dim = obs_dim, act_dim, obs_dim + 1
        self.num_members, self.num_elites = num_members, num_elites
        self.members = torch.nn.ModuleList(
            DynamicsMemberRef(obs_dim + act_dim, obs_dim + 1, hidden_dim)
            for _ in range(num_members)
        )
        self.max_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), 0.5))
        self.min_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), -10.0))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(num_elites))

    def member_modules(self) -> list[DynamicsMemberRef]:
        return [m for m in self.members if isinstance(m, DynamicsMemberRef)]

    def load_stacked(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Copy stacked `[E, I, O]` weights (head `[E, H, 2D]`: mean half, then logvar half)."""
        d = self.out_dim
        with torch.no_grad():
            for e, member in enumerate(self.member_modules()):
                for layer, w, b in zip(member.layers(), weights[:-1], biases[:-1], strict=True):
                    layer.weight.copy_(w[e].T)
                    layer.bias.copy_(b[e])
                member.mean_head.weight.copy_(weights[-1][e, :, :d].T)
                member.mean_head.bias.copy_(biases[-1][e, :d])
                member.logvar_head.weight.copy_(weights[-1][e, :, d:].T)
                member.logvar_head.bias.copy_(biases[-1][e, d:])

    def normalize(self, x: Tensor) -> Tensor:
        return ((x - self.input_mean) / self.input_std).clamp(-10.0, 10.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x `[B, I]` shared or `[E, B, I]` per member -> (mean, bounded logvar) `[E, B, D]`."""
        means, logvars = [], []
        for e, member in enumerate(self.member_modules()):
            mean, raw = member(x if x.dim() == 2 else x[e])
            means.append(mean)
            logvars.append(bound_logvar_ref(raw, self.max_logvar, self.min_logvar))
        return torch.stack(means), torch.stack(logvars)

    def loss(self, mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
        """Σ_e mean_{b,d}[logvar + (y − μ)² e^{−logvar}] + 0.01 Σ max_logvar − 0.01 Σ min_logvar."""
        total = 0.01 * self.max_logvar.sum() - 0.01 * self.min_logvar.sum()
        for e in range(self.num_members):
            total = total + (logvar[e] + (target[e] - mean[e]) ** 2 * torch.exp(-logvar[e])).mean()
        return total

    def make_optimizer(self, lr: float = 1e-3, l2_reg_multiplier: float = 1.0) -> torch.optim.Adam:
        """Adam with coupled L2 on weights: hidden {2.5e-5, 5e-5, 7.5e-5, 7.5e-5}, heads 1e-4."""
        decays = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
        groups: list[dict] = []
        no_decay: list[Tensor] = [self.max_logvar, self.min_logvar]
        for member in self.member_modules():
            for layer, decay in zip(member.layers(), decays, strict=True):
                groups.append({"params": [layer.weight], "weight_decay": decay * l2_reg_multiplier})
                no_decay.append(layer.bias)
            for head in (member.mean_head, member.logvar_head):
                groups.append({"params": [head.weight], "weight_decay": 1e-4 * l2_reg_multiplier})
                no_decay.append(head.bias)
        groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=lr)

    def train_epoch(
        self,
        x_norm: Tensor,
        target: Tensor,
        order: Tensor,
        optimizer: torch.optim.Optimizer,
        batch_size: int = 256,
    ) -> float:
        """One pass: member e visits rows `order[e]` in batches."""
        batches = (
            (x_norm[idx], target[idx])
            for idx in order.split(batch_size, dim=1)  # [E, b] each
        )
        return self.train_batches(batches, optimizer)

    def train_batches(
        self, batches: Iterable[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer
    ) -> float:
        """One Adam step per (x `[E, b, I]`, target `[E, b, D]`); the mean loss."""
        losses = []
        for x, y in batches:
            mean, logvar = self(x)
            loss = self.loss(mean, logvar, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        return sum(losses) / len(losses)

    @torch.no_grad()
    def holdout_mse(self, x_norm: Tensor, target: Tensor) -> Tensor:
        """Per-member MSE of the means, `[E]`."""
        mean, _ = self(x_norm)
        return ((mean - target) ** 2).mean(dim=(1, 2))

    @torch.no_grad()
    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """docs/algorithm.md §2 model step, literally: every member predicts and samples, one elite per row.

        Draws noise `[E, B, D]` then elite slots `[B]` from `generator`.
        Returns (next_obs [B, S], reward [B], members [B], noise [E, B, D]); termination is the
        caller's (it depends on the env).
        """
        mean, logvar = self(self.normalize(torch.cat([obs, act], dim=-1)))  # [E, B, D]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        samples = dynamics_sample_ref(mean, logvar, noise)  # [E, B, D]
        slots = torch.randint(
            self.num_elites, (obs.shape[0],), generator=generator, device=obs.device
        )
        members = self.elites[slots]
        picked = samples[members, torch.arange(obs.shape[0], device=obs.device)]  # [B, D]
        return obs + picked[:, : self.obs_dim], picked[:, self.obs_dim], members, noise


def dynamics_sample_ref(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
    """Gaussian sample mean + exp(logvar/2)·noise (all the same shape)."""
    return mean + torch.exp(0.5 * logvar) * noise


def reference_epoch_batches(
    data_x: Tensor,
    data_y: Tensor,
    batch_size: int,
    generator: torch.Generator | None,
    bootstrap: str = "redeal",
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch's batches of the reference's training loop, literally.

    data_x `[E, N, I]`, data_y `[E, N, D]`: resample e's rows (the reference's
    EnsembleTransitionDataset, `data_X = x[idxs]` with `idxs` drawn once). "redeal": a fresh
    permutation `perm` of the E resamples is drawn, then one row order for all members (its
    `DataLoader(shuffle=True)`); each batch is `x_batch[:, perm]`, so member i trains on
    resample perm[i]. "fixed" (eor's option): member e keeps resample e, each member in its
    own row order (argsort of uniform noise). Draws from `generator` in that order, lazily: the
    draws happen when iteration starts.
    """
    e, n = data_x.shape[:2]
    if bootstrap == "redeal":
        perm = torch.randperm(e, generator=generator)
        rows = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batch = rows[start : start + batch_size]
            yield data_x[:, batch][perm], data_y[:, batch][perm]
    elif bootstrap == "fixed":
        order = torch.argsort(torch.rand(e, n, generator=generator), dim=1)  # [E, N]
        for idx in order.split(batch_size, dim=1):
            yield data_x.gather(1, _expand(idx, data_x)), data_y.gather(1, _expand(idx, data_y))
    else:
        raise ValueError(f"bootstrap must be 'redeal' or 'fixed', got {bootstrap!r}")


def _expand(idx: Tensor, like: Tensor) -> Tensor:
    return idx.unsqueeze(-1).expand(-1, -1, like.shape[-1])


def fit_dynamics_ref(
    model: DynamicsEnsembleRef,
    train_x: Tensor,
    train_y: Tensor,
    holdout_x: Tensor,
    holdout_y: Tensor,
    bootstrap: Tensor,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    l2_reg_multiplier: float = 1.0,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int], None] | None = None,
    bootstrap_mode: str = "redeal",
    history: list[list[float]] | None = None,
) -> tuple[list[float], list[float]]:
    """Train `epochs` epochs as the reference code does, keeping each member's best weights.

    Inputs are normalised; `bootstrap` `[E, N]` holds the E resamples' row indices, drawn once
    (the reference's EnsembleTransitionDataset). Each epoch's batches come from
    `reference_epoch_batches` (draws from `generator`): with "redeal" (the reference's
    procedure) the resamples are re-dealt to the members every epoch. A member's weights are
    saved when its holdout MSE improves by more than 1 % (the first comparison is against the
    untrained model) and restored at the end. No early stop, no lr drop: a fixed budget, for
    like-for-like comparisons. Returns (final holdout MSE per member, seconds per epoch
    including its holdout evaluation). `on_epoch(epoch)` runs after each epoch, outside the
    timing (a benchmark interleaves the other provider's epochs there). `history`, if given,
    gets each epoch's holdout MSE per member appended.
    """
    import copy
    import time

    optimizer = model.make_optimizer(lr, l2_reg_multiplier)
    best = model.holdout_mse(holdout_x, holdout_y).tolist()
    saved = [copy.deepcopy(m.state_dict()) for m in model.member_modules()]
    data_x, data_y = train_x[bootstrap], train_y[bootstrap]  # [E, N, I], [E, N, D]
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        batches = reference_epoch_batches(data_x, data_y, batch_size, generator, bootstrap_mode)
        model.train_batches(batches, optimizer)
        mse = model.holdout_mse(holdout_x, holdout_y).tolist()
        if history is not None:
            history.append(mse)
        for e, member in enumerate(model.member_modules()):
            if (best[e] - mse[e]) / best[e] > 0.01:
                best[e] = mse[e]
                saved[e] = copy.deepcopy(member.state_dict())
        times.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(len(times))
    for member, state in zip(model.member_modules(), saved, strict=True):
        member.load_state_dict(state)
    return model.holdout_mse(holdout_x, holdout_y).tolist(), times
