"""eor.envs: registry table, dataset names, normalised score, docs/algorithm.md §3 termination functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eor.envs import (
    DATASET_KINDS,
    ENVS,
    all_dataset_names,
    d4rl_file_name,
    get_env,
    make_env,
    make_vector_env,
    parse_dataset_name,
)

NAN = math.nan
INF = math.inf


def test_registry_table_matches_d4rl():
    expected = {
        # name: (obs_dim, act_dim, gym id, ref min, ref max)
        "halfcheetah": (17, 6, "HalfCheetah-v4", -280.178953, 12135.0),
        "hopper": (11, 3, "Hopper-v4", -20.272305, 3234.3),
        "walker2d": (17, 6, "Walker2d-v4", 1.629008, 4592.3),
        "ant": (111, 8, "Ant-v4", -325.6, 3879.7),
    }
    assert set(ENVS) == set(expected)
    for name, (s, a, gym_id, lo, hi) in expected.items():
        spec = ENVS[name]
        assert (spec.obs_dim, spec.act_dim, spec.gym_id) == (s, a, gym_id)
        assert (spec.ref_min_score, spec.ref_max_score) == (lo, hi)
        assert spec.gym_version == "v4"
    assert ENVS["ant"].gym_kwargs == {"use_contact_forces": True}
    assert ENVS["ant"].contact_force_columns == (27, 111)
    assert all(ENVS[n].contact_force_columns is None for n in ("halfcheetah", "hopper", "walker2d"))


def test_ant_contact_force_columns_are_the_simulators_contact_forces():
    # 13 qpos[2:] + 14 qvel, then the 14 bodies x 6 clipped cfrc_ext (D4RL's layout).
    env = make_env("ant", seed=0)
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(30):
        obs = env.step(rng.uniform(-1, 1, 8))[0]
        data = env.unwrapped.data
        np.testing.assert_array_equal(obs[:27], np.concatenate([data.qpos[2:], data.qvel]))
        np.testing.assert_array_equal(obs[27:111], env.unwrapped.contact_forces.flat)
        seen += np.count_nonzero(obs[27:111])
    assert seen > 0


@pytest.mark.parametrize("name", sorted(ENVS))
def test_gymnasium_env_matches_registry_dims(name):
    spec = get_env(name)
    env = make_env(name, seed=0)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    assert env.spec.max_episode_steps == 1000
    obs, _ = env.reset(seed=0)
    assert obs.shape == (spec.obs_dim,)
    env.close()


def test_make_env_seed_is_reproducible():
    a = make_env("hopper", seed=3).reset()[0]
    b = make_env("hopper", seed=3).reset()[0]
    c = make_env("hopper", seed=4).reset()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_make_vector_env():
    venv = make_vector_env("halfcheetah-random-v2", 3, seed=0)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 17)
    venv.close()
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env("hopper", 0)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_zeroes_contact_forces(asynchronous):
    kw = dict(autoreset_mode="SameStep", asynchronous=asynchronous)
    zeroed = make_vector_env("ant", 2, seed=0, zero_contact_forces=True, **kw)
    plain = make_vector_env("ant", 2, seed=0, **kw)
    rng = np.random.default_rng(0)
    z, p = zeroed.reset(seed=5)[0], plain.reset(seed=5)[0]
    forces = 0
    for _ in range(30):
        assert z.shape == (2, 111) and (z[:, 27:] == 0.0).all()
        np.testing.assert_array_equal(z[:, :27], p[:, :27])
        forces += np.count_nonzero(p[:, 27:])
        act = rng.uniform(-1, 1, (2, 8))
        z, p = zeroed.step(act)[0], plain.step(act)[0]
    assert forces > 0
    zeroed.close()
    plain.close()


def test_zero_contact_forces_bad_input():
    with pytest.raises(ValueError, match="zero_contact_forces=True: hopper .* only ant"):
        make_env("hopper", zero_contact_forces=True)
    with pytest.raises(ValueError, match="zero_contact_forces=True: walker2d"):
        make_vector_env("walker2d", 1, zero_contact_forces=True)
    with pytest.raises(TypeError, match="zero_contact_forces must be a bool, got str"):
        make_env("ant", zero_contact_forces="yes")  # type: ignore[arg-type]
    from eor.envs.wrappers import ZeroContactForces

    with pytest.raises(ValueError, match=r"columns must be \(start, stop\)"):
        ZeroContactForces(make_env("ant"), (27, 200))


def test_normalized_score():
    spec = get_env("hopper")
    assert spec.normalized_score(-20.272305) == pytest.approx(0.0)
    assert spec.normalized_score(3234.3) == pytest.approx(100.0)
    mid = (3234.3 - 20.272305) / 2
    assert spec.normalized_score(mid) == pytest.approx(50.0)
    scores = get_env("halfcheetah").normalized_score(np.array([-280.178953, 12135.0, 5927.4105235]))
    np.testing.assert_allclose(scores, [0.0, 100.0, 50.0], atol=1e-9)
    assert isinstance(spec.normalized_score(1.0), float)


def test_dataset_names_parse():
    names = all_dataset_names()
    assert len(names) == 4 * len(DATASET_KINDS) == 24
    for name in names:
        env, kind = parse_dataset_name(name)
        assert name == f"{env}-{kind}-v2"
        assert get_env(name).name == env
    assert parse_dataset_name("halfcheetah-medium-replay-v2") == ("halfcheetah", "medium-replay")
    assert parse_dataset_name("walker2d-full-replay-v2") == ("walker2d", "full-replay")
    assert d4rl_file_name("halfcheetah-medium-replay-v2") == "halfcheetah_medium_replay-v2.hdf5"
    assert d4rl_file_name("ant-random-v2") == "ant_random-v2.hdf5"


@pytest.mark.parametrize(
    "bad, suggestion",
    [
        ("halfchetah-medium-v2", "halfcheetah-medium-v2"),
        ("hopper-medium-replay-v0", "hopper-medium-replay-v2"),
        ("walker2d-expret-v2", "walker2d-expert-v2"),
    ],
)
def test_unknown_dataset_name_suggests_nearest(bad, suggestion):
    with pytest.raises(ValueError) as err:
        parse_dataset_name(bad)
    msg = str(err.value)
    assert f"Did you mean {suggestion!r}" in msg
    assert "ant-full-replay-v2" in msg  # the valid names are listed


def test_get_env_errors():
    with pytest.raises(ValueError, match="Did you mean 'hopper'"):
        get_env("hoper")
    with pytest.raises(TypeError):
        get_env(3)  # type: ignore[arg-type]
    assert get_env(get_env("ant")) is ENVS["ant"]


def _states(rows: list[list[float]], dim: int) -> torch.Tensor:
    """Rows give the leading entries (height, angle, ...); the rest of each state is 0."""
    x = torch.zeros(len(rows), dim)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    return x


def test_hopper_termination_boundaries():
    spec = get_env("hopper")
    cases = [
        ([1.0, 0.0], False),
        ([0.7, 0.0], True),  # height must be > 0.7
        ([0.7001, 0.0], False),
        ([1.0, 0.2], True),  # |angle| must be < 0.2
        ([1.0, -0.2], True),
        ([1.0, 0.1999], False),
        ([1.0, -0.1999], False),
        ([1.0, 0.0, 99.9], False),
        ([1.0, 0.0, 100.0], True),  # |s'[1:]| < 100
        ([1.0, 0.0, -100.0], True),  # the absolute value (MOPO's abs-of-bool quirk fixed)
        ([1.0, 0.0, -150.0], True),
        ([1.0, 0.0, NAN], True),
        ([NAN, 0.0], True),
        ([1.0, 0.0, INF], True),
        ([150.0, 0.0], False),  # height is not bounded above by the |.| < 100 rule (s'[1:])
    ]
    x = _states([c[0] for c in cases], 11)
    got = spec.termination_fn(x)
    assert got.dtype == torch.bool and got.shape == (len(cases),)
    assert got.tolist() == [c[1] for c in cases]


def test_walker2d_termination_boundaries():
    spec = get_env("walker2d")
    cases = [
        ([1.0, 0.0], False),
        ([0.8, 0.0], True),
        ([0.8001, 0.0], False),
        ([2.0, 0.0], True),
        ([1.9999, 0.0], False),
        ([1.0, 1.0], True),
        ([1.0, -1.0], True),
        ([1.0, 0.9999], False),
        ([1.0, -0.9999], False),
        ([NAN, 0.0], True),
        ([1.0, NAN], True),
        ([1.0, 0.0, 1e6], False),  # only height and angle matter
    ]
    got = spec.termination_fn(_states([c[0] for c in cases], 17))
    assert got.tolist() == [c[1] for c in cases]


def test_halfcheetah_never_terminates():
    spec = get_env("halfcheetah")
    x = _states([[0.0], [NAN], [INF, -INF], [1e9]], 17)
    got = spec.termination_fn(x)
    assert got.dtype == torch.bool and got.tolist() == [False] * 4


def test_ant_termination_boundaries():
    spec = get_env("ant")
    cases = [
        ([0.5], False),
        ([0.2], False),  # 0.2 <= height <= 1.0, both ends included
        ([1.0], False),
        ([0.1999], True),
        ([1.0001], True),
        ([NAN], True),
        ([0.5, NAN], True),
        ([0.5, 0.0, -INF], True),
    ]
    got = spec.termination_fn(_states([c[0] for c in cases], 111))
    assert got.tolist() == [c[1] for c in cases]


def test_termination_any_leading_shape_and_float64():
    spec = get_env("hopper")
    x = torch.zeros(2, 3, 11, dtype=torch.float64)
    x[..., 0] = 1.0
    x[1, 2, 0] = 0.5
    got = spec.termination_fn(x)
    assert got.shape == (2, 3)
    assert got.tolist() == [[False, False, False], [False, False, True]]


def test_termination_rejects_wrong_dim():
    with pytest.raises(ValueError, match=r"\[\.\.\., 11\]"):
        get_env("hopper").termination_fn(torch.zeros(4, 17))


@pytest.mark.gpu
def test_termination_on_cuda():
    spec = get_env("walker2d")
    x = _states([[1.0, 0.0], [0.5, 0.0]], 17).cuda()
    got = spec.termination_fn(x)
    assert got.device.type == "cuda" and got.tolist() == [False, True]
