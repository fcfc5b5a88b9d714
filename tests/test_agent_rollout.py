"""The rollout phase (docs/algorithm.md §3): which transitions reach the model buffer, and the phase's metrics.

A hand-made dynamics model makes every outcome computable by hand: the next state adds 1 to
every coordinate, the reward is obs[0], a rollout terminates once next_obs[0] >= its threshold,
and rows marked in obs[1] produce NaN at a chosen step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from eor.agent.rollout import rollout_phase

S, A = 3, 2


class ListBuffer:
    """Records `add` calls; `sample_obs(n)` returns the first n rows (distinct, deterministic)."""

    def __init__(self, obs: np.ndarray | None = None) -> None:
        self.obs = obs
        self.added: list[tuple[np.ndarray, ...]] = []

    def __len__(self) -> int:
        return 0 if self.obs is None else len(self.obs)

    def sample_obs(self, n: int) -> np.ndarray:
        assert self.obs is not None
        return self.obs[:n].copy()

    def add(self, obs, act, rew, next_obs, done, *, drop_nonfinite=False) -> int:  # noqa: ANN001
        for x in (obs, act, rew, next_obs, done):
            assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
        assert np.isfinite(obs).all() and np.isfinite(next_obs).all() and np.isfinite(rew).all()
        self.added.append((obs, act, rew, next_obs, done))
        return len(obs)


class CountingModel:
    """next = obs + 1; reward = obs[0]; done when next[0] >= 3; NaN at step `nan_step` for rows
    with obs[1] < 0 (-10 at the start for those rows, so still negative k < 10 steps later)."""

    obs_dim, act_dim = S, A

    def __init__(self, nan_step: int = 2) -> None:
        self.calls = 0
        self.nan_step = nan_step

    def step(self, obs: Tensor, act: Tensor, generator: torch.Generator | None):
        self.calls += 1
        assert act.shape == (obs.shape[0], A)
        next_obs = obs + 1.0
        reward = obs[:, 0].clone()
        if self.calls == self.nan_step:
            bad = obs[:, 1] < 0
            next_obs[bad] = float("nan")
        done = next_obs[:, 0] >= 3.0
        return next_obs, reward, done


class ZeroActor:
    def act(self, obs: Tensor, deterministic: bool = True, generator=None) -> Tensor:  # noqa: ANN001
        assert deterministic is False  # rollouts use the stochastic policy
        return torch.zeros(obs.shape[0], A, dtype=obs.dtype)


def _starts() -> np.ndarray:
    # obs[0] start values: 0 -> steps with next 1,2,3 (terminates at step 3: 3 transitions)
    #                      2 -> next 3 at step 1 (terminates: 1 transition)
    #                      -5 -> never terminates within k=4 (4 transitions)
    # obs[1] = -10 marks the NaN row (NaN at step 2 -> 1 stored, 1 nonfinite).
    return np.array(
        [
            [0.0, 0.0, 7.0],
            [2.0, 0.0, 8.0],
            [-5.0, 0.0, 9.0],
            [-5.0, -10.0, 10.0],
            [100.0, 0.0, 0.0],  # not drawn (only 4 rollouts)
        ],
        dtype=np.float32,
    )


def test_rollout_phase_stores_exactly_the_live_finite_transitions() -> None:
    real, model_buf = ListBuffer(_starts()), ListBuffer()
    stats = rollout_phase(
        ZeroActor(),
        CountingModel(nan_step=2),
        real,
        model_buf,
        num_rollouts=4,
        steps_k=4,
        generator=None,
        device="cpu",
    )
    assert len(model_buf.added) == 1  # one host transfer and one add per phase
    obs, act, rew, next_obs, done = model_buf.added[0]
    # Expected, step-major. Row r at step t has obs = start + (t-1).
    expected_rows = []  # (row, step)
    lengths = {0: 3, 1: 1, 2: 4, 3: 1}
    for t in range(4):
        for r in range(4):
            if t < lengths[r]:
                expected_rows.append((r, t))
    start = _starts()
    exp_obs = np.stack([start[r] + t for r, t in expected_rows])
    np.testing.assert_array_equal(obs, exp_obs)
    np.testing.assert_array_equal(next_obs, exp_obs + 1.0)
    np.testing.assert_array_equal(rew, exp_obs[:, 0])
    np.testing.assert_array_equal(act, np.zeros((len(expected_rows), A), np.float32))
    np.testing.assert_array_equal(done, (exp_obs[:, 0] + 1.0 >= 3.0).astype(np.float32))
    # Terminal transitions are stored (rows 0 and 1 end with done = 1).
    assert done.sum() == 2
    assert stats.transitions_added == len(expected_rows) == 9
    assert stats.nonfinite == 1
    assert stats.terminals == 2
    assert stats.mean_length == pytest.approx(9 / 4)
    assert stats.mean_reward == pytest.approx(float(exp_obs[:, 0].mean()))
    assert stats.rollout_time >= 0.0


def test_nonfinite_rollout_is_dropped_from_later_steps() -> None:
    # All rollouts survive k steps except the NaN one, which stops after its first transition.
    starts = np.array([[-9.0, 0.0, 0.0], [-9.0, -10.0, 0.0]], dtype=np.float32)
    model_buf = ListBuffer()
    model = CountingModel(nan_step=1)
    stats = rollout_phase(
        ZeroActor(),
        model,
        ListBuffer(starts),
        model_buf,
        num_rollouts=2,
        steps_k=3,
        generator=None,
        device="cpu",
    )
    obs = model_buf.added[0][0]
    assert stats.nonfinite == 1
    assert stats.transitions_added == 3  # only row 0, for 3 steps
    np.testing.assert_array_equal(obs[:, 1], np.array([0.0, 1.0, 2.0], np.float32))  # row 0 only
    assert model.calls == 3


def test_all_terminated_adds_nothing_and_reports_nan_reward() -> None:
    starts = np.array([[50.0, -10.0, 0.0]], dtype=np.float32)
    model_buf = ListBuffer()
    stats = rollout_phase(
        ZeroActor(),
        CountingModel(nan_step=1),
        ListBuffer(starts),
        model_buf,
        num_rollouts=1,
        steps_k=2,
        generator=None,
        device="cpu",
    )
    assert model_buf.added == []
    assert stats.transitions_added == 0 and stats.nonfinite == 1
    assert np.isnan(stats.mean_reward)


class NoisyModel:
    """Draws its noise from the generator, like the real model's step."""

    obs_dim, act_dim = S, A

    def step(self, obs, act, generator):  # noqa: ANN001
        noise = torch.randn(obs.shape, generator=generator)
        return obs + noise, noise[:, 0], torch.zeros(obs.shape[0], dtype=torch.bool)


class NoisyActor:
    def act(self, obs, deterministic=True, generator=None):  # noqa: ANN001
        return torch.rand(obs.shape[0], A, generator=generator)


def test_same_generator_state_replays_the_phase() -> None:
    starts = np.random.default_rng(0).normal(size=(20, S)).astype(np.float32)

    def run(seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        buf = ListBuffer()
        rollout_phase(
            NoisyActor(), NoisyModel(), ListBuffer(starts), buf,
            num_rollouts=20, steps_k=3, generator=gen, device="cpu",
        )  # fmt: skip
        return np.concatenate([x.reshape(len(x), -1) for x in buf.added[0]], axis=1)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_rollout_phase_rejects_too_many_rollouts() -> None:
    with pytest.raises(ValueError, match="rollouts_per_epoch"):
        rollout_phase(
            ZeroActor(), CountingModel(), ListBuffer(_starts()), ListBuffer(),
            num_rollouts=6, steps_k=1, generator=None, device="cpu",
        )  # fmt: skip
    with pytest.raises(ValueError, match="positive"):
        rollout_phase(
            ZeroActor(), CountingModel(), ListBuffer(_starts()), ListBuffer(),
            num_rollouts=2, steps_k=0, generator=None, device="cpu",
        )  # fmt: skip
