"""Evaluation of the deterministic policy in the real gymnasium env (docs/algorithm.md §3).

`eval_episodes` episodes run side by side, one env each: at every step one actor forward
produces the actions of all unfinished episodes. Env i is reset with seed `seed + i` at every
evaluation, so successive evaluations of a run start from the same states and differ only
through the policy (and two runs with the same seed evaluate identically).

Ant: when the run's dataset recorded no contact forces (all-zero columns 27:111, as in D4RL's
data), the evaluation envs zero them too (`zero_contact_forces`, decided once per run by
`decide_zero_contact_forces` and recorded in the run's config.json; docs/algorithm.md §1).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from eor.agent.diagnostics import discounted_returns
from eor.agent.rollout import Policy

logger = logging.getLogger("eor.agent")


def eval_seed(run_seed: int) -> int:
    """Base seed of the evaluation envs: far from the training seeds of nearby runs."""
    return 1_000_003 * (run_seed + 1)


def decide_zero_contact_forces(
    env_spec: Any, *, detected: bool, recorded: bool | None = None, dataset: str = ""
) -> bool:
    """Whether a run's envs zero the contact forces; logs the decision in one line.

    detected: the dataset's `contact_forces_missing` (all-zero contact-force columns).
    recorded: the decision a resumed run recorded in its config.json (None for a new run, or a
    run from before the decision was recorded); it wins over `detected`, with a warning when
    the two differ. Envs without contact-force columns: always False, nothing logged.
    """
    cols = getattr(env_spec, "contact_force_columns", None)
    if cols is None:
        return False
    if recorded is not None and not isinstance(recorded, bool):
        raise TypeError(f"recorded zero_contact_forces must be a bool or None, got {recorded!r}")
    zero = bool(detected) if recorded is None else recorded
    where = f"dataset {dataset}" if dataset else "the dataset"
    if recorded is not None and recorded != bool(detected):
        logger.warning(
            "%s: the run recorded zero_contact_forces=%s in config.json, but %s now %s; "
            "keeping the recorded decision",
            env_spec.name,
            str(recorded).lower(),
            where,
            "has all-zero contact forces" if detected else "has nonzero contact forces",
        )
    if zero:
        logger.info(
            "%s: %s has all-zero contact forces (observation columns %d:%d, recorded without "
            "them); the evaluation envs zero them too (zero_contact_forces=true%s)",
            env_spec.name,
            where,
            cols[0],
            cols[1],
            ", as recorded in config.json" if recorded is not None else "",
        )
    return zero


def make_eval_envs(env_spec: Any, episodes: int, *, zero_contact_forces: bool = False) -> list[Any]:
    """One evaluation env per episode (contact forces zeroed when asked, see the module doc)."""
    from eor.envs import make_env

    return [make_env(env_spec, zero_contact_forces=zero_contact_forces) for _ in range(episodes)]


@torch.no_grad()
def evaluate(
    actor: Policy,
    env_spec: Any,
    *,
    episodes: int,
    seed: int,
    device: torch.device | str,
    max_steps: int | None = None,
    envs: list[Any] | None = None,
    zero_contact_forces: bool = False,
    gamma: float = 0.99,
) -> dict[str, Any]:
    """Run `episodes` deterministic episodes as one batch and summarise them.

    env_spec: an `eor.envs.EnvSpec` (gives the envs and `normalized_score`).
    max_steps: stop episodes after this many steps (default: the env's own 1000-step limit).
    envs: reuse these envs (one per episode) instead of making new ones.
    zero_contact_forces: make the envs with zeroed contact forces (ant; ignored with `envs`,
    which `make_eval_envs` makes the same way).
    gamma: the discount of the discounted returns (the run's γ).
    Returns return_mean/std, score_mean/std (D4RL normalised, x100), length_mean, eval_time,
    return_discounted_mean/std (Σ_t γ^t r_t from each episode's start), and per episode:
    returns, discounted_returns and start_obs (the first observations, `[E][S]`).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    if episodes < 1:
        raise ValueError(f"eval_episodes must be a positive integer, got {episodes!r}")
    start = time.perf_counter()
    if envs is None:
        envs = make_eval_envs(env_spec, episodes, zero_contact_forces=zero_contact_forces)
    if len(envs) != episodes:
        raise ValueError(f"need {episodes} envs, got {len(envs)}")
    device = torch.device(device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # Each forward is a tiny batch (<= episodes rows): intra-op threads only add barrier
        # waits, which on a busy CPU cost 20-40x (1.3 ms vs 28-51 ms per forward measured on a
        # loaded 2-core machine). Restored below.
        torch.set_num_threads(1)
    try:
        return _run_episodes(actor, env_spec, envs, episodes, seed, device, max_steps, start, gamma)
    finally:
        torch.set_num_threads(threads)


def _run_episodes(
    actor: Policy,
    env_spec: Any,
    envs: list[Any],
    episodes: int,
    seed: int,
    device: torch.device,
    max_steps: int | None,
    start: float,
    gamma: float,
) -> dict[str, Any]:
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])  # [E, S]
    start_obs = obs.copy()
    rewards: list[list[float]] = [[] for _ in range(episodes)]
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        obs_t = torch.as_tensor(obs[idx], dtype=torch.float32, device=device)  # [n, S]
        actions = actor.act(obs_t, deterministic=True).cpu().numpy().astype(np.float64)  # [n, A]
        for j, i in enumerate(idx):
            next_obs, reward, terminated, truncated, _ = envs[i].step(actions[j])
            returns[i] += float(reward)
            rewards[i].append(float(reward))
            lengths[i] += 1
            obs[i] = next_obs
            if terminated or truncated or (max_steps is not None and lengths[i] >= max_steps):
                alive[i] = False
    scores = np.asarray(env_spec.normalized_score(returns), dtype=np.float64)
    discounted = discounted_returns(rewards, gamma)
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "score_mean": float(scores.mean()),
        "score_std": float(scores.std()),
        "length_mean": float(lengths.mean()),
        "eval_time": time.perf_counter() - start,
        "return_discounted_mean": float(discounted.mean()),
        "return_discounted_std": float(discounted.std()),
        "returns": returns.tolist(),
        "discounted_returns": discounted.tolist(),
        "start_obs": start_obs.tolist(),
    }
