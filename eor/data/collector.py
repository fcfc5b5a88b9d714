"""`collect`: real D4RL-format data from the gymnasium MuJoCo simulator.

D4RL's recipe: episodes of at most 1000 steps; `terminals` where the env really terminated,
`timeouts` where the time limit cut the episode (never both). Every row also stores its true
`next_observations`, so no transition ever crosses an episode boundary.

Runs K envs in a gymnasium SyncVectorEnv with SAME_STEP autoreset (K = 1: a plain env loop): the step that ends an
episode returns the next episode's first observation, and the real final observation comes in
`infos["final_obs"]`. Each env fills its own episode buffer, and finished episodes are copied
to the output in completion order, so episodes stay contiguous in the file. The last episode
written is cut to reach exactly `steps` rows (its last row is neither terminal nor timeout);
the unfinished episodes of the other envs are discarded.

Measured on a 2-core machine (HalfCheetah, random policy): one plain env ~24k steps/s,
SyncVectorEnv(4) ~20k, AsyncVectorEnv(2 or 4) ~5k (IPC dominates a cheap step). So random data
uses one env; a torch policy gains from a batched forward over a few envs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eor.envs import (
    EnvSpec,
    d4rl_file_name,
    get_env,
    make_env,
    make_vector_env,
    parse_dataset_name,
)
from eor.fileio import umask_mode

from . import sources

logger = logging.getLogger("eor.data")

Policy = Callable[[np.ndarray], np.ndarray]  # obs [K, S] float32 -> actions [K, A]
MAX_EPISODE_STEPS = 1000


def _load_policy(path: str | Path, device: str) -> tuple[Any, bool]:
    """(actor, zero_contact_forces) of a checkpoint file or run directory, read once.

    Resolves and reads the file as `eor.agent.load_actor` does. zero_contact_forces is the
    decision the training run recorded in its checkpoints (False when absent: a bare state
    dict, or a run from before it was recorded).
    """

    from eor.agent import actor_from_state
    from eor.agent.checkpoint import read_checkpoint

    _, state = read_checkpoint(path)
    return actor_from_state(state).to(device), bool(state.get("zero_contact_forces", False))


def _checkpoint_policy(
    path: str | Path, spec: EnvSpec, device: str, deterministic: bool, seed: int
) -> tuple[Policy, bool]:
    """A numpy policy over the checkpoint's `actor.act`, sampling with its own seeded torch
    generator so that a collection is reproducible; and whether it zeroes contact forces.

    A policy trained on data without contact forces (its run recorded zero_contact_forces)
    sees them zeroed here too, as in its evaluation; the env, and so the data written, keeps
    the real forces.
    """
    import torch

    actor, zero_contact_forces = _load_policy(path, device)
    dims = (getattr(actor, "obs_dim", spec.obs_dim), getattr(actor, "act_dim", spec.act_dim))
    if dims != (spec.obs_dim, spec.act_dim):
        raise ValueError(
            f"policy checkpoint {path} is for obs_dim={dims[0]}, act_dim={dims[1]}, but "
            f"{spec.name} has obs_dim={spec.obs_dim}, act_dim={spec.act_dim}"
        )
    cols = spec.contact_force_columns if zero_contact_forces else None
    if zero_contact_forces and cols is None:
        raise ValueError(
            f"policy checkpoint {path} was trained with zero_contact_forces, but {spec.name} "
            "has no contact-force columns"
        )
    if cols is not None:
        logger.info(
            "%s: the policy's run recorded zero_contact_forces=true: its inputs get zeros in "
            "observation columns %d:%d; the data keeps the simulator's contact forces",
            spec.name,
            cols[0],
            cols[1],
        )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        if cols is not None:
            obs = np.array(obs, dtype=np.float32)  # a copy: the caller's rows are the data
            obs[:, cols[0] : cols[1]] = 0.0
        with torch.no_grad():
            a = actor.act(torch.as_tensor(obs, device=device), deterministic, generator=generator)
        return a.detach().to("cpu", torch.float32).numpy()

    return act, cols is not None


class _PlainEnvs:
    """K plain envs stepped in a Python loop, with SyncVectorEnv's SAME_STEP interface.

    Used for K = 1 (the random-policy default), where the vector env's own bookkeeping costs
    more than the simulation it wraps. Same seeding and reset order as SyncVectorEnv, so both
    produce identical data (tested).
    """

    def __init__(self, spec: EnvSpec, num_envs: int) -> None:
        self.envs = [make_env(spec) for _ in range(num_envs)]
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        obs = [env.reset(seed=seed + j)[0] for j, env in enumerate(self.envs)]
        return np.stack(obs), {}

    def step(
        self, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        k = len(self.envs)
        nxt = np.empty((k,) + self.envs[0].observation_space.shape, np.float64)
        rew = np.empty(k)
        term = np.zeros(k, bool)
        trunc = np.zeros(k, bool)
        final: list[Any] = [None] * k
        for j, env in enumerate(self.envs):
            o, rew[j], term[j], trunc[j], _ = env.step(act[j])
            if term[j] or trunc[j]:
                final[j] = o
                o, _ = env.reset()
            nxt[j] = o
        return nxt, rew, term, trunc, {"final_obs": final}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _run(
    spec: EnvSpec,
    steps: int,
    seed: int,
    policy: Policy | None,
    noise: float,
    num_envs: int,
    progress: bool,
    vector: bool | None = None,
) -> dict[str, np.ndarray]:
    """Step the envs until `steps` rows of whole episodes are gathered; return raw arrays.

    vector: use gymnasium's SyncVectorEnv (default when num_envs > 1) or plain envs.
    """
    from tqdm import tqdm

    k, s, a, t = num_envs, spec.obs_dim, spec.act_dim, MAX_EPISODE_STEPS
    if vector is None:
        vector = k > 1
    venv: Any = (
        make_vector_env(spec, k, autoreset_mode="SameStep") if vector else _PlainEnvs(spec, k)
    )
    try:
        low = venv.single_action_space.low.astype(np.float32)
        high = venv.single_action_space.high.astype(np.float32)
        rng = np.random.default_rng(seed)
        out = {
            "observations": np.empty((steps, s), np.float32),
            "actions": np.empty((steps, a), np.float32),
            "rewards": np.empty(steps, np.float32),
            "next_observations": np.empty((steps, s), np.float32),
            "terminals": np.zeros(steps, bool),
            "timeouts": np.zeros(steps, bool),
        }
        # Step-major ring log [L, K, ...] of the last L steps of every env; env j's current
        # episode began at global step start[j]. L > T, so a whole episode is always in it, and
        # each step costs only plain row writes; the gather happens once per episode.
        ring = 2 * t
        log = {key: np.zeros((ring, k) + arr.shape[1:], arr.dtype) for key, arr in out.items()}
        start = np.zeros(k, np.int64)
        written = 0
        c = 0
        obs, _ = venv.reset(seed=seed)
        bar = tqdm(total=steps, unit="step", disable=not progress, desc=f"collect {spec.name}")
        while written < steps:
            if policy is None:
                act = rng.uniform(low, high, size=(k, a)).astype(np.float32)
            else:
                act = np.asarray(policy(np.asarray(obs, np.float32)), dtype=np.float32)
                if act.shape != (k, a) or not np.isfinite(act).all():
                    raise ValueError(
                        f"policy returned actions of shape {act.shape} (finite: "
                        f"{bool(np.isfinite(act).all())}); expected finite [{k}, {a}]"
                    )
                if noise > 0:
                    act = np.clip(act + rng.normal(0.0, noise, act.shape), low, high)
                    act = act.astype(np.float32)
            nxt, rew, term, trunc, info = venv.step(act)
            r = c % ring
            log["observations"][r] = obs
            log["actions"][r] = act
            log["rewards"][r] = rew
            log["next_observations"][r] = nxt
            log["terminals"][r] = term
            log["timeouts"][r] = trunc
            done = term | trunc
            if done.any():
                for j in np.flatnonzero(done):
                    # SAME_STEP autoreset: nxt[j] is already the next episode's first
                    # observation; the real final one is in infos["final_obs"].
                    log["next_observations"][r, j] = info["final_obs"][j]
                    if c - start[j] + 1 > t:
                        raise RuntimeError(
                            f"an episode of {spec.gym_id} ran past {t} steps without a timeout"
                        )
                    n = min(int(c - start[j] + 1), steps - written)
                    idx = np.arange(start[j], start[j] + n) % ring  # [n] ring rows, in order
                    for key, arr in out.items():
                        arr[written : written + n] = log[key][idx, j]
                    written += n
                    bar.update(n)
                    start[j] = c + 1
                    if written == steps:
                        break
            c += 1
            obs = nxt
        bar.close()
    finally:
        venv.close()
    # A step that both terminates and hits the time limit is a terminal, not a timeout.
    out["timeouts"] &= ~out["terminals"]
    return out


def provenance_attrs(name: str, spec: EnvSpec, seed: int) -> dict[str, Any]:
    """The attributes every dataset eor writes carries: its name, the env and versions it was
    made with, the seed, the episode limit, when, and the format."""
    import gymnasium
    import mujoco

    import eor

    return {
        "dataset": name,
        "env_name": spec.name,
        "env_id": spec.gym_id,
        "env_version": spec.gym_version,
        "env_kwargs": json.dumps(spec.gym_kwargs),
        "gymnasium_version": gymnasium.__version__,
        "mujoco_version": mujoco.__version__,
        "eor_version": eor.__version__,
        "seed": int(seed),
        "max_episode_steps": MAX_EPISODE_STEPS,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "format": "d4rl",
    }


def write_hdf5_atomic(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """`_write_hdf5` to a temporary file beside `path`, renamed over it when complete: an
    interrupted write leaves no partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, umask_mode())  # mkstemp's 0600 would stay: h5py's "w" keeps the mode
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_hdf5(tmp, arrays, attrs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_hdf5(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        for key, arr in arrays.items():
            f.create_dataset(key, data=arr)
        for key, value in attrs.items():
            f.attrs[key] = value


def collect(
    name: str,
    steps: int = 1_000_000,
    seed: int = 0,
    *,
    out: str | Path | None = None,
    policy: str | Path | Policy | None = None,
    noise: float = 0.0,
    deterministic: bool = False,
    num_envs: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Collect `steps` rows of D4RL-format data for dataset `name` and return the file path.

    policy: None for D4RL's uniform random policy (name must be {env}-random-v2); a checkpoint
        path (run dir or .pt, read by `eor.agent.load_actor`); or any callable obs [K, S] ->
        actions [K, A]. The dataset kind (medium, expert, ...) is then only a label.
    noise: std of Gaussian noise added to the policy's mean action tanh(mu) (then clipped to
        the action bounds); with noise 0 the policy samples its own actions unless
    deterministic: use the policy's mean action tanh(mu) instead of sampling.
    out: output file (default: eor's store, D4RL file name). Written to a temporary file in the
        same folder and renamed at the end, so an interrupted run leaves no partial dataset.
    """
    env_name, kind = parse_dataset_name(name)
    spec = get_env(env_name)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if noise < 0 or not np.isfinite(noise):
        raise ValueError(f"noise must be a finite std >= 0, got {noise!r}")
    if policy is None and kind != "random":
        raise ValueError(
            f"{name!r} is {kind} data: it needs a behaviour policy (policy=CHECKPOINT, "
            f"`--policy`); only {env_name}-random-v2 uses the uniform random policy"
        )
    if policy is None and (noise > 0 or deterministic):
        raise ValueError(
            "noise and deterministic apply to a policy; the random policy takes neither"
        )
    if num_envs is None:
        num_envs = 1 if policy is None else 4
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")

    out_path = (
        Path(out).expanduser() if out is not None else sources.eor_data_dir() / d4rl_file_name(name)
    )
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True (--overwrite) to replace it")

    policy_zero_cf = False
    if policy is None:
        policy_fn, policy_desc = None, "random"
    elif callable(policy):
        policy_fn, policy_desc = (
            policy,
            f"callable:{getattr(policy, '__name__', type(policy).__name__)}",
        )
    else:
        ckpt = Path(policy).expanduser()
        if not ckpt.exists():
            raise FileNotFoundError(f"policy checkpoint {str(ckpt)!r} does not exist")
        policy_fn, policy_zero_cf = _checkpoint_policy(
            ckpt, spec, device, deterministic or noise > 0, seed
        )
        policy_desc = f"checkpoint:{ckpt.resolve()}"

    if progress is None:
        progress = sys.stderr.isatty()
    t0 = time.perf_counter()
    arrays = _run(spec, steps, seed, policy_fn, float(noise), num_envs, progress)
    elapsed = time.perf_counter() - t0

    attrs = {
        **provenance_attrs(name, spec, seed),
        "policy": policy_desc,
        # The policy saw zeroed contact forces (its run's recorded decision); the data has real ones.
        "policy_zero_contact_forces": bool(policy_zero_cf),
        "noise": float(noise),
        "deterministic": bool(deterministic or noise > 0) if policy is not None else False,
        "steps": int(steps),
        "num_envs": int(num_envs),
    }
    write_hdf5_atomic(out_path, arrays, attrs)
    logger.info(
        "collected %d steps of %s (%s) in %.1f s (%.0f steps/s) -> %s",
        steps,
        name,
        policy_desc,
        elapsed,
        steps / elapsed,
        out_path,
    )
    return out_path
