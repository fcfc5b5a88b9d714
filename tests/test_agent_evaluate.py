"""Vectorised evaluation against a plain one-env-at-a-time gymnasium loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from eor.agent.evaluate import eval_seed, evaluate, make_eval_envs
from eor.envs import get_env, make_env


class ObsPolicy:
    """A deterministic policy that depends on the observation; counts its forwards."""

    def __init__(self, act_dim: int, gain: float) -> None:
        self.act_dim, self.gain, self.calls, self.batch_sizes = act_dim, gain, 0, []

    def act(self, obs: Tensor, deterministic: bool = True, generator=None) -> Tensor:  # noqa: ANN001
        assert deterministic is True
        assert obs.dtype == torch.float32
        self.calls += 1
        self.batch_sizes.append(obs.shape[0])
        return torch.tanh(self.gain * obs[:, : self.act_dim])


def _one_by_one(name: str, policy: ObsPolicy, episodes: int, seed: int, max_steps: int | None):
    returns, lengths = [], []
    for i in range(episodes):
        env = make_env(name)
        obs, _ = env.reset(seed=seed + i)
        ret, n = 0.0, 0
        while True:
            o = torch.as_tensor(obs, dtype=torch.float32)[None]
            a = policy.act(o, deterministic=True)[0].numpy().astype(np.float64)
            obs, r, term, trunc, _ = env.step(a)
            ret, n = ret + float(r), n + 1
            if term or trunc or (max_steps is not None and n >= max_steps):
                break
        returns.append(ret)
        lengths.append(n)
    return np.array(returns), np.array(lengths)


def test_matches_sequential_episodes_with_early_termination() -> None:
    # Hopper falls within a few dozen steps under this policy, at different times per seed:
    # unfinished episodes must keep going while finished ones stop.
    spec = get_env("hopper")
    policy = ObsPolicy(spec.act_dim, gain=20.0)
    out = evaluate(policy, spec, episodes=3, seed=123, device="cpu", max_steps=300)
    ref_returns, ref_lengths = _one_by_one("hopper", ObsPolicy(spec.act_dim, 20.0), 3, 123, 300)
    assert ref_lengths.min() < 300, "the policy should make some episode terminate early"
    np.testing.assert_allclose(out["returns"], ref_returns, rtol=0, atol=1e-9)
    assert out["length_mean"] == pytest.approx(ref_lengths.mean())
    assert out["return_mean"] == pytest.approx(ref_returns.mean())
    assert out["return_std"] == pytest.approx(ref_returns.std())
    scores = 100 * (ref_returns - spec.ref_min_score) / (spec.ref_max_score - spec.ref_min_score)
    assert out["score_mean"] == pytest.approx(scores.mean())
    assert out["score_std"] == pytest.approx(scores.std())
    # One forward per step for all unfinished episodes.
    assert policy.calls == ref_lengths.max()
    assert (
        policy.batch_sizes[0] == 3
        and policy.batch_sizes[-1] == (ref_lengths == ref_lengths.max()).sum()
    )


def test_deterministic_and_reuses_envs() -> None:
    spec = get_env("halfcheetah-random-v2")
    envs = [make_env(spec) for _ in range(2)]
    threads = torch.get_num_threads()
    a = evaluate(ObsPolicy(6, 1.0), spec, episodes=2, seed=5, device="cpu", max_steps=10, envs=envs)
    b = evaluate(ObsPolicy(6, 1.0), spec, episodes=2, seed=5, device="cpu", max_steps=10, envs=envs)
    c = evaluate(ObsPolicy(6, 1.0), spec, episodes=2, seed=6, device="cpu", max_steps=10)
    assert torch.get_num_threads() == threads  # the 1-thread setting for tiny forwards is undone
    assert a["returns"] == b["returns"]
    assert a["returns"] != c["returns"]
    assert a["length_mean"] == 10


def test_eval_seed_depends_on_run_seed() -> None:
    assert eval_seed(0) != eval_seed(1)


def test_bad_episode_count() -> None:
    spec = get_env("halfcheetah")
    with pytest.raises(ValueError, match="eval_episodes"):
        evaluate(ObsPolicy(6, 1.0), spec, episodes=0, seed=0, device="cpu")
    with pytest.raises(ValueError, match="need 2 envs"):
        evaluate(ObsPolicy(6, 1.0), spec, episodes=2, seed=0, device="cpu", envs=[make_env(spec)])


class ForceSpy(ObsPolicy):
    """Records the largest |contact force| (ant columns 27:111) among its inputs."""

    def __init__(self) -> None:
        super().__init__(8, 1.0)
        self.max_force = 0.0

    def act(self, obs: Tensor, deterministic: bool = True, generator=None) -> Tensor:  # noqa: ANN001
        self.max_force = max(self.max_force, float(obs[:, 27:111].abs().max()))
        return super().act(obs, deterministic)


def test_zero_contact_forces_reach_the_policy_as_zeros() -> None:
    spec = get_env("ant")
    runs = {}
    for zero in (False, True):
        spy = ForceSpy()
        out = evaluate(
            spy, spec, episodes=2, seed=1, device="cpu", max_steps=40, zero_contact_forces=zero
        )
        runs[zero] = (spy.max_force, out["returns"])
    assert runs[False][0] > 0 and runs[True][0] == 0.0
    # The simulation itself is unchanged (this policy ignores columns 27 on).
    assert runs[False][1] == runs[True][1]


def test_make_eval_envs() -> None:
    envs = make_eval_envs(get_env("ant"), 3, zero_contact_forces=True)
    assert len(envs) == 3
    assert all((env.reset(seed=0)[0][27:] == 0).all() for env in envs)
    with pytest.raises(ValueError, match="zero_contact_forces=True: hopper"):
        make_eval_envs(get_env("hopper"), 1, zero_contact_forces=True)
