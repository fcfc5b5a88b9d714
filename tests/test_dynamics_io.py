"""Model directory, loader checks, crash safety, resume, and `eor train-model` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import eor.dynamics.io as dio
from eor.cli import main
from eor.data import collect, load_dataset
from eor.dynamics import DynamicsConfig, DynamicsLoadError, load, read_meta, train_to_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dyn") / "hc_tiny.hdf5"
    return collect("halfcheetah-random-v2", steps=500, seed=1, out=out, progress=False)


def _config(**kw) -> DynamicsConfig:
    base = dict(
        env_name="halfcheetah-random-v2",
        num_models=3,
        num_elites=2,
        hidden_dim=16,
        epochs=4,
        min_epochs=0,
        batch_size=64,
    )
    base.update(kw)
    return DynamicsConfig(**base)


class _Crash(Exception):
    pass


def _crash_at(epoch: int):
    def hook(trainer, metrics) -> None:  # noqa: ANN001
        if trainer.epoch == epoch:
            raise _Crash(f"simulated crash after epoch {epoch}")

    return hook


@pytest.fixture(scope="module")
def trained(data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trained") / "model"
    train_to_dir(_config(), load_dataset(data_file), path, checkpoint_interval=0)
    return path


# ----------------------------------------------------------------------------- directory


def test_directory_contents_and_load(trained: Path, data_file: Path) -> None:
    names = sorted(p.name for p in trained.iterdir())
    assert names == ["config.json", "meta.json", "metrics.jsonl", "weights-000004.pt"]
    meta = read_meta(trained)
    assert meta["complete"] and meta["epoch"] == 4 and meta["stop_reason"] == "max epochs"
    ds = load_dataset(data_file)
    assert meta["dataset"]["checksum"] == ds.checksum and meta["dataset"]["n_transitions"] == len(
        ds
    )
    assert meta["dataset"]["n_holdout"] == int(len(ds) * 0.2)
    assert meta["env"]["name"] == "halfcheetah" and meta["env"]["gym_id"] == "HalfCheetah-v4"
    assert (
        meta["versions"]["torch"] == torch.__version__ and meta["versions"]["format_version"] == "1"
    )
    config = json.loads((trained / "config.json").read_text())
    assert config["hidden_dim"] == 16 and config["train_val_ratio"] == 0.2 and config["seed"] == 0
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(len(r["holdout_mse"]) == 3 for r in rows) and rows[1]["train_loss"] > 0
    # only tensors, no optimiser or buffer space: the file is about the size of the parameters
    model = load(trained, env="halfcheetah-random-v2")
    n_bytes = 4 * sum(p.numel() for p in model.state_dict().values())
    assert (trained / "weights-000004.pt").stat().st_size < n_bytes + 20_000
    assert model.elites.tolist() == meta["elites"]
    # elites are the lowest holdout MSE
    mse = meta["holdout_mse"]
    assert sorted(sorted(range(3), key=lambda i: mse[i])[:2]) == meta["elites"]
    # the loaded model reproduces the saved holdout MSE (same split from the seed)
    from eor.dynamics.train import split_indices

    _, hold = split_indices(len(ds), 0.2, 0)
    obs, act = torch.from_numpy(ds.observations)[hold], torch.from_numpy(ds.actions)[hold]
    target = torch.cat(
        [
            torch.from_numpy(ds.next_observations)[hold] - obs,
            torch.from_numpy(ds.rewards)[hold, None],
        ],
        1,
    )
    mean, _ = model.predict(obs, act)
    torch.testing.assert_close(
        ((mean - target) ** 2).mean(dim=(1, 2)).double(),
        torch.tensor(mse, dtype=torch.float64),
        rtol=1e-4,
        atol=0,
    )


def test_load_refuses_other_env(trained: Path) -> None:
    with pytest.raises(
        DynamicsLoadError, match="for env 'halfcheetah', but env 'hopper' was asked for"
    ):
        load(trained, env="hopper-medium-v2")


def _copy(trained: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(trained, dst)
    return dst


def test_load_refuses_incomplete(trained: Path, tmp_path: Path) -> None:
    d = _copy(trained, tmp_path)
    (d / "weights-000004.pt").unlink()
    with pytest.raises(DynamicsLoadError, match="incomplete: weights-000004.pt is missing"):
        load(d)
    (d / "meta.json").unlink()
    with pytest.raises(DynamicsLoadError, match="incomplete: it has no meta.json"):
        load(d)
    with pytest.raises(DynamicsLoadError, match="does not exist"):
        load(tmp_path / "nothing")


def test_load_refuses_corrupt(trained: Path, tmp_path: Path) -> None:
    d = _copy(trained, tmp_path)
    weights = d / "weights-000004.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DynamicsLoadError, match="corrupt: its sha256 does not match"):
        load(d)
    (d / "meta.json").write_text('{"format": "eor-dyn')
    with pytest.raises(DynamicsLoadError, match="meta.json' is corrupt"):
        load(d)


def test_load_refuses_other_format_version(trained: Path, tmp_path: Path) -> None:
    d = _copy(trained, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["format_version"] = 99
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        DynamicsLoadError, match="format version 99, but this eor .* reads version 1"
    ):
        load(d)


def test_load_to_device_and_step(trained: Path, data_file: Path) -> None:
    model = load(trained, env="halfcheetah")
    ds = load_dataset(data_file)
    obs, act = torch.from_numpy(ds.observations[:64]), torch.from_numpy(ds.actions[:64])
    next_obs, rew, done = model.step(obs, act, torch.Generator().manual_seed(0))
    assert next_obs.shape == (64, 17) and rew.shape == (64,) and done.dtype == torch.bool
    assert torch.isfinite(next_obs).all() and not done.any()
    assert not any(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- crash and resume


def test_crash_leaves_last_checkpoint_and_resume_matches_uninterrupted(
    data_file: Path, trained: Path, tmp_path: Path
) -> None:
    ds = load_dataset(data_file)
    path = tmp_path / "run"
    with pytest.raises(_Crash):
        train_to_dir(_config(), ds, path, checkpoint_interval=0, on_epoch=_crash_at(2))
    meta = read_meta(path)
    assert not meta["complete"] and meta["epoch"] == 2
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "meta.json",
        "metrics.jsonl",
        "train_state-000002.pt",
        "weights-000002.pt",
    ]
    with pytest.raises(DynamicsLoadError, match="unfinished training run"):
        load(path)
    partial = load(path, allow_unfinished=True)  # best-so-far model
    assert partial.elites.tolist() == meta["elites"]
    with pytest.raises(FileExistsError, match="--resume"):
        train_to_dir(_config(), ds, path)
    train_to_dir(_config(), ds, path, resume=True, checkpoint_interval=0)
    resumed, straight = load(path), load(trained)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "meta.json",
        "metrics.jsonl",
        "weights-000004.pt",
    ]
    with pytest.raises(DynamicsLoadError, match="nothing to resume"):
        train_to_dir(_config(), ds, path, resume=True)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = load_dataset(data_file)
    path = tmp_path / "run"
    real = dio.atomic_write_json
    calls = {"meta": 0}

    def flaky(p: Path, obj: object, **kwargs: Any) -> None:
        if Path(p).name == "meta.json":
            calls["meta"] += 1
            if calls["meta"] == 3:  # epoch 0 and 1 written; die while writing epoch 2's meta
                raise _Crash("disk full")
        real(p, obj, **kwargs)

    monkeypatch.setattr(dio, "atomic_write_json", flaky)
    with pytest.raises(_Crash):
        train_to_dir(_config(), ds, path, checkpoint_interval=0)
    assert calls["meta"] == 3
    monkeypatch.setattr(dio, "atomic_write_json", real)
    meta = read_meta(path)
    assert meta["epoch"] == 1
    load(path, allow_unfinished=True)  # sha256 of the referenced files still match
    train_to_dir(_config(), ds, path, resume=True, checkpoint_interval=0)  # stray files are fine
    assert read_meta(path)["complete"]
    assert not [p for p in path.iterdir() if p.name.startswith(".") or "000002" in p.name]


def test_resume_refuses_other_dataset(data_file: Path, tmp_path: Path) -> None:
    ds = load_dataset(data_file)
    path = tmp_path / "run"
    with pytest.raises(_Crash):
        train_to_dir(_config(), ds, path, checkpoint_interval=0, on_epoch=_crash_at(1))
    other = collect(
        "halfcheetah-random-v2", steps=300, seed=2, out=tmp_path / "other.hdf5", progress=False
    )
    with pytest.raises(DynamicsLoadError, match="resume needs the same data"):
        train_to_dir(_config(), load_dataset(other), path, resume=True)


# ----------------------------------------------------------------------------- CLI


def test_cli_train_load_step(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_model"
    result = CliRunner().invoke(
        main,
        [
            "train-model",
            "--env-name",
            "halfcheetah-random-v2",
            "--dataset",
            str(data_file),
            "--max-epochs",
            "2",
            "--hidden_dim",
            "16",
            "--seed",
            "3",
            "--save_path",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epochs run: 2 (max epochs)" in result.output and "elites (*)" in result.output
    assert "holdout MSE per member" in result.output
    model = load(out, env="halfcheetah-random-v2")
    assert model.num_members == 7 and model.num_elites == 5 and model.hidden_dim == 16
    assert model.meta["epoch"] == 2 and json.loads((out / "config.json").read_text())["seed"] == 3
    obs = torch.zeros(8, 17)
    next_obs, _, _ = model.step(obs, torch.zeros(8, 6), torch.Generator().manual_seed(0))
    assert next_obs.shape == (8, 17)


def test_cli_resume(data_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "run"
    with pytest.raises(_Crash):
        train_to_dir(
            _config(epochs=3),
            load_dataset(data_file),
            path,
            checkpoint_interval=0,
            on_epoch=_crash_at(1),
        )
    args = [
        "train-model",
        "--env_name",
        "halfcheetah-random-v2",
        "--dataset",
        str(data_file),
        "--save_path",
        str(path),
        "-q",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--resume" in result.output
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert read_meta(path)["complete"] and read_meta(path)["epoch"] == 3


def test_cli_resume_by_name_falls_back_to_the_recorded_file(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained on data found by name resumes from the file meta.json recorded when the
    name no longer finds it (EOR_DATA_DIR moved); with no such file it says what was searched."""
    from eor.data.sources import d4rl_file_name

    store = tmp_path / "store"
    store.mkdir()
    stored = store / d4rl_file_name("halfcheetah-random-v2")
    shutil.copy(data_file, stored)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no-d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(store))
    path = tmp_path / "run"
    with pytest.raises(_Crash):
        train_to_dir(
            _config(epochs=3),
            load_dataset("halfcheetah-random-v2"),
            path,
            checkpoint_interval=0,
            on_epoch=_crash_at(1),
        )
    assert read_meta(path)["dataset"]["path"] == str(stored)
    args = ["train-model", "--env_name", "halfcheetah-random-v2", "--save_path", str(path)]
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(main, [*args, "--resume", "-q"])
    assert result.exit_code == 0, result.output
    assert "is not found by name now" in result.output and str(stored) in result.output
    assert read_meta(path)["complete"] and read_meta(path)["epoch"] == 3

    fresh = tmp_path / "fresh"  # not a resume: no fallback, the usual not-found message
    stored.unlink()
    result = CliRunner().invoke(main, ["train-model", "--env_name", "halfcheetah-random-v2",
                                       "--save_path", str(fresh), "-q"])  # fmt: skip
    assert result.exit_code == 2 and "not found. Searched" in result.output


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--env_name", "halfcheeta-random-v2"], "--env_name"),
        (["--dataset", "/nonexistent/file.hdf5"], "does not exist"),
        (["--train_val_ratio", "1.5"], r"train_val_ratio must lie in \(0, 1\)"),
        (["--train_val_ratio", "0"], r"train_val_ratio must lie in \(0, 1\)"),
        (["--num_elites", "9"], "num_elites must be <= num_models"),
        (["--max_epochs", "0"], "epochs must be a positive integer"),
        (["--device", "tpu"], "'tpu' is not one of"),
    ],
)
def test_cli_bad_inputs(extra: list[str], match: str, data_file: Path, tmp_path: Path) -> None:
    args = [
        "train-model",
        "--env_name",
        "halfcheetah-random-v2",
        "--dataset",
        str(data_file),
        "--save_path",
        str(tmp_path / "m"),
        "-q",
    ]
    # later options win in click: the bad value overrides the good one above
    result = CliRunner().invoke(main, args + extra)
    assert result.exit_code == 2, result.output
    import re

    assert re.search(match, result.output), result.output
    assert not (tmp_path / "m").exists()


def test_cli_missing_named_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "store"))
    result = CliRunner().invoke(
        main,
        [
            "train-model",
            "--env_name",
            "walker2d-expert-v2",
            "--save_path",
            str(tmp_path / "m"),
            "-q",
        ],
    )
    assert result.exit_code == 2 and "not found" in result.output, result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_cli_cuda_without_gpu(data_file: Path, tmp_path: Path) -> None:
    args = ["train-model", "--env_name", "halfcheetah-random-v2", "--dataset", str(data_file)]
    result = CliRunner().invoke(
        main, [*args, "--save_path", str(tmp_path / "m"), "--device", "cuda"]
    )
    assert result.exit_code == 2 and "no CUDA device is visible" in result.output, result.output


def test_cli_help_lists_both_spellings() -> None:
    result = CliRunner().invoke(main, ["train-model", "--help"])
    assert result.exit_code == 0
    for name in (
        "env_name",
        "num_models",
        "num_elites",
        "hidden_dim",
        "min_epochs",
        "model_lr",
        "l2_reg_multiplier",
        "train_val_ratio",
        "save_path",
        "max_epochs",
    ):
        assert f"--{name}" in result.output and f"--{name.replace('_', '-')}" in result.output, name


def test_cli_ctrl_c_keeps_checkpoint_and_resume_finishes(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eor.dynamics.train import DynamicsTrainer

    real = DynamicsTrainer.run_epoch

    def interrupted(self: DynamicsTrainer) -> dict:
        if self.epoch == 2:  # Ctrl-C in the middle of epoch 3
            raise KeyboardInterrupt
        return real(self)

    path = tmp_path / "m"
    args = ["train-model", "--env_name", "halfcheetah-random-v2", "--dataset", str(data_file),
            "--save_path", str(path), "--hidden_dim", "8", "--max_epochs", "4",
            "--checkpoint_interval", "0", "-q"]  # fmt: skip
    monkeypatch.setattr(DynamicsTrainer, "run_epoch", interrupted)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130 and "continue with --resume" in result.output, result.output
    assert read_meta(path)["epoch"] == 2 and not read_meta(path)["complete"]
    monkeypatch.setattr(DynamicsTrainer, "run_epoch", real)
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert read_meta(path)["complete"] and read_meta(path)["epoch"] == 4


def test_load_refuses_meta_without_dims(trained: Path, tmp_path: Path) -> None:
    d = _copy(trained, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    del meta["dims"]["hidden_dim"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DynamicsLoadError, match="corrupt: dims must hold"):
        load(d)
