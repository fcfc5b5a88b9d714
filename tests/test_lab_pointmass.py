"""eor.lab.pointmass: the dynamics, the exact reach labels (against brute force) and the
oracle value function (against closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eor.lab.pointmass import (
    PointMass,
    ReachLabels,
    edge_of_reach,
    make_dataset,
    value_iteration,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- dynamics
def test_step_moves_by_at_most_h_and_clips_at_the_walls() -> None:
    env = PointMass(step_size=0.1)
    obs = torch.tensor([[0.0, 0.0], [0.95, -0.97], [0.5, 0.5], [-1.0, 1.0]], dtype=torch.float64)
    act = torch.tensor([[0.5, -1.0], [1.0, -1.0], [3.0, -7.0], [-1.0, 1.0]], dtype=torch.float64)
    next_obs, rew, done = env.step(obs, act)
    expected = torch.tensor(
        [[0.05, -0.1], [1.0, -1.0], [0.6, 0.4], [-1.0, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(next_obs, expected, rtol=0, atol=1e-15)
    goal = torch.tensor(env.goal, dtype=torch.float64)
    torch.testing.assert_close(rew, -(expected - goal).norm(dim=1), rtol=0, atol=1e-15)
    assert (done == 0).all()


def test_step_rejects_bad_shapes() -> None:
    env = PointMass()
    with pytest.raises(ValueError, match=r"obs and act must both have shape \[B, 2\]"):
        env.step(torch.zeros(3, 2), torch.zeros(3, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"low": 1.0, "high": -1.0}, "low < high"),
        ({"step_size": 0.0}, "step_size"),
        ({"goal": (2.0, 0.0)}, "goal must lie in the box"),
        ({"data_low": (0.0, 0.0), "data_high": (-0.5, 0.5)}, "data_high must exceed data_low"),
        ({"goal": (0.0,)}, "goal must be two numbers"),
    ],
)
def test_bad_env_parameters_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PointMass(**kwargs)


def test_dataset_covers_the_data_square_and_follows_the_true_step() -> None:
    env = PointMass()
    data = make_dataset(env, 500, seed=3)
    obs = data["obs"]
    assert obs.shape == (500, 2) and obs.dtype == np.float32
    assert (obs >= np.array(env.data_low) - 1e-7).all()
    assert (obs <= np.array(env.data_high) + 1e-7).all()
    next_obs, rew, _ = env.step(torch.from_numpy(obs), torch.from_numpy(data["act"]))
    np.testing.assert_allclose(data["next_obs"], next_obs.numpy(), atol=1e-6)
    np.testing.assert_allclose(data["rew"], rew.numpy(), atol=1e-6)
    assert (data["done"] == 0).all()
    again = make_dataset(env, 500, seed=3)
    assert all(np.array_equal(data[k], again[k]) for k in data)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        make_dataset(env, 0, seed=0)


# ----------------------------------------------------------------------------- reach labels
def _bfs_depths(env: PointMass, data: np.ndarray, m: int, max_depth: int) -> dict:
    """Fewest steps to every grid point (spacing h/m) from grid-point data, by breadth-first
    search over the (2m+1)² whole-cell actions through env.next_state (the clip included)."""
    delta = env.step_size / m

    def index(p: torch.Tensor) -> tuple[int, int]:
        return (
            round((float(p[0]) - env.low) / delta),
            round((float(p[1]) - env.low) / delta),
        )

    moves = torch.tensor(
        [(i / m, j / m) for i in range(-m, m + 1) for j in range(-m, m + 1)], dtype=torch.float64
    )
    depth = {index(torch.from_numpy(p)): 0 for p in data}
    frontier = list(depth)
    for t in range(1, max_depth + 1):
        nxt = []
        for i, j in frontier:
            here = torch.tensor([[env.low + i * delta, env.low + j * delta]], dtype=torch.float64)
            for p in env.next_state(here.expand(len(moves), 2), moves):
                key = index(p)
                if key not in depth:
                    depth[key] = t
                    nxt.append(key)
        frontier = nxt
    return depth


def test_reach_labels_equal_a_breadth_first_search_with_walls() -> None:
    env = PointMass(step_size=0.1)
    m = 2  # grid spacing 0.05: 41 x 41 grid points
    delta = env.step_size / m
    # Grid-point data, two of them against walls, so the reach sets are clipped there.
    data = np.array([[-0.95, -1.0], [0.3, 0.95], [0.0, -0.1]])
    depth = _bfs_depths(env, data, m, max_depth=6)
    n = round((env.high - env.low) / delta) + 1
    ij = [(i, j) for i in range(n) for j in range(n)]
    states = torch.tensor([[env.low + i * delta, env.low + j * delta] for i, j in ij])
    steps = ReachLabels(data, env).min_steps(states)
    bfs = torch.tensor([float(depth.get(key, math.inf)) for key in ij], dtype=torch.float64)
    beyond = torch.isinf(bfs)
    assert torch.equal(steps[~beyond], bfs[~beyond])
    assert (steps[beyond] > 6).all()
    labels = ReachLabels(data, env)
    for k in range(1, 6):
        assert torch.equal(labels.edge_of_reach(states, k), bfs == k), k
        assert torch.equal(labels.within_reach(states, k), bfs <= k), k
        assert (bfs == k).any()  # every shell is populated


def test_monte_carlo_rollouts_are_labelled_reachable_and_saturated_ones_exactly() -> None:
    """float32 rollouts of random and of saturated actions, as `rollout_phase` makes them:
    every state after t steps is labelled reachable in <= t steps; a run of saturated outward
    actions from a data point away from the walls ends exactly at t steps (not t + 1 through
    rounding, not fewer)."""
    env = PointMass()
    data = make_dataset(env, 300, seed=1)["obs"]
    labels = ReachLabels(data, env)
    gen = torch.Generator().manual_seed(0)
    starts = torch.from_numpy(data[torch.randint(0, 300, (4000,), generator=gen).numpy()])
    obs = starts.clone()
    for t in range(1, 7):
        act = torch.rand(obs.shape, generator=gen) * 2.4 - 1.2  # some beyond the box, clipped
        act[: len(act) // 2] = torch.sign(act[: len(act) // 2])  # half saturated
        obs, _, _ = env.step(obs, act)
        assert (labels.min_steps(obs) <= t).all(), t

    # A data corner of the square, saturated straight out (+x, +y): ∞-distance t·h from it.
    corner = torch.from_numpy(data[np.argmax(data.sum(axis=1))][None].copy())  # [1, 2]
    obs = corner.clone()
    for t in range(1, 6):
        obs, _, _ = env.step(obs, torch.ones(1, 2))
        d = labels.distance(obs)
        assert abs(float(d) - t * env.step_size) < 1e-6
        assert float(labels.min_steps(obs)) == t
        assert bool(labels.edge_of_reach(obs, t)) and not bool(labels.edge_of_reach(obs, t + 1))


def test_labels_outside_the_box_and_at_the_data() -> None:
    env = PointMass()
    data = np.array([[0.0, 0.0], [0.5, -0.5]])
    labels = ReachLabels(data, env)
    steps = labels.min_steps(torch.tensor([[0.0, 0.0], [0.5, -0.5], [1.2, 0.0], [0.05, 0.3]]))
    assert steps.tolist() == [0.0, 0.0, math.inf, 3.0]
    states = torch.tensor([[0.05, 0.3], [0.0, 0.41]])
    assert edge_of_reach(states, data, 3, env).tolist() == [True, False]
    assert edge_of_reach(states, data, 5, env).tolist() == [False, True]


def test_reach_labels_reject_bad_input() -> None:
    env = PointMass()
    labels = ReachLabels(np.zeros((3, 2)), env)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        labels.edge_of_reach(torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="t must be an integer >= 0"):
        labels.within_reach(torch.zeros(2, 2), -1)
    with pytest.raises(ValueError, match=r"states must be a tensor of shape \[B, 2\]"):
        labels.min_steps(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"data_obs must have shape \[N, 2\]"):
        ReachLabels(np.zeros((0, 2)), env)
    with pytest.raises(ValueError, match="data_obs must lie in the box"):
        ReachLabels(np.array([[0.0, 1.5]]), env)


# ----------------------------------------------------------------------------- value iteration
def test_value_iteration_equals_the_closed_form_at_grid_points() -> None:
    env = PointMass()
    gamma = 0.99
    grid = value_iteration(env, gamma, cells_per_step=2)
    g = grid.values.shape[0]
    axis = env.low + grid.spacing * torch.arange(g, dtype=torch.float64)
    points = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    closed = env.optimal_value(points, gamma).reshape(g, g)
    torch.testing.assert_close(grid.values, closed, rtol=0, atol=1e-10)
    torch.testing.assert_close(grid(points), closed.reshape(-1), rtol=0, atol=1e-10)
    assert float(closed.min()) < -5.0  # a non-trivial case: far corners are many steps away


def test_value_grid_interpolates_off_the_grid() -> None:
    env = PointMass()
    grid = value_iteration(env, 0.99, cells_per_step=10)
    x = torch.rand(2000, 2, dtype=torch.float64) * 2 - 1
    err = (grid(x) - env.optimal_value(x, 0.99)).abs().max()
    assert float(err) < 0.02


def test_value_iteration_with_a_wall_reward() -> None:
    """r(s′) = x′: go right and stay at the wall; V*(s) = Σ_{t≥1} γ^{t−1} min(high, x + t h)."""
    env = PointMass()
    gamma = 0.9
    grid = value_iteration(env, gamma, cells_per_step=2, reward=lambda p: p[..., 0])
    g = grid.values.shape[0]
    x = env.low + grid.spacing * torch.arange(g, dtype=torch.float64)
    t = torch.arange(1, 2001, dtype=torch.float64)
    closed = (gamma ** (t - 1) * (x[:, None] + t * env.step_size).clamp(max=env.high)).sum(1)
    torch.testing.assert_close(grid.values, closed[:, None].expand(g, g), rtol=0, atol=1e-8)


def test_value_iteration_satisfies_bellman_optimality() -> None:
    """At grid states V*(s) = max_a r(s′) + γV*(s′): no sampled continuous action beats it,
    and the closed-form optimal action attains it."""
    env = PointMass()
    gamma = 0.99
    grid = value_iteration(env, gamma, cells_per_step=10)
    idx = torch.randint(0, grid.values.shape[0], (200, 2))
    states = env.low + grid.spacing * idx.double()  # [200, 2]
    v = grid(states)
    for _ in range(20):
        act = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
        nxt = env.next_state(states, act)
        assert (env.reward(nxt) + gamma * grid(nxt) <= v + 1e-3).all()
    nxt = env.next_state(states, env.optimal_action(states))
    torch.testing.assert_close(env.reward(nxt) + gamma * grid(nxt), v, rtol=0, atol=1e-10)


def test_value_iteration_rejects_bad_input() -> None:
    env = PointMass(low=-1.0, high=1.0, step_size=0.3)
    with pytest.raises(ValueError, match="whole number of grid cells"):
        value_iteration(env, 0.9, cells_per_step=1)
    with pytest.raises(ValueError, match="gamma must be in"):
        value_iteration(PointMass(), 1.0)
    with pytest.raises(ValueError, match="cells_per_step must be a positive integer"):
        value_iteration(PointMass(), 0.9, cells_per_step=0)
    with pytest.raises(RuntimeError, match="did not converge"):
        value_iteration(PointMass(), 0.9, reward=lambda p: p[..., 0], max_sweeps=3)
