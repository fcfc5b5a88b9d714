"""`eor train-agent` takes the reference's TrainConfig options (docs/algorithm.md §4) with their
meaning: the reference README command, every option spelled the reference's way, the fixed-α
mode, `--save`'s reference-layout weights.pt, and bad input.

The end-to-end tests train on a small random-policy halfcheetah dataset (`eor.data.collect`)
and a tiny `eor train-model` dynamics model, built once per session.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from eor.agent import RAVL, RAVLConfig, load_actor
from eor.agent.checkpoint import buffer_from_bytes, load_checkpoint
from eor.agent.config import REFERENCE_FIELDS, TrainAgentConfig, short_env_name
from eor.cli import main
from eor.ref import ActorRef, RAVLRef, VectorizedCriticRef

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["train-agent", *args], catch_exceptions=False)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2000-step random halfcheetah dataset and a tiny dynamics model trained on it."""
    from eor.data import collect

    root = tmp_path_factory.mktemp("refcli")
    data = collect(
        "halfcheetah-random-v2", steps=2000, seed=1, out=root / "hc.hdf5", progress=False
    )
    model = root / "model"
    result = CliRunner().invoke(
        main,
        ["train-model", "--env_name", "halfcheetah-random-v2", "--dataset", str(data),
         "--save_path", str(model), "--hidden_dim", "16", "--num_models", "3",
         "--num_elites", "2", "--epochs", "2", "--min_epochs", "0", "--device", "cpu",
         "--quiet"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"data": data, "model": model}


SMALL = [
    "--updates_per_epoch", "10", "--hidden_dim", "32", "--batch_size", "32",
    "--rollouts_per_epoch", "100", "--eval_episodes", "2", "--eval_max_steps", "5",
    "--log_every", "5", "--device", "cpu", "--quiet",
]  # fmt: skip


def test_reference_readme_command(
    generated: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference README's command, as written, plus small sizes and the local data."""
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "--env_name", "halfcheetah-medium-v2", "--num_critics", "10", "--steps_k", "5",
        "--dataset_ratio", "0.05", "--eta", "1.0", "--seed", "0",
        "--load_model_dir", str(generated["model"]),
        "--dataset", str(generated["data"]), "--epochs", "1", *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()  # the default run dir, named with the given seed
    assert run.name.startswith("halfcheetah-medium-v2-s0-")
    config = json.loads((run / "config.json").read_text())
    expected = {"env_name": "halfcheetah-medium-v2", "num_critics": 10, "steps_k": 5,
                "dataset_ratio": 0.05, "eta": 1.0, "seed": 0, "auto_alpha": True,
                "save": False, "wandb": False}  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    assert config["load_model_dir"] == str(generated["model"].resolve())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_updates"] == 10
    assert not (tmp_path / "trained_agents").exists()  # --save defaults to False


def test_every_reference_option(
    generated: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every non-derived reference field, spelled the reference's way, reaches config.json (and
    the wandb run, the --save directory) with its meaning."""
    calls: dict[str, Any] = {}

    def init(**kw: Any) -> Any:
        calls["init"] = kw
        return types.SimpleNamespace(id="r1", summary={})

    fake = types.ModuleType("wandb")
    fake.init = init  # type: ignore[attr-defined]
    fake.log = lambda data, step: None  # type: ignore[attr-defined]
    fake.finish = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run, saves = tmp_path / "run", tmp_path / "agents"
    given: dict[str, Any] = {
        "project": "P", "group": "G", "name": "nm", "name_prefix": "pre", "hidden_dim": 32,
        "num_critics": 3, "gamma": 0.98, "tau": 0.01, "eta": 0.5,
        "actor_learning_rate": 1e-3, "critic_learning_rate": 2e-3, "max_action": 0.5,
        "alpha": 0.2, "auto_alpha": False, "alpha_learning_rate": 5e-4, "target_entropy": -2.5,
        "env_name": "halfcheetah-random-v2", "batch_size": 32, "epochs": 2,
        "updates_per_epoch": 10, "eval_episodes": 2, "eval_every": 1, "save": True,
        "save_path": str(saves), "deterministic_torch": True, "seed": 7, "log_every": 5,
        "device": "cpu", "load_model_dir": str(generated["model"]), "dataset_ratio": 0.25,
        "steps_k": 2, "rollouts_per_epoch": 100, "buffer_retain_epochs": 2,
    }  # fmt: skip
    derived = {"env_name_short", "env_type", "dataset_type", "name_expanded"}
    assert set(given) == set(REFERENCE_FIELDS) - derived  # the test covers every field
    args = [x for k, v in given.items() for x in (f"--{k}", str(v))]
    result = invoke(*args, "--wandb", "--dataset", str(generated["data"]), "--run_dir", str(run),
                    "--eval_max_steps", "5")  # fmt: skip
    assert result.exit_code == 0, result.output

    config = json.loads((run / "config.json").read_text())
    for ref_name, value in given.items():
        ours = REFERENCE_FIELDS[ref_name]
        if ref_name == "load_model_dir":
            value = str(Path(value).resolve())
        assert config[ours] == value, (ref_name, ours, config[ours], value)

    # wandb: project, group and the reference's expanded name.
    init = calls["init"]
    assert (init["project"], init["group"]) == ("P", "G")
    assert init["name"].startswith("pre-nm-hc-rand-N3-eta0.5-k2-r0.25--")
    name_expanded = init["name"]

    # --save: the reference's directory, config.yaml with its field names, weights.pt.
    save_dir = saves / f"agent_{name_expanded}"
    assert f"Saving trained agent to: {save_dir}" in result.output
    assert sorted(p.name for p in save_dir.iterdir()) == ["config.yaml", "weights.pt"]
    yaml = dict(line.split(": ", 1) for line in (save_dir / "config.yaml").read_text().splitlines())
    assert list(yaml) == list(REFERENCE_FIELDS)
    assert yaml["auto_alpha"] == "false" and yaml["deterministic_torch"] == "true"
    assert yaml["actor_learning_rate"] == "0.001" and yaml["name_expanded"] == f'"{name_expanded}"'
    assert yaml["env_name_short"] == '"hc-rand"' and yaml["dataset_type"] == '"rand"'
    weights = torch.load(save_dir / "weights.pt", weights_only=True)
    assert set(weights) >= {"actor", "critic", "target_critic", "log_alpha", "actor_optim",
                            "critic_optim", "alpha_optim"}  # fmt: skip
    assert weights["alpha_optim"] is None and weights["log_alpha"] == pytest.approx(math.log(0.2))
    final = load_checkpoint(run)["learner"]  # the final actor is the run's last actor
    for key, value in final["actor"].items():
        assert torch.equal(weights["actor"][key], value), key
    actor = ActorRef(17, 6, 32, max_action=0.5)
    actor.load_state_dict(weights["actor"])  # the reference's parameter names and shapes
    critic = VectorizedCriticRef(17, 6, 32, 3)
    critic.load_state_dict(weights["critic"])

    # Fixed α: constant in every train record, no alpha_loss (the reference logs None).
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 4 and all(r["alpha"] == pytest.approx(0.2, abs=1e-7) for r in train)
    assert all("alpha_loss" not in r for r in train)

    # max_action: the rollouts acted in [-0.5, 0.5] (the model buffer's actions).
    buffer = buffer_from_bytes(load_checkpoint(run)["model_buffer"])
    acts = buffer.fields()["act"]
    assert 0.3 < abs(acts).max() <= 0.5

    # Resume keeps the mode and the name; α is still the fixed one.
    result = invoke("--resume", str(run), "--epochs", "3", "--quiet")
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run)
    assert ckpt["counters"]["name_expanded"] == name_expanded
    assert ckpt["learner"]["config"]["auto_alpha"] is False
    assert ckpt["learner"]["alpha_optim"] is None
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["alpha"] for r in records if r["kind"] == "train"][-1] == pytest.approx(0.2, abs=1e-7)
    assert load_actor(save_dir / "weights.pt").max_action == 0.5  # eor reads the file too


@pytest.mark.parametrize(
    ("args", "value"),
    [
        (["--auto_alpha", "False"], False),
        (["--auto_alpha", "true"], True),
        (["--auto-alpha", "0"], False),
        (["--auto_alpha=NO"], False),
        (["--no-auto_alpha"], False),
        (["--auto_alpha"], True),
    ],
)
def test_boolean_spellings(args: list[str], value: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture_config(monkeypatch, *args, "--deterministic_torch", "False", "--save", "True")
    assert seen.auto_alpha is value and seen.deterministic is False and seen.save is True
    seen = _capture_config(monkeypatch, "--deterministic", "--seed", "3")  # bare flag, then more
    assert seen.deterministic is True and seen.seed == 3


def test_aliases_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture_config(
        monkeypatch, "--actor_learning_rate", "1e-3", "--critic-learning-rate", "2e-3",
        "--alpha_lr", "4e-4", "--target_entropy", "None", "--project", "p", "--group", "g",
    )  # fmt: skip
    assert (seen.actor_lr, seen.critic_lr, seen.alpha_lr) == (1e-3, 2e-3, 4e-4)
    assert seen.target_entropy is None and (seen.wandb_project, seen.wandb_group) == ("p", "g")
    seen = _capture_config(monkeypatch, "--target_entropy", "-4")
    assert seen.target_entropy == -4.0


class _Captured(Exception):
    pass


def _capture_config(monkeypatch: pytest.MonkeyPatch, *args: str) -> TrainAgentConfig:
    import eor.agent.trainer as trainer_mod

    seen: list[TrainAgentConfig] = []

    class FakeTrainer:
        def __init__(self, config: TrainAgentConfig) -> None:
            seen.append(config)
            raise _Captured

    monkeypatch.setattr(trainer_mod, "Trainer", FakeTrainer)
    with pytest.raises(_Captured):
        invoke(*args)
    return seen[0]


@pytest.mark.parametrize(
    ("args", "hint", "match"),
    [
        (["--auto_alpha", "maybe"], "--auto_alpha", r"'maybe' is not a boolean: use True/False"),
        (["--save", "2"], "--save", "is not a boolean"),
        (["--deterministic", "--no-deterministic"], "--deterministic", "given both"),
        (["--name_expanded", "x"], "--name_expanded", "is derived, not set"),
        (["--env_name_short", "hc-med"], "--env_name_short", "is derived"),
        (["--env_type", "hc"], "--env_type", "is derived"),
        (["--dataset_type", "med"], "--dataset_type", "is derived"),
        (["--device", "cuda:0"], "--device", "CUDA is not available"),
        (["--alpha", "-0.1", "--auto_alpha", "False"], "--alpha", "alpha must be >= 0"),
        (["--max_action", "0"], "--max_action", "max_action must be > 0"),
        (["--target_entropy", "nan"], "--target_entropy", "finite"),
        (["--save", "True", "--save_path", ""], "--save_path", "must be given when save"),
        (["--name", "a/b"], "--name", "path separator"),
        (["--actor_learning_rate", "0"], "--actor_lr", "positive number"),
    ],
)
def test_bad_input(tmp_path: Path, args: list[str], hint: str, match: str) -> None:
    if args == ["--device", "cuda:0"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    base = ["--load_model_dir", str(tmp_path), "--run_dir", str(tmp_path / "run"), "--quiet"]
    result = invoke(*base, *args)
    assert result.exit_code == 2, result.output
    assert hint in result.output, result.output
    assert match in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_name_expanded_and_short_names() -> None:
    config = TrainAgentConfig()
    assert config.make_name_expanded("0123abcd") == "ravl-hc-med-N10-eta1.0-k5-r0.05--0123abcd"
    config = TrainAgentConfig(name="x", name_prefix="p", env_name="walker2d-medium-replay-v2")
    assert config.make_name_expanded("u") == "p-x-w2d-mixed-N10-eta1.0-k5-r0.05--u"
    assert (config.env_name_short, config.env_type, config.dataset_type) == (
        "w2d-mixed",
        "w2d",
        "mixed",
    )
    assert len(TrainAgentConfig().make_name_expanded().rsplit("--", 1)[1]) == 8
    for name, short in [
        ("halfcheetah-random-v2", "hc-rand"), ("hopper-medium-v2", "hop-med"),
        ("walker2d-medium-expert-v2", "w2d-medexp"), ("hopper-expert-v2", "hop-exp"),
        ("ant-medium-replay-v2", "ant-mixed"), ("hopper", "hop"),
    ]:  # fmt: skip
        assert short_env_name(name) == short


# ----------------------------------------------------------------------------- learner level
def _batch(c: RAVLConfig, b: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(b, c.obs_dim, generator=g, dtype=F64),
        "act": torch.rand(b, c.act_dim, generator=g, dtype=F64) * 2 - 1,
        "rew": torch.randn(b, generator=g, dtype=F64),
        "next_obs": torch.randn(b, c.obs_dim, generator=g, dtype=F64),
        "done": (torch.rand(b, generator=g) < 0.25).to(F64),
    }


def _learner(**kw: Any) -> RAVL:
    cfg = RAVLConfig(obs_dim=5, act_dim=3, hidden_dim=16, num_critics=3, **kw)
    return RAVL(cfg, dtype=F64, seed=4)


def test_fixed_alpha_stays_and_is_used() -> None:
    """auto_alpha False: α is `alpha` in every update, whatever alpha_lr; the actor and critic
    losses use it; the α step (and its ε draw) is skipped."""
    learner = _learner(auto_alpha=False, alpha=0.3, alpha_lr=0.5, eta=0.0)
    assert learner.alpha_optim is None and not learner.log_alpha.requires_grad
    for step in range(4):
        before = copy.deepcopy(learner)  # networks and generator before this update
        batch = _batch(learner.config, 16, seed=step)
        out = learner.update(batch, log=True)
        assert "alpha_loss" not in out and out["alpha"] == pytest.approx(0.3, abs=1e-15)
        assert learner.alpha.item() == pytest.approx(0.3, abs=1e-15)
        # The actor loss by hand: the first draw of the update is the actor step's.
        gen = before.generator
        mu, log_sigma = before.actor.dist_params(batch["obs"])
        a, logp = before.actor.sample(mu, log_sigma, generator=gen)
        assert logp is not None
        q = before.critic.q_values(batch["obs"], a.detach())
        expected_actor = (0.3 * logp - q.min(dim=0).values).mean()
        assert out["actor_loss"] == pytest.approx(expected_actor.item(), rel=1e-10)
        # The critic loss by hand (eta 0): target from the updated actor, the next draw.
        with torch.no_grad():
            a2, logp2 = learner.actor(batch["next_obs"], generator=gen)
            assert logp2 is not None
            q_next = before.target_critic.q_values(batch["next_obs"], a2).min(dim=0).values
            y = batch["rew"] + 0.99 * (1 - batch["done"]) * (q_next - 0.3 * logp2)
            q_now = before.critic.q_values(batch["obs"], batch["act"])
            expected_critic = ((q_now - y) ** 2).mean(dim=1).sum()
        assert out["critic_loss"] == pytest.approx(expected_critic.item(), rel=1e-10)
    # With auto_alpha (the default) the same settings move α at once: the check above can fail.
    auto = _learner(alpha=0.3, alpha_lr=0.5, eta=0.0)
    auto.update(_batch(auto.config, 16, seed=0))
    assert abs(auto.alpha.item() - 1.0) > 0.1  # log α starts at 0 (α = 1), not at `alpha`


@pytest.mark.parametrize("kw", [{"auto_alpha": False, "alpha": 0.25}, {}])
def test_state_dict_round_trip(kw: dict[str, Any]) -> None:
    """A learner restored in memory from state_dict() continues exactly as the original (in
    both α modes; the optimiser states are copies, not the live tensors)."""
    learner = _learner(**kw)
    learner.update(_batch(learner.config, 16, seed=1))
    state = learner.state_dict()
    assert (state["alpha_optim"] is None) is (kw.get("auto_alpha") is False)
    assert state["config"]["auto_alpha"] is kw.get("auto_alpha", True)
    other = _learner(**kw)
    other.load_state_dict(state)
    assert other.alpha.item() == learner.alpha.item()
    for step in (2, 3):
        a = learner.update(_batch(learner.config, 16, seed=step))
        b = other.update(_batch(other.config, 16, seed=step))
        assert a == b


def test_fixed_alpha_state_dict_refuses_the_other_mode() -> None:
    state = _learner(auto_alpha=False, alpha=0.25).state_dict()
    with pytest.raises(ValueError, match="auto_alpha=False"):
        _learner().load_state_dict(state)
    with pytest.raises(ValueError, match="alpha=0.25"):
        _learner(auto_alpha=False, alpha=0.5).load_state_dict(state)


def test_reference_state_dict_continues_in_the_reference() -> None:
    """weights.pt's layout: loaded as the reference's Agent.load_state_dict does (modules and
    Adam states), the reference's next update equals eor's."""
    learner = _learner(eta=1.0)
    for step in range(3):
        learner.update(_batch(learner.config, 16, seed=10 + step))
    sd = learner.reference_state_dict()
    c = learner.config
    actor = ActorRef(c.obs_dim, c.act_dim, c.hidden_dim, c.max_action).to(F64)
    critic = VectorizedCriticRef(c.obs_dim, c.act_dim, c.hidden_dim, c.num_critics).to(F64)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(learner.generator.get_state())
    ref = RAVLRef(actor, critic, eta=c.eta, generator=gen)
    # the reference's Agent.load_state_dict, step by step
    ref.actor.load_state_dict(sd["actor"])
    ref.critic.load_state_dict(sd["critic"])
    ref.target_critic.load_state_dict(sd["target_critic"])
    ref.actor_optimizer.load_state_dict(sd["actor_optim"])
    ref.critic_optimizer.load_state_dict(sd["critic_optim"])
    ref.alpha_optimizer.load_state_dict(sd["alpha_optim"])
    ref.log_alpha.data[0] = sd["log_alpha"]
    ref.alpha = ref.log_alpha.exp().detach()

    batch = _batch(c, 16, seed=99)
    learner.update(batch)
    ref.update(
        [batch["obs"], batch["act"], batch["rew"].reshape(-1, 1), batch["next_obs"],
         batch["done"].reshape(-1, 1)],
        log=False,
    )  # fmt: skip
    after = learner.reference_state_dict()
    for key in ("actor", "critic", "target_critic"):
        theirs = getattr(ref, key).state_dict()
        for name, value in after[key].items():
            torch.testing.assert_close(value, theirs[name], rtol=1e-9, atol=1e-12, msg=name)
    assert after["log_alpha"] == pytest.approx(ref.log_alpha.item(), rel=1e-9)


def test_existing_save_dir_is_refused(
    generated: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the reference's mkdir(exist_ok=False): a clear error, before the run dir exists."""
    monkeypatch.setattr(TrainAgentConfig, "make_name_expanded", lambda self: "fixed")
    (tmp_path / "agents" / "agent_fixed").mkdir(parents=True)
    result = invoke(
        "--env_name", "halfcheetah-random-v2", "--dataset", str(generated["data"]),
        "--load_model_dir", str(generated["model"]), "--run_dir", str(tmp_path / "run"),
        "--save", "True", "--save_path", str(tmp_path / "agents"), "--epochs", "1", *SMALL,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--save_path" in result.output and "agent_fixed already exists" in result.output
    assert not (tmp_path / "run").exists()
