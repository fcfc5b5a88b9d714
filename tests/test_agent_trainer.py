"""The RAVL training loop: run directory, metrics, checkpoints, exact resume, Ctrl-C, NaN, wandb.

These tests inject small in-memory components (synthetic halfcheetah-shaped data in a real
`eor.ReplayBuffer`, an untrained tiny `DynamicsEnsemble`) with the real learner and the real
gymnasium env for evaluation, at tiny sizes. The end-to-end CLI test on generated data and a
trained model lives in tests/test_agent_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eor
from eor.agent.checkpoint import load_checkpoint
from eor.agent.config import TrainAgentConfig
from eor.agent.ravl import NonFiniteLossError
from eor.agent.setup import Components, TrainingSetupError
from eor.agent.trainer import Trainer, evaluates_after
from eor.dynamics import DynamicsEnsemble
from eor.envs import get_env
from eor.mixed_batch import MixedBatchSampler

N_DATA = 400
TRAIN_KEYS = {
    "alpha_loss",
    "critic_loss",
    "actor_loss",
    "batch_entropy",
    "alpha",
    "q_policy_mean",
    "q_policy_std",
    "q_random_std",
    "updates_per_s",
}
ROLLOUT_KEYS = {"rollout_time", "transitions_added", "mean_length", "mean_reward", "nonfinite"}
EVAL_KEYS = {"return_mean", "return_std", "score_mean", "score_std", "eval_time"}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_components(seed: int = 0, obs_dim: int | None = None) -> Components:
    spec = get_env("halfcheetah")
    rng = np.random.default_rng(seed)
    s, a = spec.obs_dim, spec.act_dim
    obs = rng.normal(size=(N_DATA, s)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(N_DATA, a)).astype(np.float32)
    rew = rng.normal(size=N_DATA).astype(np.float32)
    next_obs = (obs + 0.1 * rng.normal(size=(N_DATA, s))).astype(np.float32)
    done = np.zeros(N_DATA, np.float32)
    real = eor.ReplayBuffer.from_arrays(obs, act, rew, next_obs, done, seed=seed)
    model = DynamicsEnsemble(
        obs_dim or s,
        a,
        num_members=3,
        num_elites=2,
        hidden_dim=16,
        env_name="halfcheetah",
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():  # a calm untrained model: small predicted variance
        model.max_logvar.fill_(-4.0)
    return Components(spec, real, model, "synthetic-halfcheetah", "memory")


def small_config(run_dir: Path, **kw: Any) -> TrainAgentConfig:
    base: dict[str, Any] = dict(
        env_name="halfcheetah-random-v2",
        seed=3,
        device="cpu",
        run_dir=str(run_dir),
        epochs=2,
        updates_per_epoch=12,
        eval_every=1,
        eval_episodes=2,
        eval_max_steps=4,
        log_every=4,
        quiet=True,
        batch_size=32,
        dataset_ratio=0.25,
        rollouts_per_epoch=40,
        steps_k=2,
        buffer_retain_epochs=2,
        hidden_dim=32,
        num_critics=3,
        deterministic=True,
    )
    base.update(kw)
    return TrainAgentConfig(**base)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def flat_state(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested state dict -> {path: leaf}, for exact comparison."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_state(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flat_state(v, f"{prefix}/{i}"))
    else:
        out[prefix] = obj
    return out


def assert_states_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    fa, fb = flat_state(a), flat_state(b)
    assert fa.keys() == fb.keys()
    n_tensors = 0
    for key in fa:
        x, y = fa[key], fb[key]
        if isinstance(x, torch.Tensor):
            n_tensors += 1
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert torch.equal(x, y), f"{key} differs (max diff {(x - y).abs().max()})"
        else:
            assert x == y, key
    assert n_tensors > 20  # actor, critics, targets, log alpha, optimiser moments, generator


DETERMINISTIC_KEYS = ("kind", "epoch", "updates")
TIMING_KEYS = {"time", "updates_per_s", "rollout_time", "eval_time"}


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# ----------------------------------------------------------------------------- the run directory
def test_run_directory_metrics_summary_and_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = Trainer(small_config(run, save_every=1), components=make_components()).train()

    config = json.loads((run / "config.json").read_text())
    assert config["env_name"] == "halfcheetah-random-v2" and config["num_critics"] == 3
    assert config["eor_version"] == eor.__version__ and config["env_id"] == "HalfCheetah-v4"
    assert TrainAgentConfig.from_dict(config).hidden_dim == 32

    records = read_metrics(run)
    kinds = [r["kind"] for r in records]
    assert kinds.count("rollout") == 2 and kinds.count("eval") == 2
    assert kinds.count("train") == 2 * 12 // 4
    # Per epoch: rollout first, then the train records, then the evaluation.
    assert kinds[:5] == ["rollout", "train", "train", "train", "eval"]
    for r in records:
        assert {"kind", "epoch", "updates", "time"} <= r.keys()
        expected = {"train": TRAIN_KEYS, "rollout": ROLLOUT_KEYS, "eval": EVAL_KEYS}[r["kind"]]
        assert expected <= r.keys(), (r["kind"], expected - r.keys())
    train = [r for r in records if r["kind"] == "train"]
    assert [r["updates"] for r in train] == [4, 8, 12, 16, 20, 24]
    assert [r["epoch"] for r in train] == [1, 1, 1, 2, 2, 2]
    assert all(np.isfinite(r["critic_loss"]) and r["updates_per_s"] > 0 for r in train)
    rollouts = [r for r in records if r["kind"] == "rollout"]
    assert [r["updates"] for r in rollouts] == [0, 12]
    assert all(r["transitions_added"] == 40 * 2 and r["mean_length"] == 2 for r in rollouts)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [(r["epoch"], r["updates"]) for r in evals] == [(1, 12), (2, 24)]
    times = [r["time"] for r in records]
    assert times == sorted(times)

    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["status"] == "completed"
    assert summary["total_updates"] == 24 and summary["epochs_completed"] == 2
    assert summary["last_score"] == evals[-1]["score_mean"]
    assert summary["last_return"] == evals[-1]["return_mean"]
    best = max(evals, key=lambda r: r["score_mean"])
    assert (
        summary["best_score"] == best["score_mean"]
        and summary["best_return"] == best["return_mean"]
    )
    spec = get_env("halfcheetah")
    assert summary["last_score"] == pytest.approx(spec.normalized_score(summary["last_return"]))
    assert summary["env_id"] == "HalfCheetah-v4" and summary["env_version"] == "v4"
    assert {"eor", "torch", "gymnasium", "mujoco"} <= summary["versions"].keys()
    assert summary["wall_time_s"] > 0

    ckpt = load_checkpoint(run)
    assert ckpt["counters"]["epochs_done"] == 2 and ckpt["counters"]["total_updates"] == 24
    assert ckpt["counters"]["metrics_offset"] == (run / "metrics.jsonl").stat().st_size
    assert {"actor", "critic", "target_critic", "log_alpha", "actor_optim", "critic_optim",
            "alpha_optim"} <= ckpt["learner"].keys()  # fmt: skip
    assert {"torch", "numpy", "python", "generator"} <= ckpt["rng"].keys()
    assert isinstance(ckpt["model_buffer"], bytes) and ckpt["real_buffer_rng"]["state"]
    snaps = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert snaps == ["epoch_0001.pt", "epoch_0002.pt", "latest.pt"]  # no temp files left
    # load_actor (eor.agent) reads our checkpoint format.
    from eor.agent import load_actor

    actor = load_actor(run)
    obs = torch.zeros(2, 17)
    trainer_state = ckpt["learner"]["actor"]
    assert torch.equal(actor.state_dict()["mu.weight"], trainer_state["mu.weight"])
    assert actor.act(obs, deterministic=True).shape == (2, 6)


def test_existing_run_dir_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(small_config(run, epochs=1, updates_per_epoch=2), components=make_components()).train()
    with pytest.raises(TrainingSetupError, match="already holds a run.*--resume"):
        Trainer(small_config(run), components=make_components())


# ----------------------------------------------------------------------------- exact resume
def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = Trainer(small_config(tmp_path / "a"), components=make_components())
    straight.train()

    first = Trainer(small_config(tmp_path / "b", epochs=1), components=make_components())
    first.train()
    assert first.summary()["total_updates"] == 12
    resumed = Trainer.resume(tmp_path / "b", overrides={"epochs": 2}, components=make_components())
    assert resumed.epochs_done == 1 and resumed.total_updates == 12
    summary = resumed.train()
    assert summary["total_updates"] == 24

    assert_states_identical(straight.learner.state_dict(), resumed.learner.state_dict())
    for key, value in straight.model_buffer.fields().items():
        np.testing.assert_array_equal(value, resumed.model_buffer.fields()[key])
    assert straight.model_buffer.get_state() == resumed.model_buffer.get_state()
    assert straight.real_buffer.get_state() == resumed.real_buffer.get_state()
    assert comparable(read_metrics(tmp_path / "a")) == comparable(read_metrics(tmp_path / "b"))


def test_ctrl_c_saves_exact_mid_epoch_state_and_resume_matches(tmp_path: Path) -> None:
    straight = Trainer(small_config(tmp_path / "a"), components=make_components())
    straight.train()

    trainer = Trainer(small_config(tmp_path / "b"), components=make_components())
    real_update = trainer.learner.update

    def update(batch: Any, **kw: Any) -> Any:
        out = real_update(batch, **kw)
        if trainer.learner.num_updates == 17:  # in epoch 2
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the trainer
        return out

    trainer.learner.update = update  # type: ignore[method-assign]
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run as a background job
    summary = trainer.train()
    assert summary["status"] == "interrupted" and summary["total_updates"] == 17
    ckpt = load_checkpoint(tmp_path / "b")
    c = ckpt["counters"]
    assert (c["epochs_done"], c["epoch_updates"], c["rollout_done"]) == (1, 5, True)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored

    resumed = Trainer.resume(tmp_path / "b", components=make_components())
    assert resumed.train()["status"] == "completed"
    assert_states_identical(straight.learner.state_dict(), resumed.learner.state_dict())
    assert comparable(read_metrics(tmp_path / "a")) == comparable(read_metrics(tmp_path / "b"))


def test_keyboard_interrupt_inside_update_saves_and_resume_finishes(tmp_path: Path) -> None:
    trainer = Trainer(small_config(tmp_path / "r"), components=make_components())
    real_update = trainer.learner.update
    calls = {"n": 0}

    def update(batch: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_update(batch, **kw)

    trainer.learner.update = update  # type: ignore[method-assign]
    summary = trainer.train()
    assert summary["status"] == "interrupted" and summary["total_updates"] == 4
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "interrupted"
    c = load_checkpoint(tmp_path / "r")["counters"]
    assert (c["epochs_done"], c["epoch_updates"], c["total_updates"]) == (0, 4, 4)

    resumed = Trainer.resume(tmp_path / "r", components=make_components())
    summary = resumed.train()
    assert summary["status"] == "completed" and summary["total_updates"] == 24
    records = read_metrics(tmp_path / "r")
    assert [r["kind"] for r in records].count("rollout") == 2  # epoch 1's rollouts not redone
    assert [r["updates"] for r in records if r["kind"] == "train"] == [4, 8, 12, 16, 20, 24]


# ----------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("every_update", [True, False], ids=["cpu-check", "deferred-check"])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, every_update: bool) -> None:
    run = tmp_path / "nan"
    trainer = Trainer(small_config(run), components=make_components())
    trainer.check_every_update = every_update  # False: the CUDA path, checked at log steps
    real_update = trainer.learner.update

    def update(batch: Any, **kw: Any) -> Any:
        if trainer.learner.num_updates == 13:  # epoch 2, not a log step: poison one reward
            batch = {k: v.clone() for k, v in batch.items()}
            batch["rew"][0] = float("nan")
        return real_update(batch, **kw)

    trainer.learner.update = update  # type: ignore[method-assign]
    good = run / "checkpoints" / "latest.pt"
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*last good checkpoint.*after epoch 1"):
        trainer.train()
    ckpt = load_checkpoint(good)
    assert ckpt["counters"]["epochs_done"] == 1 and ckpt["counters"]["total_updates"] == 12
    for name, tensor in flat_state(ckpt["learner"]).items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
    assert json.loads((run / "summary.json").read_text())["status"] == "failed_nonfinite"
    # The run can be resumed from the good checkpoint.
    resumed = Trainer.resume(run, components=make_components())
    assert resumed.total_updates == 12


# ----------------------------------------------------------------------------- wandb
def test_wandb_missing_gives_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(TrainingSetupError, match=r"pip install 'eor\[wandb\]'"):
        Trainer(small_config(tmp_path / "w", wandb=True), components=make_components())
    assert not (tmp_path / "w").exists()


def test_wandb_mirrors_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[dict[str, Any], int]] = []
    fake = types.ModuleType("wandb")
    run_obj = types.SimpleNamespace(id="abc123", summary={})
    calls: dict[str, Any] = {}

    def init(**kw: Any) -> Any:
        calls["init"] = kw
        return run_obj

    fake.init = init  # type: ignore[attr-defined]
    fake.log = lambda data, step: logged.append((data, step))  # type: ignore[attr-defined]
    fake.finish = lambda: calls.setdefault("finish", True)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "w"
    Trainer(small_config(run, wandb=True, epochs=1), components=make_components()).train()
    assert calls["finish"] and calls["init"]["config"]["num_critics"] == 3
    records = read_metrics(run)
    assert len(logged) == len(records)
    for (data, step), rec in zip(logged, records, strict=True):
        assert step == rec["updates"]
        assert data[f"{rec['kind']}/epoch"] == rec["epoch"]
    train = [d for d, _ in logged if "train/critic_loss" in d]
    assert len(train) == 3
    assert run_obj.summary["total_updates"] == 12
    assert load_checkpoint(run)["counters"]["wandb_id"] == "abc123"


# ----------------------------------------------------------------------------- batches
def test_mixed_batch_composition() -> None:
    def buf(value: float, n: int, seed: int) -> Any:
        obs = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
        act = np.zeros((n, 2), np.float32)
        return eor.ReplayBuffer.from_arrays(
            obs, act, np.full(n, value, np.float32), obs, np.zeros(n, np.float32), seed=seed
        )

    real, model = buf(1.0, 50, 0), buf(2.0, 60, 1)
    sampler = MixedBatchSampler(real, model, 5, 27, torch.device("cpu"))
    batch = sampler.sample()
    assert all(isinstance(v, torch.Tensor) for v in batch.values())
    assert batch["obs"].shape == (32, 3) and batch["rew"].shape == (32,)
    np.testing.assert_array_equal(batch["rew"].numpy(), [1.0] * 5 + [2.0] * 27)
    # Distinct within each part.
    assert len({tuple(r) for r in batch["obs"][:5].tolist()}) == 5
    assert len({tuple(r) for r in batch["obs"][5:].tolist()}) == 27
    # No copy: the tensors are the preallocated arrays.
    again = sampler.sample()
    assert again["obs"].data_ptr() == batch["obs"].data_ptr()
    only_model = MixedBatchSampler(real, model, 0, 8, torch.device("cpu")).sample()
    assert (only_model["rew"] == 2.0).all()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dataset_ratio": 1.5}, r"dataset_ratio must be in \[0, 1\]"),
        ({"dataset_ratio": -0.1}, r"dataset_ratio must be in \[0, 1\]"),
        ({"num_critics": 1, "eta": 1.0}, "num_critics must be >= 2 when eta > 0"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": -3}, "batch_size must be a positive integer"),
        ({"updates_per_epoch": 0}, "updates_per_epoch must be a positive integer"),
        ({"steps_k": 0}, "steps_k must be a positive integer"),
        ({"tau": 0.0}, r"tau must be in \(0, 1\]"),
        ({"actor_lr": -1.0}, "actor_lr must be a positive number"),
    ],
)
def test_bad_config_values(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Trainer(small_config(tmp_path / "x", **change), components=make_components())
    assert not (tmp_path / "x").exists()  # refused before the run directory is made


def test_single_critic_without_diversity_is_allowed(tmp_path: Path) -> None:
    """eta 0 (no diversity term) allows one critic: the config passes and a short run trains it."""
    TrainAgentConfig(num_critics=1, eta=0.0, load_model_dir="m").validate()
    cfg = small_config(tmp_path / "one", num_critics=1, eta=0.0, epochs=1, updates_per_epoch=4)
    trainer = Trainer(cfg, components=make_components())
    summary = trainer.train()
    assert summary["status"] == "completed" and summary["num_critics"] == 1
    assert trainer.learner.critic.num_critics == 1 and trainer.total_updates == 4
    train = [r for r in read_metrics(tmp_path / "one") if r["kind"] == "train"]
    assert train and all(np.isfinite(r["critic_loss"]) for r in train)
    assert all(r["q_policy_std"] == 0.0 for r in train)  # one critic: no spread


# config.json as eor wrote it before the learner's fields moved to RAVLHyperparams (a flat dict
# of every TrainAgentConfig field, plus the run's record keys).
OLD_CONFIG_JSON = {
    "env_name": "halfcheetah-medium-v2", "dataset": None, "seed": 7, "device": "auto",
    "run_dir": None, "epochs": 3000, "updates_per_epoch": 1000, "eval_every": 1,
    "eval_episodes": 10, "eval_max_steps": None, "checkpoint_every": 1, "save_every": 0,
    "log_every": 100, "deterministic": False, "wandb": False, "wandb_project": "RAVL",
    "wandb_group": "test", "name": "ravl", "name_prefix": "", "save": False,
    "save_path": "./trained_agents", "quiet": False, "batch_size": 256, "dataset_ratio": 0.05,
    "rollouts_per_epoch": 50000, "steps_k": 5, "buffer_retain_epochs": 5,
    "load_model_dir": "/m", "hidden_dim": 256, "num_critics": 4, "gamma": 0.99, "tau": 0.005,
    "eta": 0.5, "actor_lr": 0.0003, "critic_lr": 0.0003, "alpha_lr": 0.0003,
    "max_action": 1.0, "alpha": 0.1, "auto_alpha": True, "target_entropy": None,
}  # fmt: skip


def test_old_config_json_loads_and_the_format_is_unchanged() -> None:
    record = {**OLD_CONFIG_JSON, "eor_version": "0.1.0", "obs_dim": 17, "num_real": 12}
    config = TrainAgentConfig.from_dict(record)
    # The same flat keys and values; fields added since (cuda_graph, ...) at their defaults.
    added = {k: v for k, v in TrainAgentConfig().to_dict().items() if k not in OLD_CONFIG_JSON}
    assert config.to_dict() == {**OLD_CONFIG_JSON, **added}
    assert (config.num_critics, config.eta, config.seed) == (4, 0.5, 7)
    learner = config.learner_config(obs_dim=17, act_dim=6)
    assert (learner.num_critics, learner.eta, learner.hidden_dim) == (4, 0.5, 256)
    assert (learner.obs_dim, learner.act_dim) == (17, 6)


def test_missing_model_dir_in_config() -> None:
    with pytest.raises(ValueError, match="load_model_dir must be given"):
        TrainAgentConfig().validate()


def test_rollouts_per_epoch_larger_than_dataset(tmp_path: Path) -> None:
    with pytest.raises(
        TrainingSetupError, match=r"rollouts_per_epoch \(401\) exceeds the dataset size \(400"
    ):
        Trainer(small_config(tmp_path / "x", rollouts_per_epoch=401), components=make_components())


def test_model_buffer_smaller_than_model_share(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "x", rollouts_per_epoch=5, steps_k=1, buffer_retain_epochs=1)
    with pytest.raises(TrainingSetupError, match="model buffer"):
        Trainer(cfg, components=make_components())


def test_model_with_other_dims_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingSetupError, match="obs_dim=11.*another environment"):
        Trainer(small_config(tmp_path / "x"), components=make_components(obs_dim=11))
    assert not (tmp_path / "x").exists()


def test_resume_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingSetupError, match="not a directory"):
        Trainer.resume(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingSetupError, match="has no checkpoint"):
        Trainer.resume(tmp_path / "empty")
    run = tmp_path / "run"
    Trainer(small_config(run, epochs=1, updates_per_epoch=2), components=make_components()).train()
    with pytest.raises(TrainingSetupError, match="num_critics cannot change"):
        Trainer.resume(run, overrides={"num_critics": 5}, components=make_components())
    with pytest.raises(TrainingSetupError, match="already finished 1 epochs"):
        Trainer.resume(run, overrides={"epochs": 0}, components=make_components())


def test_checkpoint_every(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eor.agent.trainer as trainer_mod

    written: list[int] = []
    real_save = trainer_mod.atomic_torch_save

    def save(obj: Any, path: Any) -> None:
        written.append(obj["counters"]["epochs_done"])
        real_save(obj, path)

    monkeypatch.setattr(trainer_mod, "atomic_torch_save", save)
    cfg = small_config(tmp_path / "c", epochs=3, updates_per_epoch=2, checkpoint_every=2)
    Trainer(cfg, components=make_components()).train()
    assert written == [2, 3]  # every 2nd epoch, and always after the last


def test_progress_bar_shows_epoch_speed_score_and_critic_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cfg = small_config(tmp_path / "p", quiet=False, epochs=2, updates_per_epoch=4, log_every=2)
    Trainer(cfg, components=make_components()).train()
    err = capsys.readouterr().err
    assert "2/2" in err and "upd/s=" in err and "critic=" in err and "score=" in err
    capsys.readouterr()
    Trainer(
        small_config(tmp_path / "q", quiet=True, epochs=1), components=make_components()
    ).train()
    assert "upd/s" not in capsys.readouterr().err


def test_resume_refuses_a_changed_dynamics_model(tmp_path: Path) -> None:
    run = tmp_path / "m"
    comps = make_components()
    comps.model_info = {"weights_sha256": "a" * 64}
    Trainer(small_config(run, epochs=1, updates_per_epoch=2), components=comps).train()
    assert json.loads((run / "config.json").read_text())["model"]["weights_sha256"] == "a" * 64
    other = make_components()
    other.model_info = {"weights_sha256": "b" * 64}
    with pytest.raises(TrainingSetupError, match="changed since this run started"):
        Trainer.resume(run, overrides={"epochs": 2}, components=other)


def test_stop_during_evaluation_checkpoints_the_finished_epoch(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "e", epochs=3, updates_per_epoch=2, checkpoint_every=5)
    trainer = Trainer(cfg, components=make_components())
    real_evaluate = trainer._evaluate

    def evaluate() -> None:
        real_evaluate()
        trainer.request_stop()

    trainer._evaluate = evaluate  # type: ignore[method-assign]
    assert trainer.train()["status"] == "interrupted"
    c = load_checkpoint(tmp_path / "e")["counters"]
    assert (c["epochs_done"], c["epoch_updates"], c["rollout_done"]) == (1, 0, False)


@pytest.mark.parametrize(
    ("eval_every", "epochs", "expected"),
    [
        (1, 4, [1, 2, 3, 4]),
        (2, 5, [1, 3, 5]),  # the reference's `epoch % eval_every == 0` on a 0-based epoch
        (3, 5, [1, 4, 5]),  # ... and always the last epoch
        (0, 3, [3]),  # only the last
    ],
)
def test_evaluation_epochs_follow_the_reference(
    eval_every: int, epochs: int, expected: list[int]
) -> None:
    assert [e for e in range(1, epochs + 1) if evaluates_after(e, eval_every, epochs)] == expected


def test_run_evaluates_on_the_reference_schedule(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(
        small_config(run, epochs=3, updates_per_epoch=4, eval_every=2),
        components=make_components(),
    ).train()
    evals = [r["epoch"] for r in read_metrics(run) if r["kind"] == "eval"]
    assert evals == [1, 3]
