"""`eor train-agent`: option mapping, bad input, and an end-to-end run on generated data.

The end-to-end test builds, once per session, a small random-policy halfcheetah dataset with
`eor.data.collect` and a tiny dynamics model with `eor train-model`, then trains, evaluates,
checkpoints, resumes and summarises through the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import eor.agent.trainer as trainer_mod
from eor.agent.config import TrainAgentConfig
from eor.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["train-agent", *args], catch_exceptions=False)


def test_help_has_example_and_both_spellings() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and "--resume" in result.output
    for name in ("--num_critics", "--num-critics", "--steps_k", "--dataset_ratio", "--eta"):
        assert name in result.output
    assert "train-agent" in CliRunner().invoke(main, ["--help"]).output


def test_option_help_is_the_field_help_in_config_order() -> None:
    """Each option's help is its TrainAgentConfig field's metadata help (the one source), and
    the options keep their groups' order: run, data mix, rollouts, then the learner."""
    wide = {"terminal_width": 2000, "max_content_width": 2000}
    out = " ".join(CliRunner().invoke(main, ["train-agent", "--help"], **wide).output.split())
    out = out[out.index("Options:") :]
    for field in dataclasses.fields(TrainAgentConfig):
        assert field.metadata["help"], field.name
        match = re.search(rf"--{field.name}[ ,]", out)
        assert match is not None, field.name
        option = match.start()  # its help follows its spellings and type
        assert out.index(field.metadata["help"], option) - option < 150, field.name
    first = ["--env_name", "--batch_size", "--load_model_dir", "--hidden_dim", "--target_entropy"]
    assert sorted(first, key=out.index) == first


class _Captured(Exception):
    pass


def test_every_option_maps_onto_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each TrainAgentConfig field, given with dashes or underscores, reaches the config."""
    seen: list[TrainAgentConfig] = []

    class FakeTrainer:
        def __init__(self, config: TrainAgentConfig) -> None:
            seen.append(config)
            raise _Captured

    monkeypatch.setattr(trainer_mod, "Trainer", FakeTrainer)
    values: dict[str, Any] = {}
    args: list[str] = []
    bools = {  # every boolean spelling: bare flag, pyrallis values, --no-x
        "deterministic": (["--deterministic"], True),
        "cuda_graph": (["--cuda_graph"], True),
        "wandb": (["--wandb", "True"], True),
        "quiet": (["-q"], True),
        "auto_alpha": (["--no-auto-alpha"], False),
        "save": (["--save=yes"], True),
        "true_dynamics": (["--true-dynamics"], True),
    }
    for i, field in enumerate(dataclasses.fields(TrainAgentConfig)):
        name = field.name
        if name in bools:
            args += bools[name][0]
            values[name] = bools[name][1]
            continue
        text = field.type if isinstance(field.type, str) else field.type.__name__
        value: Any = {"int": 7 + i, "float": 0.5 + i / 100}.get(text.split(" ")[0], f"v{i}")
        if name == "dataset_ratio":
            value = 0.25
        spelled = name.replace("_", "-") if i % 2 else name
        args += [f"--{spelled}", str(value)]
        values[name] = value
    with pytest.raises(_Captured):
        invoke(*args)
    assert dataclasses.asdict(seen[0]) == {**dataclasses.asdict(TrainAgentConfig()), **values}


def test_defaults_are_spec_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TrainAgentConfig] = []

    class FakeTrainer:
        def __init__(self, config: TrainAgentConfig) -> None:
            seen.append(config)
            raise _Captured

    monkeypatch.setattr(trainer_mod, "Trainer", FakeTrainer)
    with pytest.raises(_Captured):
        invoke("--load_model_dir", "m")
    c = seen[0]
    assert (c.hidden_dim, c.num_critics, c.gamma, c.tau, c.eta) == (256, 10, 0.99, 5e-3, 1.0)
    assert (c.actor_lr, c.critic_lr, c.alpha_lr, c.batch_size) == (3e-4, 3e-4, 3e-4, 256)
    assert (c.epochs, c.updates_per_epoch, c.eval_episodes, c.eval_every) == (3000, 1000, 10, 1)
    assert (c.seed, c.log_every, c.max_action, c.alpha, c.auto_alpha) == (42, 100, 1.0, 0.1, True)
    assert c.target_entropy is None and c.deterministic is False and c.save is False
    assert (c.rollouts_per_epoch, c.steps_k, c.dataset_ratio) == (50_000, 5, 0.05)
    assert c.buffer_retain_epochs == 5 and c.num_real == 12 and c.num_model == 244
    assert c.wandb is False


@pytest.mark.parametrize(
    ("args", "hint", "match"),
    [
        (["--load_model_dir", "/no/such/dir"], "--load_model_dir", "is not a directory"),
        (["--dataset_ratio", "1.5"], "--dataset_ratio", r"must be in \[0, 1\]"),
        (["--dataset-ratio", "-0.5"], "--dataset_ratio", r"must be in \[0, 1\]"),
        (["--num_critics", "1", "--eta", "1.0"], "--num_critics", ">= 2 when eta > 0"),
        (["--epochs", "0"], "--epochs", "positive integer"),
        (["--batch_size", "0"], "--batch_size", "positive integer"),
        (["--updates_per_epoch", "-1"], "--updates_per_epoch", "positive integer"),
        (["--env_name", "halfcheeta-medium-v2"], "--env_name", "Did you mean"),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path: Path, args: list[str], hint: str, match: str) -> None:
    base = ["--load_model_dir", str(tmp_path), "--run_dir", str(tmp_path / "run"), "--quiet"]
    result = invoke(*base, *args)
    assert result.exit_code == 2, result.output
    assert hint in result.output
    assert re.search(match, result.output), result.output
    assert not (tmp_path / "run").exists()


def test_missing_model_dir_option() -> None:
    result = invoke("--quiet")
    assert result.exit_code == 2 and "load_model_dir must be given" in result.output


def test_resume_without_checkpoint(tmp_path: Path) -> None:
    result = invoke("--resume", str(tmp_path))
    assert result.exit_code == 2
    assert "--resume" in result.output and "has no checkpoint" in result.output


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3000-step random halfcheetah dataset and a tiny dynamics model trained on it, and a
    hopper model (for the mismatch test)."""
    from eor.data import collect

    root = tmp_path_factory.mktemp("e2e")
    data = collect(
        "halfcheetah-random-v2", steps=3000, seed=0, out=root / "hc.hdf5", progress=False
    )
    hopper_data = collect(
        "hopper-random-v2", steps=600, seed=0, out=root / "hopper.hdf5", progress=False
    )
    runner = CliRunner()
    paths = {"data": data, "model": root / "model", "hopper_model": root / "hopper_model"}
    for env, ds, out in (
        ("halfcheetah-random-v2", data, paths["model"]),
        ("hopper-random-v2", hopper_data, paths["hopper_model"]),
    ):
        result = runner.invoke(
            main,
            ["train-model", "--env_name", env, "--dataset", str(ds), "--save_path", str(out),
             "--hidden_dim", "16", "--num_models", "3", "--num_elites", "2", "--epochs", "2",
             "--min_epochs", "0", "--device", "cpu", "--quiet"],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return paths


def _small(generated: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return [
        "--env_name", "halfcheetah-random-v2", "--dataset", str(generated["data"]),
        "--load_model_dir", str(generated["model"]), "--run_dir", str(run),
        "--epochs", "2", "--updates_per_epoch", "10", "--hidden_dim", "32",
        "--num_critics", "2", "--batch_size", "32", "--rollouts_per_epoch", "100",
        "--steps_k", "2", "--eval_episodes", "2", "--eval_max_steps", "5", "--log_every", "5",
        "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def test_end_to_end_train_resume_summarise(generated: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(*_small(generated, run, "--save_every", "1"))
    assert result.exit_code == 0, result.output
    assert "completed: 2 epochs, 20 updates" in result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_updates"] == 20
    assert summary["dataset"] == "halfcheetah-random-v2" and summary["env_id"] == "HalfCheetah-v4"
    assert summary["last_score"] is not None and summary["best_score"] >= summary["last_score"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0001.pt", "epoch_0002.pt", "latest.pt",
    ]  # fmt: skip
    config = json.loads((run / "config.json").read_text())
    assert config["load_model_dir"] == str(generated["model"].resolve())
    assert config["dataset"] == str(generated["data"].resolve()) and config["num_critics"] == 2

    # Resume for one more epoch; changing a learner setting is refused.
    bad = invoke("--resume", str(run), "--num_critics", "3")
    assert bad.exit_code == 2 and "num_critics cannot change" in bad.output
    result = invoke("--resume", str(run), "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_updates"] == 30 and summary["epochs_completed"] == 3
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2, 3]
    assert [r["updates"] for r in records if r["kind"] == "train"] == [5, 10, 15, 20, 25, 30]

    from eor.agent import load_actor

    actor = load_actor(run)
    assert actor.act(torch.zeros(3, 17), deterministic=True).shape == (3, 6)


def test_mismatched_model_is_refused(generated: dict[str, Path], tmp_path: Path) -> None:
    args = _small(generated, tmp_path / "run")
    args[args.index("--load_model_dir") + 1] = str(generated["hopper_model"])
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--load_model_dir" in result.output and "hopper" in result.output
    assert not (tmp_path / "run").exists()


def test_more_rollouts_than_dataset_is_refused(generated: dict[str, Path], tmp_path: Path) -> None:
    args = _small(generated, tmp_path / "run")
    args[args.index("--rollouts_per_epoch") + 1] = "1000000"
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--rollouts_per_epoch" in result.output and "exceeds the dataset size" in result.output
