"""Edge-of-reach diagnostics (eor.agent.diagnostics, docs/algorithm.md §3.8): the fixed probe,
Q by rollout step against a direct computation, training left bit-for-bit unchanged, the keys
in a tiny run's metrics.jsonl, the discounted return, and `eor plot`'s reach figure."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import Tensor

import eor
from eor.agent import RAVL, RAVLConfig
from eor.agent import trainer as trainer_mod
from eor.agent.checkpoint import capture_rng
from eor.agent.config import TrainAgentConfig
from eor.agent.diagnostics import (
    PROBE_SEED,
    ReachProbe,
    discounted_returns,
    evaluation_values,
    reach_keys,
)
from eor.agent.evaluate import evaluate
from eor.agent.setup import Components
from eor.cli import main
from eor.dynamics import DynamicsEnsemble
from eor.envs import get_env
from eor.results import reach as reach_mod
from eor.results.runs import group_runs, load_runs

pytestmark = pytest.mark.usefixtures("one_thread")

S, A = 5, 2
STEPS = 3


def make_buffer(n: int = 300, s: int = S, a: int = A, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, s)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, a)).astype(np.float32)
    rew = rng.normal(size=n).astype(np.float32)
    return eor.ReplayBuffer.from_arrays(
        obs, act, rew, obs + 0.1, np.zeros(n, np.float32), seed=seed
    )


class HandModel:
    """A model with terminations and non-finite rows: next = 1.1 s + Σa + noise; row j is
    done when next[:, 0] > 1.5, and its next state is NaN when next[:, 1] < -2."""

    obs_dim, act_dim = S, A

    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        noise = torch.randn(obs.shape, generator=generator)
        nxt = 1.1 * obs + act.sum(dim=1, keepdim=True) + 0.3 * noise
        done = nxt[:, 0] > 1.5
        nxt = torch.where((nxt[:, 1] < -2.0)[:, None], torch.nan, nxt)
        return nxt, obs[:, 0] * 0.1, done


def make_learner(num_critics: int = 4, seed: int = 0) -> RAVL:
    eta = 1.0 if num_critics > 1 else 0.0  # the diversity term needs two critics
    config = RAVLConfig(obs_dim=S, act_dim=A, hidden_dim=16, num_critics=num_critics, eta=eta)
    return RAVL(config, seed=seed)


def direct_stats(
    probe: ReachProbe, learner: RAVL, model: Any
) -> tuple[list[float], list[float], list[float], float]:
    """Q mean/std per step, alive fractions, max |Q|: row by row, with the critics' forward."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    obs = probe.start_obs.clone()
    p = obs.shape[0]
    alive = [True] * p
    means, stds, fractions, abs_max = [], [], [], 0.0
    for t in range(probe.steps_k + 1):
        act = learner.actor.act(obs, deterministic=False, generator=gen)
        with torch.no_grad():
            q = learner.critic(obs, act).double()  # [N, P]
        rows = [j for j in range(p) if alive[j]]
        if t > 0:
            fractions.append(len(rows) / p)
        means.append(float(np.mean([q[:, j].mean().item() for j in rows])))
        n = q.shape[0]  # the std over one critic is 0 (as q_policy_std)
        stds.append(float(np.mean([q[:, j].std().item() if n > 1 else 0.0 for j in rows])))
        abs_max = max([abs_max] + [q[:, j].abs().max().item() for j in rows])
        if t == probe.steps_k:
            break
        nxt, rew, done = model.step(obs, act, gen)
        for j in range(p):
            ok = bool(torch.isfinite(nxt[j]).all()) and bool(torch.isfinite(rew[j]))
            alive[j] = alive[j] and ok and not bool(done[j])
            if alive[j]:
                obs[j] = nxt[j]
    return means, stds, fractions, abs_max


# ----------------------------------------------------------------------------- the probe
def test_probe_draws_fixed_dataset_rows_and_touches_no_stream() -> None:
    buf = make_buffer()
    state = buf.get_state()
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global stream, checked
    probe = ReachProbe(buf, steps_k=STEPS, device="cpu", size=64)
    again = ReachProbe(make_buffer(), steps_k=STEPS, device="cpu", size=64)
    assert probe.size == 64 and len(set(probe.rows.tolist())) == 64
    np.testing.assert_array_equal(probe.start_obs.numpy(), buf.fields()["obs"][probe.rows])
    assert torch.equal(probe.start_obs, again.start_obs)  # the same rows for every run seed
    other = ReachProbe(buf, steps_k=STEPS, device="cpu", size=64, seed=1)
    assert not torch.equal(probe.start_obs, other.start_obs)
    assert buf.get_state() == state
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    # a dataset smaller than P: all of it
    assert ReachProbe(make_buffer(n=10), steps_k=1, device="cpu").size == 10


def test_probe_measures_the_same_noise_every_time() -> None:
    learner, model = make_learner(), HandModel()
    probe = ReachProbe(make_buffer(), steps_k=STEPS, device="cpu", size=50)
    first = probe.values(learner.actor, learner.critic, model)
    torch.randn(7)  # the global stream moves on; the probe's does not depend on it
    assert probe.values(learner.actor, learner.critic, model) == first
    assert list(first) == list(reach_keys(STEPS))


@pytest.mark.parametrize("num_critics", [1, 4])
def test_values_equal_a_direct_computation(num_critics: int) -> None:
    learner, model = make_learner(num_critics), HandModel()
    probe = ReachProbe(make_buffer(), steps_k=STEPS, device="cpu", size=97)
    got = probe.values(learner.actor, learner.critic, model)
    means, stds, fractions, abs_max = direct_stats(probe, learner, model)
    assert 0 < fractions[-1] < 1  # some rows terminated or went non-finite: the mask matters
    for t in range(STEPS + 1):
        assert got[f"reach/q_mean_t{t}"] == pytest.approx(means[t], rel=1e-5, abs=1e-6)
        assert got[f"reach/q_std_t{t}"] == pytest.approx(stds[t], rel=1e-5, abs=1e-6)
    for t in range(1, STEPS + 1):
        assert got[f"reach/alive_t{t}"] == pytest.approx(fractions[t - 1])
    assert got["reach/q_abs_max"] == pytest.approx(abs_max, rel=1e-6)


def test_values_with_a_real_dynamics_model() -> None:
    learner = make_learner()
    model = DynamicsEnsemble(
        S,
        A,
        num_members=3,
        num_elites=2,
        hidden_dim=16,
        termination_fn=lambda o: o[:, 0] > 1.0,
        generator=torch.Generator().manual_seed(0),
    )
    probe = ReachProbe(make_buffer(), steps_k=2, device="cpu", size=40)
    got = probe.values(learner.actor, learner.critic, model)
    means, stds, fractions, abs_max = direct_stats(probe, learner, model)
    assert fractions[-1] < 1
    for t in range(3):
        assert got[f"reach/q_mean_t{t}"] == pytest.approx(means[t], rel=1e-5, abs=1e-6)
        assert got[f"reach/q_std_t{t}"] == pytest.approx(stds[t], rel=1e-5, abs=1e-6)
    assert got["reach/q_abs_max"] == pytest.approx(abs_max, rel=1e-6)


def test_values_through_the_simulator() -> None:
    """`--true_dynamics`: the simulator as the probe's model (hopper terminates often)."""
    from eor.envs import make_env
    from eor.envs.true_dynamics import SimulatorDynamics

    spec = get_env("hopper")
    env = make_env(spec, seed=0)
    rng = np.random.default_rng(0)
    states = []
    for i in range(60):  # random-policy states, the later ones close to falling over
        if i % 20 == 0:
            obs, _ = env.reset(seed=i)
        states.append(obs)
        obs, _, term, _, _ = env.step(rng.uniform(-1, 1, spec.act_dim))
        if term:
            obs, _ = env.reset(seed=1000 + i)
    env.close()
    obs = np.asarray(states, np.float32)
    n, s, a = len(obs), spec.obs_dim, spec.act_dim
    buf = eor.ReplayBuffer.from_arrays(
        obs, np.zeros((n, a), np.float32), np.zeros(n, np.float32), obs, np.zeros(n, np.float32)
    )
    config = RAVLConfig(obs_dim=s, act_dim=a, hidden_dim=16, num_critics=3, eta=1.0)
    learner = RAVL(config, seed=0)
    sim = SimulatorDynamics(spec, nthread=1)
    probe = ReachProbe(buf, steps_k=4, device="cpu", size=40)
    got = probe.values(learner.actor, learner.critic, sim)
    means, stds, fractions, abs_max = direct_stats(probe, learner, sim)
    sim.close()
    for t in range(5):
        assert got[f"reach/q_mean_t{t}"] == pytest.approx(means[t], rel=1e-5, abs=1e-6)
        assert got[f"reach/q_std_t{t}"] == pytest.approx(stds[t], rel=1e-5, abs=1e-6)
    assert [got[f"reach/alive_t{t}"] for t in range(1, 5)] == pytest.approx(fractions)
    assert got["reach/q_abs_max"] == pytest.approx(abs_max, rel=1e-6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="steps_k must be a positive integer"):
        reach_keys(0)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        ReachProbe(make_buffer(), steps_k=2, device="cpu", size=0)
    empty = eor.ReplayBuffer(10, S, A)
    with pytest.raises(ValueError, match="real_buffer: the dataset buffer is empty"):
        ReachProbe(empty, steps_k=2, device="cpu")
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        discounted_returns([[1.0]], 1.5)


# ----------------------------------------------------------------------------- discounted returns
def test_discounted_returns_by_hand() -> None:
    got = discounted_returns([[1.0, 2.0, 3.0], [5.0], [], [1.0, -1.0, 4.0, 8.0]], 0.5)
    # 1 + 0.5·2 + 0.25·3;  5;  0;  1 − 0.5 + 0.25·4 + 0.125·8
    np.testing.assert_allclose(got, [2.75, 5.0, 0.0, 2.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(discounted_returns([[1.0, 2.0, 3.0]], 1.0), [6.0])
    np.testing.assert_allclose(discounted_returns([[1.0, 2.0, 3.0]], 0.0), [1.0])


class ScriptedEnv:
    """An env whose episode is a fixed reward sequence; the observation is the step count."""

    def __init__(self, rewards: list[float], start: float) -> None:
        self.rewards, self.start, self.t = rewards, start, 0

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self.t = 0
        return np.full(S, self.start), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        r = self.rewards[self.t]
        self.t += 1
        return np.full(S, self.start + self.t), r, self.t == len(self.rewards), False, {}


def test_evaluate_returns_the_discounted_return_from_each_start() -> None:
    spec = types.SimpleNamespace(normalized_score=lambda r: np.asarray(r))
    envs = [ScriptedEnv([1.0, 2.0, 3.0], 0.0), ScriptedEnv([4.0, 0.0, 0.0, 10.0], 7.0)]
    actor = types.SimpleNamespace(act=lambda obs, deterministic=True: torch.zeros(len(obs), A))
    out = evaluate(actor, spec, episodes=2, seed=0, device="cpu", envs=envs, gamma=0.9)
    expected = [1 + 0.9 * 2 + 0.81 * 3, 4 + 0.729 * 10]
    np.testing.assert_allclose(out["discounted_returns"], expected, rtol=1e-12)
    assert out["return_discounted_mean"] == pytest.approx(np.mean(expected))
    assert out["return_discounted_std"] == pytest.approx(np.std(expected))
    assert out["returns"] == [6.0, 14.0]
    assert out["start_obs"] == [[0.0] * S, [7.0] * S]
    with pytest.raises(ValueError, match="gamma"):
        evaluate(actor, spec, episodes=2, seed=0, device="cpu", envs=envs, gamma=-0.1)


def test_evaluation_values_by_hand() -> None:
    learner = make_learner()
    start = np.random.default_rng(1).normal(size=(3, S))
    probe = ReachProbe(make_buffer(), steps_k=1, device="cpu", size=20)
    got = evaluation_values(learner.actor, learner.critic, start, [1.0, 2.0, 6.0], probe)
    with torch.no_grad():
        obs = torch.as_tensor(start, dtype=torch.float32)
        q0 = learner.critic(obs, learner.actor.act(obs)).mean().item()
        qd = learner.critic(probe.start_obs, learner.actor.act(probe.start_obs)).mean().item()
    assert got["q_start_mean"] == pytest.approx(q0, rel=1e-6)
    assert got["overestimation"] == pytest.approx(q0 - 3.0, rel=1e-6)
    assert got["q_data_mean"] == pytest.approx(qd, rel=1e-6)


# ----------------------------------------------------------------------------- in a training run
def make_components(seed: int = 0) -> Components:
    spec = get_env("halfcheetah")
    rng = np.random.default_rng(seed)
    s, a, n = spec.obs_dim, spec.act_dim, 300
    obs = rng.normal(size=(n, s)).astype(np.float32)
    real = eor.ReplayBuffer.from_arrays(
        obs,
        rng.uniform(-1, 1, size=(n, a)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        (obs + 0.1 * rng.normal(size=(n, s))).astype(np.float32),
        np.zeros(n, np.float32),
        seed=seed,
    )
    model = DynamicsEnsemble(
        s,
        a,
        num_members=3,
        num_elites=2,
        hidden_dim=16,
        env_name="halfcheetah",
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        model.max_logvar.fill_(-4.0)
    return Components(spec, real, model, "synthetic-halfcheetah", "memory")


def tiny_config(run_dir: Path, **kw: Any) -> TrainAgentConfig:
    base: dict[str, Any] = dict(
        env_name="halfcheetah-random-v2",
        seed=3,
        device="cpu",
        run_dir=str(run_dir),
        epochs=2,
        updates_per_epoch=8,
        eval_every=1,
        eval_episodes=2,
        eval_max_steps=5,
        log_every=4,
        quiet=True,
        batch_size=32,
        dataset_ratio=0.25,
        rollouts_per_epoch=40,
        steps_k=STEPS,
        hidden_dim=32,
        num_critics=3,
        deterministic=True,
    )
    base.update(kw)
    return TrainAgentConfig(**base)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("reach") / "run"
    trainer_mod.Trainer(tiny_config(run), components=make_components()).train()
    return run


def test_keys_in_the_metrics_of_a_tiny_run(tiny_run: Path) -> None:
    records = read_metrics(tiny_run)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(train) == 4 and len(evals) == 2
    for rec in train:
        assert set(reach_keys(STEPS)) <= rec.keys()
        assert all(np.isfinite(rec[k]) for k in reach_keys(STEPS))
        assert all(0 <= rec[f"reach/alive_t{t}"] <= 1 for t in range(1, STEPS + 1))
        assert rec["reach/q_abs_max"] >= max(abs(rec[f"reach/q_mean_t{t}"]) for t in range(4))
    for rec in evals:
        for key in ("return_discounted_mean", "q_start_mean", "q_data_mean", "overestimation"):
            assert np.isfinite(rec[key]), key
        assert rec["overestimation"] == pytest.approx(
            rec["q_start_mean"] - rec["return_discounted_mean"], abs=1e-9
        )
        assert not {"returns", "discounted_returns", "start_obs"} & rec.keys()
    # the values change over training (the probe measures the current critics)
    assert train[0]["reach/q_mean_t0"] != train[-1]["reach/q_mean_t0"]


def test_wandb_gets_the_diagnostics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[dict[str, Any]] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: types.SimpleNamespace(id="r1", summary={})  # type: ignore[attr-defined]
    fake.log = lambda data, step: logged.append(data)  # type: ignore[attr-defined]
    fake.finish = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = tiny_config(tmp_path / "w", wandb=True, epochs=1)
    trainer_mod.Trainer(config, components=make_components()).train()
    train = [d for d in logged if "train/critic_loss" in d]
    evals = [d for d in logged if "eval/score_mean" in d]
    assert len(train) == 2 and len(evals) == 1
    assert all({f"train/{k}" for k in reach_keys(STEPS)} <= d.keys() for d in train)
    assert {"eval/overestimation", "eval/q_start_mean", "eval/return_discounted_mean"} <= evals[
        0
    ].keys()


def test_the_probe_is_fixed_across_log_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Tensor, int]] = []
    measure = ReachProbe.measure

    def spy(self: ReachProbe, actor: Any, critic: Any, model: Any) -> Tensor:
        out = measure(self, actor, critic, model)
        seen.append((self.start_obs.clone(), int(self.generator.initial_seed())))
        return out

    monkeypatch.setattr(ReachProbe, "measure", spy)
    trainer = trainer_mod.Trainer(tiny_config(tmp_path / "r"), components=make_components())
    trainer.train()
    assert len(seen) == 4
    real_obs = trainer.real_buffer.fields()["obs"]
    probe = trainer.reach_probe
    assert probe is not None
    np.testing.assert_array_equal(seen[0][0].numpy(), real_obs[probe.rows])
    assert all(torch.equal(obs, seen[0][0]) and seed == PROBE_SEED for obs, seed in seen)
    # the run's own probe is the one any other run on these data draws
    other = ReachProbe(make_components(seed=0).real_buffer, steps_k=STEPS, device="cpu")
    assert torch.equal(other.start_obs, seen[0][0])


def test_training_is_bit_for_bit_unchanged_by_the_diagnostics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_diag = trainer_mod.Trainer(tiny_config(tmp_path / "on"), components=make_components())
    with_diag.train()
    with monkeypatch.context() as m:  # the diagnostics code disabled
        m.setattr(trainer_mod, "ReachProbe", lambda *a, **k: None)
        m.setattr(trainer_mod, "evaluation_values", lambda *a, **k: {})
        without = trainer_mod.Trainer(tiny_config(tmp_path / "off"), components=make_components())
        assert without.reach_probe is None
        without.train()

    def final_state(t: trainer_mod.Trainer) -> dict[str, Any]:
        return {
            "learner": t.learner.state_dict(),
            "rng": capture_rng(t.generator),
            "real_buffer_rng": t.real_buffer.get_state(),
            "model_buffer_rng": t.model_buffer.get_state(),
            "model_buffer": {k: v.copy() for k, v in t.model_buffer.fields().items()},
        }

    a, b = final_state(with_diag), final_state(without)
    assert len(flat(a["learner"])) > 20
    for key in a:
        fa, fb = flat(a[key]), flat(b[key])
        assert fa.keys() == fb.keys()
        for k in fa:
            if isinstance(fa[k], Tensor):
                assert torch.equal(fa[k], fb[k]), (key, k)
            else:
                assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), (key, k)
    on, off = read_metrics(tmp_path / "on"), read_metrics(tmp_path / "off")
    timing = {"time", "updates_per_s", "eval_time", "rollout_time"}
    diag = {"q_start_mean", "q_data_mean", "overestimation"}
    assert len(on) == len(off)
    for r_on, r_off in zip(on, off, strict=True):
        kept = {k: v for k, v in r_on.items() if not k.startswith("reach/") and k not in diag}
        assert {k: v for k, v in kept.items() if k not in timing} == {
            k: v for k, v in r_off.items() if k not in timing
        }


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in flat(val, f"{prefix}/{i}").items()}
    return {prefix: obj}


# ----------------------------------------------------------------------------- the plot
def test_reach_series_are_the_metrics(tiny_run: Path) -> None:
    (group,) = group_runs(load_runs([tiny_run]))
    series = reach_mod.reach_series(group)
    records = read_metrics(tiny_run)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert reach_mod.steps_logged(group.runs) == STEPS
    for key in [k for k in reach_keys(STEPS) if not k.startswith("reach/alive")]:
        x, m = series[key]
        assert x.tolist() == [r["updates"] for r in train]
        assert m.tolist() == [r[key] for r in train]
    for key in reach_mod.EVAL_KEYS:
        x, m = series[key]
        assert x.tolist() == [r["updates"] for r in evals]
        assert m.tolist() == [r[key] for r in evals]
    prof = reach_mod.last_profile(series)
    assert prof is not None
    x, mean, std = prof
    assert x == train[-1]["updates"]
    assert mean.tolist() == [train[-1][f"reach/q_mean_t{t}"] for t in range(STEPS + 1)]
    assert std.tolist() == [train[-1][f"reach/q_std_t{t}"] for t in range(STEPS + 1)]


def test_the_figure_draws_the_series(tiny_run: Path) -> None:
    groups = group_runs(load_runs([tiny_run]))
    series = reach_mod.reach_series(groups[0])
    fig = reach_mod.draw_reach(groups)
    ax_mean, ax_std, ax_prof, ax_max, ax_over, ax_terms = fig.axes[:6]

    def drawn(ax: Any) -> list[tuple[list[float], list[float]]]:
        return [
            (list(ln.get_xdata()), list(ln.get_ydata()))
            for ln in ax.lines
            if ln.get_xdata() is not None and len(ln.get_xdata())
        ]

    def as_lists(key: str) -> tuple[list[float], list[float]]:
        x, m = series[key]
        return x.tolist(), m.tolist()

    assert drawn(ax_mean) == [as_lists(f"reach/q_mean_t{t}") for t in range(STEPS + 1)]
    assert drawn(ax_std) == [as_lists(f"reach/q_std_t{t}") for t in range(STEPS + 1)]
    assert drawn(ax_max) == [as_lists("reach/q_abs_max")]
    assert as_lists("overestimation") in drawn(ax_over)
    terms = drawn(ax_terms)
    for key in ("q_start_mean", "return_discounted_mean", "q_data_mean"):
        assert as_lists(key) in terms
    prof = reach_mod.last_profile(series)
    assert prof is not None
    assert drawn(ax_prof) == [(list(range(STEPS + 1)), prof[1].tolist())]


def test_eor_plot_writes_both_figures(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plot", str(tiny_run), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    paths = result.stdout.split()
    assert paths == [str(tmp_path / "c.png"), str(tmp_path / "c_reach.png")]
    data = (tmp_path / "c_reach.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    # runs from before the diagnostics: no reach figure
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text((tiny_run / "config.json").read_text())
    kept = [
        json.dumps({k: v for k, v in r.items() if not k.startswith("reach/")})
        for r in read_metrics(tiny_run)
        if r["kind"] != "eval"
    ]
    (old / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    result = CliRunner().invoke(main, ["plot", str(old), "--out", str(tmp_path / "o.png")])
    assert result.exit_code == 0 and result.stdout.split() == [str(tmp_path / "o.png")]
    assert not (tmp_path / "o_reach.png").exists()


def test_reach_series_average_seeds(tiny_run: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    twin.mkdir()
    config = json.loads((tiny_run / "config.json").read_text())
    config["seed"] = 99
    (twin / "config.json").write_text(json.dumps(config))
    shifted = []
    for r in read_metrics(tiny_run):
        if r["kind"] == "train":
            r = {**r, "reach/q_mean_t0": r["reach/q_mean_t0"] + 2.0}
        shifted.append(json.dumps(r))
    (twin / "metrics.jsonl").write_text("\n".join(shifted) + "\n")
    (group,) = group_runs(load_runs([tiny_run, twin]))
    assert len(group.runs) == 2
    x, m = reach_mod.reach_series(group)["reach/q_mean_t0"]
    train = [r for r in read_metrics(tiny_run) if r["kind"] == "train"]
    np.testing.assert_allclose(m, [r["reach/q_mean_t0"] + 1.0 for r in train], rtol=1e-12)
