"""eor.lab.edge_of_reach and `eor lab edge-of-reach`: the oracle patch replaces exactly the
edge-of-reach targets, a tiny run writes its figures and summary, bad input is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.agent.ravl import RAVL, RAVLConfig
from eor.cli import main
from eor.lab.edge_of_reach import (
    LabConfig,
    OraclePatchedRAVL,
    build_setup,
    methods_for,
    train_method,
)
from eor.lab.pointmass import PointMass, ReachLabels

pytestmark = pytest.mark.usefixtures("one_thread")


def _oracle(states: torch.Tensor) -> torch.Tensor:
    """A recognisable 'oracle': 1000 + 10·x + y, distinct per row."""
    return 1000.0 + 10.0 * states[:, 0] + states[:, 1]


@pytest.mark.parametrize("k", [2, 5])
def test_patch_replaces_exactly_the_edge_of_reach_rows(k: int) -> None:
    env = PointMass()
    point = np.array([[-0.5, -0.5]])
    reach = ReachLabels(point, env)
    h = env.step_size
    # Next states at ∞-distances spanning k−2 .. k+1 steps from the single data point, some
    # a hair inside or outside a shell boundary.
    dists = [0.0, 0.05, (k - 1) * h - 1e-4, (k - 1) * h, (k - 1) * h + 1e-4, (k - 0.5) * h]
    dists += [k * h, k * h + 1e-4, (k + 0.5) * h, (k - 2) * h + 0.05]
    offsets = torch.tensor([[d, -0.3 * d] for d in dists], dtype=torch.float32)
    next_obs = torch.from_numpy(point).float() + offsets
    steps = reach.min_steps(next_obs)
    expect_edge = steps == k
    assert expect_edge.sum() >= 3 and (steps == k - 1).any() and (steps == k + 1).any()

    config = RAVLConfig(obs_dim=2, act_dim=2, hidden_dim=8, num_critics=2, eta=0.0)
    learner = OraclePatchedRAVL(config, reach=reach, oracle=_oracle, steps_k=k, seed=0)
    b = len(dists)
    rew = torch.linspace(-1.0, -0.1, b)
    done = torch.zeros(b)
    done[1] = 1.0
    if expect_edge.any():
        done[int(torch.nonzero(expect_edge)[0])] = 1.0  # a terminal edge row: y = r
    state = learner.generator.get_state()
    plain = RAVL._critic_target(learner, rew, next_obs, done)
    learner.generator.set_state(state)
    patched = learner._critic_target(rew, next_obs, done)

    oracle_target = rew + config.gamma * (1.0 - done) * _oracle(next_obs)
    torch.testing.assert_close(patched[expect_edge], oracle_target[expect_edge])
    torch.testing.assert_close(patched[~expect_edge], plain[~expect_edge])
    live = expect_edge & (done == 0)  # at a terminal row both targets are r
    assert live.any() and (patched[live] != plain[live]).all()
    assert learner.patched_rows == int(expect_edge.sum()) and learner.target_rows == b


def test_patched_learner_rejects_a_bad_k() -> None:
    config = RAVLConfig(obs_dim=2, act_dim=2, hidden_dim=8, num_critics=2, eta=0.0)
    reach = ReachLabels(np.zeros((1, 2)), PointMass())
    with pytest.raises(ValueError, match="steps_k must be an integer >= 1, got 0"):
        OraclePatchedRAVL(config, reach=reach, oracle=_oracle, steps_k=0)


def _tiny(**changes: object) -> LabConfig:
    sizes: dict[str, object] = {
        "epochs": 1,
        "updates_per_epoch": 10,
        "rollouts_per_epoch": 100,
        "dataset_size": 300,
        "probe_states": 50,
        "log_every": 5,
    }
    return LabConfig.quick(**{**sizes, **changes})


def test_setup_probes_are_labelled_as_claimed() -> None:
    config = _tiny()
    setup = build_setup(config)
    k = config.steps_k
    assert (setup.reach.min_steps(setup.probe_edge) == k).all()
    assert (setup.reach.min_steps(setup.probe_within) <= k - 1).all()
    assert len(setup.probe_edge) == len(setup.probe_within) == config.probe_states
    # The optimal policy's return from the evaluation starts: the closed-form optimum.
    assert setup.optimal_return > -config.eval_horizon * 1.0


def test_a_diverging_learner_is_recorded_not_raised() -> None:
    config = _tiny()
    setup = build_setup(config)
    setup.data["rew"][:] = 3e38  # finite, but its squared TD error overflows: loss inf
    result = train_method(methods_for(config)["base"], setup, config)
    assert result["diverged_at_update"] == 1
    assert result["history"] == [] and result["final"] == {}


def test_quick_command_writes_figures_and_summary(tmp_path) -> None:
    out = tmp_path / "lab"
    args = ["lab", "edge-of-reach", "--out", str(out), "--quick", "--methods", "base,patch"]
    args += ["--epochs", "1", "--updates-per-epoch", "20", "--seed", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "[base] epoch 1/1 updates 20" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["base", "patch"]
    assert summary["config"]["seed"] == 3
    for name in ("base", "patch"):
        res = summary["methods"][name]
        assert res["updates"] == 20 and res["diverged_at_update"] is None
        final = res["final"]
        for key in ("return_mean", "q_data_mean", "q_data_true", "q_std_edge", "q_std_within"):
            assert isinstance(final[key], float), key
        assert final["buffer_beyond_share"] == 0.0  # true dynamics: nothing beyond R_k
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert res["figure"] == str(png)
    assert 0.0 <= summary["methods"]["patch"]["final"]["patched_share"] <= 1.0
    assert "patched_share" not in summary["methods"]["base"]["final"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--methods", "base,sarsa"], "unknown method 'sarsa'"),
        (["--methods", ","], "methods must name at least one"),
        (["--steps-k", "0"], "steps_k must be a positive integer, got 0"),
        (["--epochs", "-1"], "epochs must be a positive integer"),
    ],
)
def test_command_rejects_bad_input(tmp_path, args: list[str], match: str) -> None:
    result = CliRunner().invoke(
        main, ["lab", "edge-of-reach", "--out", str(tmp_path / "x"), "--quick", *args]
    )
    assert result.exit_code == 2, result.output
    assert match in result.output
    assert not (tmp_path / "x").exists()


def test_lab_config_validation() -> None:
    with pytest.raises(ValueError, match="rollouts_per_epoch .* must not exceed dataset_size"):
        LabConfig(rollouts_per_epoch=20, dataset_size=10).validate()
    with pytest.raises(ValueError, match="gamma must be in"):
        LabConfig(gamma=1.0).validate()
    with pytest.raises(ValueError, match="methods must not repeat"):
        LabConfig(methods=("base", "base")).validate()
    LabConfig().validate()


def test_no_edge_of_reach_states_in_the_box_gives_nan_statistics() -> None:
    """With k = 20 the 19-step reach set covers the whole box: the edge set is empty."""
    config = _tiny(steps_k=20, probe_states=20)
    setup = build_setup(config)
    assert len(setup.probe_edge) == 0 and len(setup.probe_within) == 20
    result = train_method(methods_for(config)["base"], setup, config)
    final = result["final"]
    assert np.isnan(final["q_std_edge"]) and np.isfinite(final["q_std_within"])
    assert final["buffer_edge_share"] == 0.0


def test_update_goes_through_the_patched_target() -> None:
    """`RAVL.update` must call `_critic_target`: the patch's seam. A learner that bypassed it
    (e.g. a captured graph) would silently train the unpatched base method."""
    env = PointMass()
    reach = ReachLabels(np.array([[-0.5, -0.5]]), env)
    config = RAVLConfig(obs_dim=2, act_dim=2, hidden_dim=8, num_critics=2, eta=0.0)
    learner = OraclePatchedRAVL(config, reach=reach, oracle=_oracle, steps_k=5, seed=0)
    obs = torch.full((16, 2), -0.5) + torch.linspace(0.0, 0.4, 16)[:, None]
    act = torch.ones(16, 2)
    next_obs, rew, done = env.step(obs, act)
    learner.update({"obs": obs, "act": act, "rew": rew, "next_obs": next_obs, "done": done})
    assert learner.target_rows == 16
    assert learner.patched_rows == int(reach.edge_of_reach(next_obs, 5).sum()) > 0
