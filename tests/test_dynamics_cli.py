"""`eor train-model` takes the reference's EnsembleTrainConfig options, spelled its way.

The dataset for the reference's README command (halfcheetah-medium-v2) is made here by
`eor.data.collect` with a small random callable policy into a temporary $EOR_DATA_DIR, so the
command finds it by name as it would find a downloaded D4RL file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.cli import main
from eor.data import collect
from eor.dynamics import DynamicsConfig, load, read_meta
from eor.dynamics.config import UNUSED_REFERENCE_SWITCHES

pytestmark = pytest.mark.usefixtures("one_thread")

# Small sizes, so that a run takes a fraction of a second.
SMALL = ["--hidden_dim", "8", "--num_models", "3", "--num_elites", "2", "--epochs", "2",
         "--min_epochs", "0", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An eor dataset store holding a 400-step 'halfcheetah-medium-v2' (random actions)."""
    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(0)

    def policy(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(-1, 1, size=(obs.shape[0], 6)).astype(np.float32)

    collect(
        "halfcheetah-medium-v2",
        steps=400,
        seed=0,
        out=root / "halfcheetah_medium-v2.hdf5",
        policy=policy,
        progress=False,
    )
    return root


@pytest.fixture
def in_store(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EOR_DATA_DIR", str(store))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no_d4rl"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(main, ["train-model", *args])


def test_the_reference_readme_command(in_store: Path) -> None:
    out = in_store / "DIR"
    result = _invoke("--env_name", "halfcheetah-medium-v2", "--seed", "0", "--save_path", str(out),
                     *SMALL)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epochs run: 2 (max epochs)" in result.output
    model = load(out, env="halfcheetah-medium-v2")
    assert model.num_members == 3 and model.meta["dataset"]["name"] == "halfcheetah-medium-v2"
    config = json.loads((out / "config.json").read_text())
    assert config["bootstrap"] == "redeal" and config["env_name"] == "halfcheetah-medium-v2"


def test_defaults_are_the_references(in_store: Path) -> None:
    """No --env_name: the reference's halfcheetah-medium-v2; no --save_path: a folder under
    ./trained_dynamics (the reference's default parent folder)."""
    result = _invoke(*SMALL, "-q")
    assert result.exit_code == 0, result.output
    out = in_store / "trained_dynamics" / "halfcheetah-medium-v2_seed0"
    assert read_meta(out)["complete"]
    config = json.loads((out / "config.json").read_text())
    reference = {"env_name": "halfcheetah-medium-v2", "seed": 0, "num_models": 3,
                 "num_elites": 2, "filename": "ModelBased", "log_interval": 100,
                 "train_memory": 2_000_000, "val_memory": 500_000, "train_val_ratio": 0.2,
                 "min_epochs": 0, "l2_reg_multiplier": 1.0, "model_lr": 0.001,
                 "fix_std": False, "model_free": False, "var_max": False,
                 "logvar_head": True}  # fmt: skip
    assert {k: config[k] for k in reference} == reference
    assert DynamicsConfig().epochs == 2000 and DynamicsConfig().min_epochs == 350
    assert DynamicsConfig().hidden_dim == 200 and DynamicsConfig().num_models == 7


def test_every_reference_option_spelled_the_references_way(in_store: Path) -> None:
    out = in_store / "all"
    result = _invoke(
        "--env_name", "halfcheetah-medium-v2", "--seed", "3", "--num_models", "3",
        "--num_elites", "2", "--filename", "MyRun", "--log_interval", "1",
        "--train_memory", "320", "--val_memory", "80", "--train_val_ratio", "0.2",
        "--epochs", "3", "--min_epochs", "0", "--l2_reg_multiplier", "0.5",
        "--model_lr", "0.002", "--hidden_dim", "8", "--fix_std", "False",
        "--model_free", "false", "--var_max", "False", "--logvar_head", "True",
        "--save_model", "True", "--save_path", str(out), "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # log_interval 1: one progress line per epoch
    assert [line.split(":")[0] for line in result.output.splitlines() if line.startswith("epoch ")] == [
        "epoch 1", "epoch 2", "epoch 3"]  # fmt: skip
    assert "MyRun: dataset halfcheetah-medium-v2" in result.output
    config = json.loads((out / "config.json").read_text())
    expected = {"seed": 3, "filename": "MyRun", "log_interval": 1, "train_memory": 320,
                "val_memory": 80, "epochs": 3, "l2_reg_multiplier": 0.5, "model_lr": 0.002,
                "hidden_dim": 8}  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    assert read_meta(out)["epoch"] == 3


def test_dashed_spellings_and_bare_flags_still_work(in_store: Path) -> None:
    out = in_store / "dashed"
    result = _invoke("--env-name", "halfcheetah-medium-v2", "--save-path", str(out),
                     "--max-epochs", "1", "--hidden-dim", "8", "--num-models", "2",
                     "--num-elites", "1", "--min-epochs", "0", "--save-model", "--bootstrap",
                     "fixed", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == ""  # -q alone is True
    assert json.loads((out / "config.json").read_text())["bootstrap"] == "fixed"


@pytest.mark.parametrize("spelling", ["False", "false", "0", "no"])
def test_save_model_false_trains_reports_and_writes_nothing(in_store: Path, spelling: str) -> None:
    out = in_store / "unsaved"
    result = _invoke("--save_model", spelling, "--save_path", str(out), *SMALL)
    assert result.exit_code == 0, result.output
    assert "not saved (--save_model False)" in result.output
    assert "holdout MSE per member" in result.output and "epochs run: 2" in result.output
    assert not out.exists() and not (in_store / "trained_dynamics").exists()


@pytest.mark.parametrize("name", sorted(UNUSED_REFERENCE_SWITCHES))
def test_unimplemented_reference_switches_are_refused_by_name(in_store: Path, name: str) -> None:
    bad = "False" if UNUSED_REFERENCE_SWITCHES[name] else "True"
    result = _invoke(f"--{name}", bad, *SMALL)
    assert result.exit_code == 2, result.output
    assert f"--{name}" in result.output and "not implemented in eor" in result.output
    assert not (in_store / "trained_dynamics").exists()


@pytest.mark.parametrize(
    "args, hint, match",
    [
        (["--train_memory", "319"], "--train_memory", "the training split of this dataset has 320"),
        (["--val_memory", "79"], "--val_memory", "the holdout of this dataset has 80 rows"),
        (["--bootstrap", "shuffled"], "--bootstrap", "'shuffled' is not one of 'redeal', 'fixed'"),
        (["--save_model", "maybe"], "--save_model", "'maybe' is not a valid boolean"),
        (["--log_interval", "-1"], "--log_interval", "log_interval must be an integer >= 0"),
        (["--device", "cuda:x"], "--device", "'cuda:x' is not one of 'auto', 'cpu', 'cuda'"),
        (["--resume", "--save_model", "False"], "--resume", "it needs --save_model True"),
    ],
)
def test_bad_reference_options(in_store: Path, args: list[str], hint: str, match: str) -> None:
    result = _invoke(*SMALL, *args)
    assert result.exit_code == 2, result.output
    assert hint in result.output and match in " ".join(result.output.split()), result.output
    assert not (in_store / "trained_dynamics").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
@pytest.mark.parametrize("device", ["cuda:0", "cuda"])
def test_cuda_device_without_a_gpu_is_a_clear_error(in_store: Path, device: str) -> None:
    result = _invoke(*SMALL, "--device", device)
    assert result.exit_code == 2, result.output
    assert f"{device} was asked for but no CUDA device is visible" in result.output


def test_option_help_is_the_config_field_help() -> None:
    """Every DynamicsConfig field that is an option shows its field's metadata help (the one
    source), and every field has one."""
    import dataclasses
    import re

    wide = {"terminal_width": 2000, "max_content_width": 2000}
    out = " ".join(CliRunner().invoke(main, ["train-model", "--help"], **wide).output.split())
    out = out[out.index("Options:") :]
    shown = 0
    for field in dataclasses.fields(DynamicsConfig):
        assert field.metadata["help"], field.name
        match = re.search(rf"--{field.name}[ ,]", out)
        if match is None:  # eor's own stopping-rule constants and dtype are not options
            assert field.name in ("max_epochs_since_update", "improvement_threshold",
                                  "lr_decay", "dtype")  # fmt: skip
            continue
        assert out.index(field.metadata["help"], match.start()) - match.start() < 150, field.name
        shown += 1
    assert shown == len(dataclasses.fields(DynamicsConfig)) - 4
