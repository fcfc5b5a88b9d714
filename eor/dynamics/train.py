"""Training the dynamics ensemble (docs/algorithm.md §2): split, bootstrap, Adam, early
stopping, elites.

    trainer = DynamicsTrainer(config, obs, act, rew, next_obs, env_name="halfcheetah")
    trainer.start()                         # holdout MSE before training (epoch 0)
    while not trainer.done:
        metrics = trainer.run_epoch()       # one pass over each member's bootstrap
    trainer.finish()                        # restore best weights, choose the elites

Everything random comes from `config.seed` through four independent streams (split, init,
bootstrap, per-epoch shuffles); the shuffle stream's state is part of `state_dict()`, so a
resumed run continues exactly as an uninterrupted one would.

Bootstrap (`config.bootstrap`, docs/algorithm.md §2). E with-replacement resamples of the
training rows are drawn once. With "redeal" (the default, the reference code's procedure) every
epoch deals the E resamples to the E members by a fresh permutation, and one row order is shared
by all members (the reference's `DataLoader(shuffle=True)` over `[E]`-stacked rows), so over the
epochs each member sees about all the training rows. With "fixed" member e always trains on
resample e, each member in its own fresh row order every epoch (eor's earlier behaviour, kept
bit for bit so that model directories written before the option resume exactly).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from eor import ops
from eor.dynamics.config import DTYPES, DynamicsConfig
from eor.dynamics.model import DynamicsEnsemble, TerminationFn
from eor.dynamics.step import ClosedFormStep

# ----------------------------------------------------------------------------- early stopping


@dataclass
class StopDecision:
    """What the rule says after one epoch."""

    improved: list[int]  # members whose best holdout MSE (and weights) were updated
    lower_lr: bool  # multiply the learning rate by lr_decay now
    stop: bool  # restore the best weights and stop
    reason: str = ""  # "no improvement" or "max epochs" when stop


@dataclass
class EarlyStopping:
    """docs/algorithm.md §2's stopping rule, as a small pure state machine over holdout losses.

    `start(losses)` records the losses before training (epoch 0) as each member's best. After
    every epoch, `update(epoch, losses)`:
      - member i improves when (best_i − loss_i)/best_i > threshold; its best becomes loss_i
        (the caller then keeps that member's weights);
      - if none of the last `patience` epochs improved any member: after epoch min_epochs
        (epoch > min_epochs: the reference tests `i >= min_epochs` on its 0-based epoch index)
        stop; before that lower the lr once (if not yet done), start a fresh window (the
        reference empties its `val_improve` deque) and keep going. The window then slides: once
        the lr is lowered, each further epoch without improvement asks again, and only stopping
        or an improvement ends that;
      - at epoch ≥ max_epochs stop regardless (the hard cap).
    The reference's loop (train_dynamics_model.py, the `val_improve` deque) is re-implemented in
    the tests and compared with this one on random improvement sequences.
    """

    num_members: int
    min_epochs: int
    max_epochs: int
    patience: int = 5
    threshold: float = 0.01
    best: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    epochs_since_update: int = 0
    lr_lowered: bool = False
    epoch: int = 0

    def start(self, losses: Any) -> None:
        values = self._check(losses)
        self.best = values
        self.best_epoch = [0] * self.num_members
        self.epochs_since_update = 0
        self.lr_lowered = False
        self.epoch = 0

    def update(self, epoch: int, losses: Any) -> StopDecision:
        if not self.best:
            raise RuntimeError("EarlyStopping.update called before start")
        values = self._check(losses)
        self.epoch = epoch
        improved = []
        for i, (best, cur) in enumerate(zip(self.best, values, strict=True)):
            # A best of 0 cannot improve by a relative margin; a NaN loss never improves.
            if best > 0 and (best - cur) / best > self.threshold:
                improved.append(i)
                self.best[i] = cur
                self.best_epoch[i] = epoch
        self.epochs_since_update = 0 if improved else self.epochs_since_update + 1
        lower_lr, stop, reason = False, False, ""
        if self.epochs_since_update >= self.patience:
            if epoch > self.min_epochs:
                stop, reason = True, "no improvement"
            elif not self.lr_lowered:
                lower_lr = self.lr_lowered = True
                self.epochs_since_update = 0
        if not stop and epoch >= self.max_epochs:
            stop, reason = True, "max epochs"
        return StopDecision(improved, lower_lr, stop, reason)

    def members_improving(self) -> int:
        """Members that improved within the last `patience` epochs."""
        return sum(1 for e in self.best_epoch if self.epoch - e < self.patience and e > 0)

    def last_improvement(self) -> int:
        """The latest epoch at which any member improved (0: none since the start)."""
        return max(self.best_epoch) if self.best_epoch else 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)

    def _check(self, losses: Any) -> list[float]:
        values = [float(v) for v in np.asarray(losses, dtype=np.float64).reshape(-1)]
        if len(values) != self.num_members:
            raise ValueError(f"expected {self.num_members} losses, got {len(values)}")
        return values


# ----------------------------------------------------------------------------- trainer


def _streams(seed: int) -> dict[str, int]:
    """Independent seeds for the split, the init, the bootstrap and the shuffles."""
    split, init, boot, shuffle = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    return {"split": int(split), "init": int(init), "bootstrap": int(boot), "shuffle": int(shuffle)}


def split_indices(n: int, train_val_ratio: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train_idx, holdout_idx), a seeded permutation of range(n); holdout = int(n · ratio) rows.

    *Quirk fixed* (docs/algorithm.md §2): the split is made once, and the holdout rows are never
    trained on.
    """
    n_holdout = int(n * train_val_ratio)
    if n_holdout < 1 or n - n_holdout < 1:
        raise ValueError(
            f"the dataset has {n} transitions: too few for a train_val_ratio of {train_val_ratio} "
            "(need at least one training and one holdout transition)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_streams(seed)["split"]))
    return perm[n_holdout:], perm[:n_holdout]


def bootstrap_indices(n_train: int, num_members: int, seed: int) -> Tensor:
    """Each member's with-replacement resample of the training rows: int64 `[E, n_train]`."""
    gen = torch.Generator().manual_seed(_streams(seed)["bootstrap"])
    return torch.randint(n_train, (num_members, n_train), generator=gen)


class DynamicsTrainer:
    """Owns the model, the data split, the optimiser and the early-stopping state."""

    def __init__(
        self,
        config: DynamicsConfig,
        obs: np.ndarray | Tensor,
        act: np.ndarray | Tensor,
        rew: np.ndarray | Tensor,
        next_obs: np.ndarray | Tensor,
        *,
        env_name: str | None = None,
        device: str | torch.device = "cpu",
        termination_fn: TerminationFn | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.device = torch.device(device)
        dtype = DTYPES[config.dtype]
        obs_t, act_t, rew_t, next_t = (
            torch.as_tensor(a).to(dtype) for a in (obs, act, rew, next_obs)
        )
        _check_arrays(obs_t, act_t, rew_t, next_t)
        n, obs_dim = obs_t.shape
        config.check_memory(n)
        act_dim = act_t.shape[1]
        inputs = torch.cat([obs_t, act_t], dim=1)  # [N, S+A]
        targets = torch.cat(
            [next_t - obs_t, rew_t.reshape(-1, 1)], dim=1
        )  # [N, S+1], not normalised
        train_idx, holdout_idx = split_indices(n, config.train_val_ratio, config.seed)
        self.n_train, self.n_holdout = len(train_idx), len(holdout_idx)

        streams = _streams(config.seed)
        self.model = DynamicsEnsemble(
            obs_dim,
            act_dim,
            num_members=config.num_models,
            num_elites=config.num_elites,
            hidden_dim=config.hidden_dim,
            env_name=env_name,
            termination_fn=termination_fn,
            generator=torch.Generator().manual_seed(streams["init"]),
        ).to(dtype)  # the float32 init, upcast for float64
        # The normaliser sees all training inputs, never the holdout (docs/algorithm.md §2, quirk
        # fixed).
        self.model.normalizer.fit(inputs[train_idx])
        self.model.to(self.device)
        with torch.no_grad():  # inputs are normalised once, not per batch
            self.train_x = self.model.normalizer(inputs[train_idx].to(self.device))  # [Nt, S+A]
            self.holdout_x = self.model.normalizer(inputs[holdout_idx].to(self.device))  # [Nh, S+A]
        self.train_y = targets[train_idx].to(self.device)  # [Nt, D]
        self.holdout_y = targets[holdout_idx].to(self.device)  # [Nh, D]
        self.bootstrap = bootstrap_indices(self.n_train, config.num_models, config.seed)  # [E, Nt]
        self.shuffle_gen = torch.Generator().manual_seed(streams["shuffle"])

        # torch.optim.Adam with weight_decay is Adam's *coupled* L2 (grad += λ·w), as §2 says;
        # AdamW would be decoupled.
        # fused: one kernel per group per step, about 3x cheaper than the foreach path on CPU.
        self.optimizer = torch.optim.Adam(
            self.model.param_groups(config.l2_reg_multiplier), lr=config.model_lr, fused=True
        )
        # Where ensemble_linear runs plain torch (the CPU), the closed-form step (same values,
        # no autograd, no per-step allocations); with Triton, autograd through its kernels.
        self.closed_form: ClosedFormStep | None = (
            ClosedFormStep(self.model)
            if ops.backend_for("ensemble_linear", self.device) == "torch"
            else None
        )
        self.stopper = EarlyStopping(
            config.num_models,
            min_epochs=config.min_epochs,
            max_epochs=config.epochs,
            patience=config.max_epochs_since_update,
            threshold=config.improvement_threshold,
        )
        self.best_params = [p.detach().clone() for p in self._member_params()]
        self.epoch = 0
        self.done = False
        self.stop_reason = ""
        self.holdout_losses: list[float] = []
        self.epoch_times: list[float] = []

    # ------------------------------------------------------------------ steps

    def _member_params(self) -> list[Tensor]:
        """Per-member parameters (weights and biases, member dim first). The shared logvar
        bounds are not per member; like the reference, restoring keeps their latest value."""
        return [*self.model.weights, *self.model.biases]

    def start(self) -> dict[str, Any]:
        """Evaluate the holdout before training (epoch 0) and start the stopping rule."""
        mse = self.holdout_mse()
        self.stopper.start(mse)
        self.holdout_losses = mse
        return {"epoch": 0, "holdout_mse": mse, "lr": self.lr}

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def holdout_mse(self) -> list[float]:
        return [float(v) for v in self.model.holdout_mse(self.holdout_x, self.holdout_y).cpu()]

    def epoch_order(self) -> Tensor:
        """The training rows each member visits this epoch, in order: int64 `[E, Nt]`.

        Draws from the shuffle stream. "redeal": member i gets resample deal[i] (a fresh
        permutation of the E resamples), all members in one shared row order, both drawn in
        that order, as the reference does (its member permutation, then its DataLoader's
        shuffle). "fixed": member e keeps resample e, each in its own row order.
        """
        e, n = self.bootstrap.shape
        if self.config.bootstrap == "redeal":
            deal = torch.randperm(e, generator=self.shuffle_gen)  # [E]
            rows = torch.randperm(n, generator=self.shuffle_gen)  # [Nt]
            return self.bootstrap[deal][:, rows]
        perm = torch.argsort(torch.rand(e, n, generator=self.shuffle_gen), dim=1)  # [E, Nt]
        return self.bootstrap.gather(1, perm)

    def train_epoch(self) -> float:
        """One pass over the bootstrap resamples (`epoch_order`); the mean batch loss."""
        order = self.epoch_order().to(self.device)  # [E, Nt]
        n = order.shape[1]
        bs = self.config.batch_size
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        batches = 0
        self.model.train()
        for start in range(0, n, bs):
            x, y = self._batch(order[:, start : start + bs])  # [E, b, S+A], [E, b, D]
            if self.closed_form is not None:
                loss = self.closed_form(x, y)  # sets every .grad
            else:
                loss = self.model.training_loss(x, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
            total += loss.detach()
            batches += 1
        return float(total) / batches

    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's rows `idx` `[E, b]` of the training inputs and targets, gathered into
        fresh `[E, b, ·]` tensors."""
        e, b = idx.shape
        flat = idx.reshape(-1)
        x = torch.index_select(self.train_x, 0, flat).view(e, b, -1)
        return x, torch.index_select(self.train_y, 0, flat).view(e, b, -1)

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, evaluate, apply the stopping rule. Returns the epoch's metrics."""
        if self.done:
            raise RuntimeError("training is already finished")
        if not self.stopper.best:
            self.start()
        t0 = time.perf_counter()
        train_loss = self.train_epoch()
        self.epoch += 1
        mse = self.holdout_mse()
        decision = self.stopper.update(self.epoch, mse)
        if decision.improved:
            with torch.no_grad():
                rows = torch.tensor(decision.improved, device=self.device)
                for best, p in zip(self.best_params, self._member_params(), strict=True):
                    best[rows] = p[rows]
        if decision.lower_lr:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.lr_decay
        self.holdout_losses = mse
        if decision.stop:
            self.done = True
            self.stop_reason = decision.reason
        self.epoch_times.append(time.perf_counter() - t0)
        return {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "holdout_mse": mse,
            "improved": decision.improved,
            "lr": self.lr,
            "lr_lowered": decision.lower_lr,
            "epoch_time": self.epoch_times[-1],
        }

    def finish(self) -> list[float]:
        """Restore each member's best weights, re-evaluate, choose the elites (lowest holdout
        MSE). Returns the final per-member holdout MSE."""
        with torch.no_grad():
            for best, p in zip(self.best_params, self._member_params(), strict=True):
                p.copy_(best)
        mse = self.holdout_mse()
        order = sorted(range(len(mse)), key=lambda i: mse[i])
        self.model.set_elites(sorted(order[: self.config.num_elites]))
        self.holdout_losses = mse
        self.done = True
        return mse

    def fit(self) -> list[float]:
        """Run to the end (no checkpoints, no progress bar); the final per-member holdout MSE."""
        if not self.stopper.best:
            self.start()
        while not self.done:
            self.run_epoch()
        return self.finish()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs beyond what config + dataset rebuild deterministically.

        A copy: on the CPU `.cpu()` and the optimiser's state_dict alias the live tensors, and
        a trainer loading an aliased state in the same process would share Adam's moments."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "stopper": self.stopper.state_dict(),
            "best_params": [b.detach().cpu().clone() for b in self.best_params],
            "shuffle_gen": self.shuffle_gen.get_state(),
            "epoch": self.epoch,
            "done": self.done,
            "stop_reason": self.stop_reason,
            "holdout_losses": list(self.holdout_losses),
            "epoch_times": list(self.epoch_times),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stopper.load_state_dict(state["stopper"])
        with torch.no_grad():
            for best, saved in zip(self.best_params, state["best_params"], strict=True):
                best.copy_(saved)
        self.shuffle_gen.set_state(state["shuffle_gen"])
        self.epoch = int(state["epoch"])
        self.done = bool(state["done"])
        self.stop_reason = str(state["stop_reason"])
        self.holdout_losses = list(state["holdout_losses"])
        self.epoch_times = list(state["epoch_times"])


def _check_arrays(obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor) -> None:
    if obs.dim() != 2 or obs.shape[0] == 0:
        raise ValueError(f"observations must have shape [N > 0, S], got {tuple(obs.shape)}")
    n = obs.shape[0]
    if act.dim() != 2 or act.shape[0] != n:
        raise ValueError(f"actions must have shape [{n}, A], got {tuple(act.shape)}")
    if rew.reshape(-1).shape[0] != n:
        raise ValueError(f"rewards must have {n} entries, got shape {tuple(rew.shape)}")
    if next_obs.shape != obs.shape:
        raise ValueError(
            f"next_observations must have shape {tuple(obs.shape)}, got {tuple(next_obs.shape)}"
        )
    for name, t in (
        ("observations", obs),
        ("actions", act),
        ("rewards", rew),
        ("next_observations", next_obs),
    ):
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).reshape(n, -1).any(dim=1).sum())
            raise ValueError(f"{name} has non-finite values in {bad} rows; clean the dataset first")
