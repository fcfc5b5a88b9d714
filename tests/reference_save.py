"""A model directory as the reference code's dynamics training saves it, for tests.

`save_reference_model` writes what the reference's `save_ensemble_model`
(dynamics_training/ensemble.py) writes: a folder `model_<env>_seed<seed>_<time>` holding
`weights.pt` ({"model_{i}_state_dict": each member's state dict, "logvar_min", "logvar_max"})
and `data.pkl` ({"train_buffer", "valid_buffer", "state_filter", "action_filter", "params",
"validation_performance"}). The pickled objects are instances of classes that carry the
reference's module and class names (`dynamics_training.ensemble.MeanStdevFilter`,
`shared.data_buffer.DataBuffer`, installed in sys.modules only while pickling) and its
attribute layout, including the parts eor skips: the buffer's numpy Generator and the filters'
torch copies of mean and stdev. The members are `RefNet`s, with the reference's parameter
names (`net.fc1` .. `net.fc4`, `net.delta`, `net.logvar`).

These classes are written for the tests from the reference's documented behaviour; they are
not the reference's code, and eor never imports them.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class MeanStdevFilter:
    """Running mean and stdev, the reference's rule: stdev = sqrt(max(E[x²] − mean², eps)),
    then any stdev <= eps set to 1; filter = clip((x − mean)/stdev, ±clip)."""

    def __init__(self, shape: int, clip: float = 10.0) -> None:
        self.eps = 1e-12
        self.shape = shape
        self.clip = clip
        self._count = 0
        self._running_sum = np.zeros(shape)
        self._running_sum_sq = np.zeros(shape) + self.eps
        self.mean: Any = 0
        self.stdev: Any = 1
        self._set_torch()

    def update(self, x: np.ndarray) -> None:
        x = x.reshape(1, -1) if x.ndim == 1 else x
        self._running_sum += x.sum(axis=0)
        self._running_sum_sq += np.square(x).sum(axis=0)
        self._count += x.shape[0]
        self.mean = self._running_sum / self._count
        var = self._running_sum_sq / self._count - self.mean**2
        self.stdev = np.sqrt(np.maximum(var, self.eps))
        self.stdev[self.stdev <= self.eps] = 1.0
        self._set_torch()

    def _set_torch(self) -> None:
        self.torch_mean = torch.as_tensor(np.asarray(self.mean), dtype=torch.float32)
        self.torch_stdev = torch.as_tensor(np.asarray(self.stdev), dtype=torch.float32)


class DataBuffer:
    """The reference's numpy replay buffer layout (`as_numpy=True`)."""

    def __init__(self, state_dim: int, action_dim: int, buffer_size: int) -> None:
        self._buffer_size = buffer_size
        self._state_dim = state_dim
        self._action_dim = action_dim
        self._as_numpy = True
        self._pointer = 0
        self._size = 0
        self._rng = np.random.default_rng()
        z = lambda *shape: np.zeros(shape, dtype="float32")  # noqa: E731
        self._states = z(buffer_size, state_dim)
        self._actions = z(buffer_size, action_dim)
        self._rewards = z(buffer_size, 1)
        self._next_states = z(buffer_size, state_dim)
        self._dones = z(buffer_size, 1)

    def load(self, rows: dict[str, np.ndarray]) -> None:
        n = rows["observations"].shape[0]
        self._states[:n] = rows["observations"]
        self._actions[:n] = rows["actions"]
        self._rewards[:n] = rows["rewards"][:, None]
        self._next_states[:n] = rows["next_observations"]
        self._dones[:n] = rows["terminals"][:, None]
        self._size = self._pointer = n


class _BNN(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, hidden)
        self.fc4 = nn.Linear(hidden, hidden)
        self.delta = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)


class RefNet(nn.Module):
    """A member with the reference's parameter names (net.fc1 ... net.logvar)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = _BNN(in_dim, out_dim, hidden)


_MODULES = {
    "dynamics_training.ensemble": {"MeanStdevFilter": MeanStdevFilter},
    "shared.data_buffer": {"DataBuffer": DataBuffer},
}


@contextlib.contextmanager
def reference_modules() -> Iterator[None]:
    """The reference's module paths in sys.modules, for pickle to record (removed after)."""
    added = []
    saved = {cls: cls.__module__ for names in _MODULES.values() for cls in names.values()}
    try:
        for full, names in _MODULES.items():
            parent = full.split(".")[0]
            for name in (parent, full):
                if name in sys.modules:
                    raise RuntimeError(f"module {name} is already imported")
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
            for cls_name, cls in names.items():
                setattr(sys.modules[full], cls_name, cls)
                cls.__module__ = full
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)
        for cls, module in saved.items():
            cls.__module__ = module


def default_params(env_name: str, obs_dim: int, act_dim: int, **kw: Any) -> dict[str, Any]:
    """The reference's `asdict(EnsembleTrainConfig)` plus ob_dim/ac_dim."""
    params = {
        "env_name": env_name, "seed": 0, "num_models": 7, "num_elites": 5,
        "filename": "ModelBased", "log_interval": 100, "train_memory": 2_000_000,
        "val_memory": 500_000, "train_val_ratio": 0.2, "epochs": 2000, "min_epochs": 350,
        "l2_reg_multiplier": 1.0, "model_lr": 0.001, "hidden_dim": 200, "fix_std": False,
        "model_free": False, "var_max": False, "logvar_head": True, "save_model": True,
        "save_path": "./trained_dynamics", "device": "cuda:0",
    }  # fmt: skip
    params.update(kw)
    params["ob_dim"], params["ac_dim"] = obs_dim, act_dim
    return params


@dataclass
class SavedReference:
    """What `save_reference_model` wrote, and the live objects behind it."""

    path: Path
    nets: list[RefNet]
    max_logvar: torch.Tensor
    min_logvar: torch.Tensor
    state_filter: MeanStdevFilter
    action_filter: MeanStdevFilter
    val: dict[str, np.ndarray]
    params: dict[str, Any]
    data: dict[str, Any]  # the pickled dict (live objects)


def random_rows(n: int, obs_dim: int, act_dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(0.5, 2.0, (n, obs_dim)).astype(np.float32)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.normal(0, 1, n).astype(np.float32),
        "next_observations": (obs + rng.normal(0, 0.3, obs.shape)).astype(np.float32),
        "terminals": np.zeros(n, dtype=np.float32),
    }


def save_reference_model(
    root: Path,
    *,
    env_name: str = "halfcheetah-random-v2",
    obs_dim: int = 4,
    act_dim: int = 2,
    hidden: int = 8,
    num_models: int = 3,
    num_elites: int = 2,
    rows: dict[str, np.ndarray] | None = None,
    n_rows: int = 200,
    seed: int = 0,
    pickle_name: str = "data.pkl",
    protocol: int | None = None,
    member_scales: list[float] | None = None,
) -> SavedReference:
    """Write a reference-format model directory under `root` (see the module doc).

    member_scales: multiply member i's delta head by member_scales[i] (to order the members'
    validation losses). The split is the reference's `load_memory`: a random train_val_ratio
    of the rows for validation; the state filter is fitted on the first observation and all
    next observations, the action filter on all actions (the reference's quirk).
    """
    torch.manual_seed(seed)
    if rows is None:
        rows = random_rows(n_rows, obs_dim, act_dim, seed)
    n = rows["observations"].shape[0]
    params = default_params(
        env_name, obs_dim, act_dim, seed=seed, num_models=num_models, num_elites=num_elites,
        hidden_dim=hidden, train_memory=n, val_memory=n,
    )  # fmt: skip
    nets = [RefNet(obs_dim + act_dim, obs_dim + 1, hidden) for _ in range(num_models)]
    with torch.no_grad():
        for i, net in enumerate(nets):
            scale = 1.0 if member_scales is None else member_scales[i]
            net.net.delta.weight.mul_(scale)
            net.net.delta.bias.mul_(scale)
    d = obs_dim + 1
    max_logvar = (torch.full((d,), 0.5) + 0.1 * torch.randn(d)).requires_grad_(True)
    min_logvar = (torch.full((d,), -10.0) + 0.1 * torch.randn(d)).requires_grad_(True)

    perm = np.random.default_rng(seed + 1).permutation(n)
    n_val = int(n * params["train_val_ratio"])
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train, valid = DataBuffer(obs_dim, act_dim, n), DataBuffer(obs_dim, act_dim, n)
    train.load({k: v[train_idx] for k, v in rows.items()})
    valid.load({k: v[val_idx] for k, v in rows.items()})
    state_filter, action_filter = MeanStdevFilter(obs_dim), MeanStdevFilter(act_dim)
    state_filter.update(rows["observations"][0])
    state_filter.update(rows["next_observations"])
    action_filter.update(rows["actions"])

    stamp = time.strftime("%Y_%m_%d_%H-%M-%S")
    path = Path(root) / f"model_{env_name}_seed{seed}_{stamp}"
    path.mkdir(parents=True, exist_ok=False)
    best_weights = [copy.deepcopy(net.state_dict()) for net in nets]
    state = {f"model_{i}_state_dict": w for i, w in enumerate(best_weights)}
    state["logvar_min"] = min_logvar
    state["logvar_max"] = max_logvar
    torch.save(state, path / "weights.pt")
    data = {
        "train_buffer": train,
        "valid_buffer": valid,
        "state_filter": state_filter,
        "action_filter": action_filter,
        "params": params,
        "validation_performance": np.random.default_rng(seed).uniform(0.1, 1.0, num_models),
    }
    write_pickle(path / pickle_name, data, protocol=protocol)
    val = {k: v[val_idx] for k, v in rows.items()}
    return SavedReference(
        path, nets, max_logvar, min_logvar, state_filter, action_filter, val, params, data
    )


def write_pickle(file: Path, obj: Any, protocol: int | None = None) -> None:
    """pickle.dump under the reference's module paths (protocol None: Python's default)."""
    with reference_modules(), open(file, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
