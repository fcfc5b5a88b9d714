"""`eor make-dataset`: D4RL's dataset recipes on tiny SAC runs (hopper, hidden 16, 300 env
steps, a few hundred rows). A tiny SAC run never reaches D4RL's medium band, so the rule is
tested on hand-made policies.json entries, and the tiny runs widen the band
(medium_tolerance) so that the rule still picks one snapshot, the one checked here."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.cli import main
from eor.data import recipes
from eor.data.recipes import RecipeError, RecipeInterrupted, make_dataset, pick_medium
from eor.fileio import sha256_file
from eor.online import read_policies, read_replay

SAC = {
    "start_steps": 100,
    "update_after": 64,
    "batch_size": 32,
    "hidden_dim": 16,
    "eval_every": 50,
    "eval_episodes": 2,
    "eval_max_steps": 20,
    "checkpoint_every": 100,
    "log_every": 50,
    "max_episode_steps": 20,
}
SAC_STEPS = 300
STEPS = 400
WIDE = 10.0  # medium_tolerance: every snapshot is inside the band, the closest one wins
pytestmark = pytest.mark.usefixtures("one_thread")
KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def recipe(name: str, messages: list[str] | None = None, **changes: Any) -> Path:
    kwargs: dict[str, Any] = {
        "steps": None if "replay" in name else STEPS,
        "sac_steps": SAC_STEPS,
        "seed": 1,
        "medium_tolerance": WIDE,
        "sac_options": SAC,
        "device": "cpu",
        "progress": False,
        "log": (messages.append if messages is not None else lambda m: None),
    }
    kwargs.update(changes)
    return make_dataset(name, **kwargs)


def arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in KEYS}


def attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EOR_DATA_DIR", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One recipe store: SAC, then medium-expert (medium, expert), both replays, random."""
    root = tmp_path_factory.mktemp("recipes") / "store"
    mp = pytest.MonkeyPatch()
    mp.setenv("EOR_DATA_DIR", str(root))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    messages: list[str] = []
    try:
        paths = {
            kind: recipe(f"hopper-{kind}-v2", messages)
            for kind in ("medium-expert", "medium-replay", "full-replay", "random")
        }
        paths["medium"] = root / "hopper_medium-v2.hdf5"
        paths["expert"] = root / "hopper_expert-v2.hdf5"
        yield {
            "root": root,
            "paths": paths,
            "messages": messages,
            "sac": recipes.recipe_dir("hopper", 1) / "sac",
        }
    finally:
        torch.set_num_threads(threads)
        mp.undo()


# ----------------------------------------------------------------------------- the medium rule
def snap(step: int, ret: float) -> dict[str, Any]:
    return {"env_steps": step, "return_mean": ret, "path": f"checkpoints/policy_{step:08d}.pt"}


def test_medium_is_the_snapshot_closest_to_a_third_of_the_expert() -> None:
    policies = [
        snap(5, 100.0),
        snap(10, 1150.0),
        snap(15, 900.0),
        snap(20, 2400.0),
        snap(30, 3000.0),
    ]
    medium, expert = pick_medium(policies[::-1])  # order in the file does not matter
    assert expert["env_steps"] == 30
    # target 1000, band [700, 1300]: 1150 (|150|) and 900 (|100|) are inside, 900 is closer
    assert medium["env_steps"] == 15
    # a tie goes to the earlier snapshot
    tie = [snap(5, 1100.0), snap(10, 900.0), snap(20, 3000.0)]
    assert pick_medium(tie)[0]["env_steps"] == 5
    # the expert itself is never the medium policy, even when it is the closest
    assert pick_medium([snap(5, 10.0), snap(9, 30.0)], tolerance=10)[0]["env_steps"] == 5
    # another fraction moves the target: 0.8 x 3000 = 2400
    assert pick_medium(policies, fraction=0.8)[0]["env_steps"] == 20


def test_medium_band_unreachable_lists_the_returns() -> None:
    policies = [snap(5, 100.0), snap(10, 2000.0), snap(30, 3000.0)]
    with pytest.raises(RecipeError, match=r"medium band \[700.0, 1300.0\]") as err:
        pick_medium(policies)
    assert "5: 100.0, 10: 2000.0" in str(err.value) and "3000.0" in str(err.value)
    assert pick_medium(policies, tolerance=0.31)[0]["env_steps"] == 5  # |900| <= 930
    with pytest.raises(RecipeError, match="<= 0"):
        pick_medium([snap(5, -10.0), snap(10, -5.0)])
    with pytest.raises(RecipeError, match="one policy snapshot only"):
        pick_medium([snap(5, 10.0)])
    with pytest.raises(RecipeError, match="medium_fraction"):
        pick_medium(policies, fraction=1.5)


# ----------------------------------------------------------------------------- a real tiny run
def test_medium_is_the_snapshot_the_rule_picks(made: dict[str, Any]) -> None:
    policies = read_policies(made["sac"])
    assert [p["env_steps"] for p in policies] == [50, 100, 150, 200, 250, 300]
    medium, expert = pick_medium(policies, tolerance=WIDE)
    a = attrs(made["paths"]["medium"])
    assert a["policy_env_step"] == medium["env_steps"] != expert["env_steps"]
    assert a["policy_return"] == pytest.approx(medium["return_mean"], rel=0, abs=0)
    assert a["policy_checkpoint"] == str(made["sac"] / medium["path"])
    assert a["policy"] == f"checkpoint:{made['sac'] / medium['path']}"
    e = attrs(made["paths"]["expert"])
    assert e["policy_env_step"] == SAC_STEPS == expert["env_steps"]
    assert e["policy_return"] == expert["return_mean"] == e["expert_return"]
    assert len(arrays(made["paths"]["medium"])["rewards"]) == STEPS


def test_replays_are_the_sac_buffer(made: dict[str, Any]) -> None:
    step = int(attrs(made["paths"]["medium"])["policy_env_step"])
    mr = arrays(made["paths"]["medium-replay"])
    ref = read_replay(made["sac"], before_step=step)
    ref["timeouts"] = ref["timeouts"] & ~ref["terminals"]
    assert len(mr["rewards"]) == step
    for key in KEYS:
        np.testing.assert_array_equal(mr[key].reshape(ref[key].shape), ref[key], err_msg=key)
    assert attrs(made["paths"]["medium-replay"])["replay_before_step"] == step
    full = arrays(made["paths"]["full-replay"])
    whole = read_replay(made["sac"])
    assert len(full["rewards"]) == SAC_STEPS
    whole["timeouts"] = whole["timeouts"] & ~whole["terminals"]  # a terminal wins (as collect)
    for key in KEYS:
        np.testing.assert_array_equal(full[key].reshape(whole[key].shape), whole[key], err_msg=key)
    assert full["timeouts"].any() and full["terminals"].any()  # 20-step episodes; hopper falls


def test_medium_expert_is_medium_then_expert(made: dict[str, Any]) -> None:
    me = arrays(made["paths"]["medium-expert"])
    m, e = arrays(made["paths"]["medium"]), arrays(made["paths"]["expert"])
    assert len(me["rewards"]) == 2 * STEPS
    for key in KEYS:
        expected = np.concatenate([m[key], e[key]])
        if key == "timeouts" and not m["terminals"][-1]:
            assert me[key][STEPS - 1] and not m[key][STEPS - 1]  # the cut episode ends there
            expected[STEPS - 1] = True
        np.testing.assert_array_equal(me[key], expected, err_msg=key)
    a = attrs(made["paths"]["medium-expert"])
    assert a["policy_env_step"] == (
        f"medium: {attrs(made['paths']['medium'])['policy_env_step']}; expert: {SAC_STEPS}"
    )


def test_metadata(made: dict[str, Any]) -> None:
    import eor

    for kind, path in made["paths"].items():
        a = attrs(path)
        assert path == made["root"] / f"hopper_{kind.replace('-', '_')}-v2.hdf5"
        assert a["dataset"] == f"hopper-{kind}-v2" and a["recipe_kind"] == kind
        assert a["recipe"].startswith(f"D4RL {kind}:")
        assert a["env_id"] == "Hopper-v4" and a["env_version"] == "v4"
        assert a["seed"] == 1 and a["eor_version"] == eor.__version__
        assert "policy_checkpoint" in a
        if kind != "random":
            assert a["sac_run"] == str(made["sac"]) and a["sac_steps"] == SAC_STEPS
    assert attrs(made["paths"]["random"])["policy_checkpoint"] == "uniform random"


def test_datasets_info_shows_the_recipe(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EOR_DATA_DIR", str(made["root"]))
    out = CliRunner().invoke(main, ["datasets", "info", "hopper-medium-v2"]).output
    a = attrs(made["paths"]["medium"])
    for line in (
        f"recipe       {a['recipe']}",
        f"policy_checkpoint {a['policy_checkpoint']}",
        f"policy_env_step {a['policy_env_step']}",
        f"policy_return {a['policy_return']}",
        "env_id       Hopper-v4",
        "env_version  v4",
        "seed         1",
        f"eor_version  {a['eor_version']}",
        f"sac_steps    {SAC_STEPS}",
        "medium_band  [",
    ):
        assert line in out, line


def test_second_call_reuses_everything(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EOR_DATA_DIR", str(made["root"]))
    files = [*made["paths"].values(), made["sac"] / "checkpoints" / "latest.pt"]
    before = {p: p.stat().st_mtime_ns for p in files}
    messages: list[str] = []
    assert recipe("hopper-medium-expert-v2", messages) == made["paths"]["medium-expert"]
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert not any("SAC run" in m for m in messages)  # the files were enough
    # Within the fixture, one SAC run served every kind.
    sac_messages = [m for m in made["messages"] if m.startswith("SAC run")]
    assert sum("training" in m for m in sac_messages) == 1
    assert sum("reusing" in m for m in sac_messages) == 2  # medium-replay, full-replay
    assert sum("reusing" in m and ".hdf5" in m for m in messages) == 3  # medium, expert, m-e


@pytest.mark.parametrize(
    "kind", ["medium", "medium-replay", "expert", "medium-expert", "full-replay", "random"]
)
def test_train_agent_on_each_made_dataset(
    made: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    monkeypatch.setenv("EOR_DATA_DIR", str(made["root"]))
    run = tmp_path / "agent"
    result = CliRunner().invoke(
        main,
        ["train-agent", "--env_name", f"hopper-{kind}-v2", "--true_dynamics", "--run_dir",
         str(run), "--epochs", "1", "--updates_per_epoch", "4", "--hidden_dim", "16",
         "--num_critics", "2", "--batch_size", "16", "--rollouts_per_epoch", "32",
         "--steps_k", "2", "--eval_episodes", "1", "--eval_max_steps", "5", "--device", "cpu",
         "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_updates"] == 4
    assert summary["dataset"] == f"hopper-{kind}-v2"
    config = json.loads((run / "config.json").read_text())
    assert config["dataset_checksum"] == sha256_file(made["paths"][kind])  # that very file


# ----------------------------------------------------------------------------- resumption
def test_interrupted_recipe_continues(
    made: dict[str, Any], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SAC run stopped after its first evaluation continues to the same run as one that
    never stopped; a collection interrupted in the expert part keeps the medium file."""
    from eor.data import collector
    from eor.online import OnlineTrainer

    evaluate = OnlineTrainer._evaluate

    def stop_after_first(self: OnlineTrainer) -> None:
        evaluate(self)
        self.request_stop()

    with monkeypatch.context() as m:
        m.setattr(OnlineTrainer, "_evaluate", stop_after_first)
        with pytest.raises(RecipeInterrupted, match="rerun the same command"):
            recipe("hopper-medium-expert-v2")
    sac = recipes.recipe_dir("hopper", 1) / "sac"
    assert sac.parent.parent == store / "recipes"
    assert [p["env_steps"] for p in read_policies(sac)] == [50]
    assert not list(store.glob("*.hdf5"))

    real_collect = collector.collect

    def fail_on_expert(name: str, *args: Any, **kwargs: Any) -> Path:
        if "expert" in name:
            raise KeyboardInterrupt
        return real_collect(name, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(collector, "collect", fail_on_expert)
        with pytest.raises(KeyboardInterrupt):
            recipe("hopper-medium-expert-v2")
    medium = store / "hopper_medium-v2.hdf5"
    assert medium.is_file() and sorted(p.name for p in store.iterdir()) == [
        "hopper_medium-v2.hdf5",
        "recipes",
    ]  # no partial expert file
    # The continued SAC run is the uninterrupted one (same seed, one thread: bit-exact).
    assert read_policies(sac) == read_policies(made["sac"])
    mtime = medium.stat().st_mtime_ns
    messages: list[str] = []
    recipe("hopper-medium-expert-v2", messages)
    assert medium.stat().st_mtime_ns == mtime
    assert any("hopper-medium-v2: reusing" in m for m in messages)
    for kind in ("medium", "expert", "medium-expert"):
        name = f"hopper_{kind.replace('-', '_')}-v2.hdf5"
        for key in KEYS:
            np.testing.assert_array_equal(
                arrays(store / name)[key], arrays(made["root"] / name)[key], err_msg=key
            )


def test_foreign_file_is_refused_then_overwritten(store: Path) -> None:
    from eor.data import collect

    collect("hopper-random-v2", steps=50, seed=7, progress=False)
    with pytest.raises(RecipeError, match="not made by this recipe.*recipe_kind=None"):
        recipe("hopper-random-v2")
    path = recipe("hopper-random-v2", overwrite=True)
    assert attrs(path)["recipe_kind"] == "random" and len(arrays(path)["rewards"]) == STEPS
    with pytest.raises(RecipeError, match="steps=400 \\(wanted 500\\)"):
        recipe("hopper-random-v2", steps=500)


# ----------------------------------------------------------------------------- command line
def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["make-dataset", *args], catch_exceptions=False)


def test_cli_makes_random_data(store: Path) -> None:
    result = cli("hopper-random-v2", "--steps", "300", "--seed", "2", "-q")
    assert result.exit_code == 0, result.output
    path = store / "hopper_random-v2.hdf5"
    assert f"wrote hopper-random-v2 to {path}" in result.output
    assert attrs(path)["seed"] == 2 and len(arrays(path)["rewards"]) == 300
    assert "make-dataset" in CliRunner().invoke(main, ["--help"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hopper-mediocre-v2"], "unknown dataset"),
        (["lunar-medium-v2"], "unknown"),
        (["hopper-full-replay-v2", "--steps", "10"], "--steps applies to random"),
        (["hopper-medium-v2", "--sac", "hidden_dim"], "expected KEY=VALUE"),
        (["hopper-medium-v2", "--sac", "bogus=1"], "expected KEY=VALUE"),
        (["hopper-medium-v2", "--sac", "hidden_dim=wide"], "hidden_dim"),
        (["hopper-medium-v2", "--sac", "seed=3"], "--sac seed"),
        (["hopper-medium-v2", "--sac", "save_policies=False"], "needs the policy snapshots"),
        (["hopper-medium-v2", "--sac", "buffer_size=500"], "whole buffer"),
        (["hopper-medium-v2", "--sac", "update_after=100"], "update_after must be >="),
        (["hopper-medium-v2", "--medium_fraction", "1.2"], "medium_fraction must be in (0, 1)"),
        (["hopper-medium-v2", "--medium_tolerance", "-1"], "medium_tolerance must be >= 0"),
    ],
)
def test_cli_bad_input(store: Path, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2 and message in result.output, result.output  # bad input: 2
    assert not (store / "recipes").exists()  # refused before any SAC step


def test_cli_unreachable_band_says_which_returns_exist(made: dict[str, Any], store: Path) -> None:
    """The tiny run's returns (about 19, flat) are nowhere near a third of the expert's."""
    sac = [x for k, v in SAC.items() for x in ("--sac", f"{k}={v}")]
    args = ["hopper-medium-v2", "--sac_steps", str(SAC_STEPS), "--seed", "1", "--device", "cpu"]
    result = cli(*args, *sac, "-q")
    assert result.exit_code == 1
    returns = ", ".join(
        f"{p['env_steps']}: {p['return_mean']:.1f}" for p in read_policies(made["sac"])[:-1]
    )
    assert "no SAC snapshot before the expert's has a return in the medium band" in result.output
    assert returns in " ".join(result.output.split())
    assert not (store / "hopper_medium-v2.hdf5").exists()
    assert os.path.isdir(store / "recipes" / "hopper-s1" / "sac")


def test_cli_ctrl_c_in_sac_exits_130_and_says_rerun(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eor.online import OnlineTrainer

    evaluate = OnlineTrainer._evaluate

    def stop_after_first(self: OnlineTrainer) -> None:
        evaluate(self)
        self.request_stop()

    monkeypatch.setattr(OnlineTrainer, "_evaluate", stop_after_first)
    sac = [x for k, v in SAC.items() for x in ("--sac", f"{k}={v}")]
    result = cli("hopper-expert-v2", "--sac_steps", "300", "--device", "cpu", "--steps", "50", *sac)
    assert result.exit_code == 130
    assert "rerun the same command to continue" in result.output
    assert "SAC run: training 300 env steps" in result.output  # progress lines
    assert (store / "recipes" / "hopper-s0" / "sac" / "checkpoints" / "latest.pt").is_file()


def test_sac_run_that_died_before_its_first_checkpoint_starts_again(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eor.online import OnlineTrainer

    def crash(self: OnlineTrainer) -> None:
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(OnlineTrainer, "_evaluate", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            recipe("hopper-full-replay-v2")
    sac = recipes.recipe_dir("hopper", 1) / "sac"
    assert (sac / "config.json").is_file() and not (sac / "checkpoints" / "latest.pt").exists()
    messages: list[str] = []
    path = recipe("hopper-full-replay-v2", messages)
    assert any("no checkpoint yet: starting it again" in m for m in messages)
    assert len(arrays(path)["rewards"]) == SAC_STEPS
