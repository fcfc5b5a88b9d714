"""`eor.agent.cuda_graph.GraphedUpdate` and `eor train-agent --cuda_graph`.

CPU tests: the static buffers, that an update reads only them, bit-for-bit equality with
`RAVL.update`, clear errors, and the warm-up / capture / replay / re-capture sequence through a
stand-in for the CUDA calls (`FakeGraphs`: like a real capture it runs nothing, a replay runs
the captured body, and a replay after the optimiser state it captured was replaced fails, as
the real graph would read freed memory). Tests marked `gpu` compare real captured updates with
eager ones on CUDA; they have not been run yet (no GPU was available when they were written).
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from eor.agent import RAVL, RAVLConfig
from eor.agent.config import TrainAgentConfig
from eor.agent.cuda_graph import GraphedUpdate
from eor.agent.ravl import NonFiniteLossError
from eor.agent.setup import TrainingSetupError
from eor.agent.trainer import Trainer
from eor.cli import main
from tests.helpers import assert_close_verbose
from tests.test_agent_ravl import _batch
from tests.test_agent_trainer import (
    assert_states_identical,
    comparable,
    make_components,
    read_metrics,
    small_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F32 = torch.float32
CFG = RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3)
B = 8


def _batches(n: int, cfg: RAVLConfig = CFG, dtype: torch.dtype = F32) -> list[dict[str, Any]]:
    return [_batch(cfg, B, seed=100 + i, dtype=dtype) for i in range(n)]


def _params(learner: RAVL) -> list[torch.Tensor]:
    tensors = [p.detach().clone() for p in learner.actor.parameters()]
    tensors += [p.detach().clone() for p in learner.critic.parameters()]
    tensors += [p.detach().clone() for p in learner.target_critic.parameters()]
    return tensors + [learner.log_alpha.detach().clone(), learner.alpha.detach().clone()]


def _assert_same_learner(a: RAVL, b: RAVL) -> None:
    for i, (p, q) in enumerate(zip(_params(a), _params(b), strict=True)):
        assert torch.equal(p.cpu(), q.cpu()), f"tensor {i} differs"
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.num_updates == b.num_updates


class FakeGraph:
    def __init__(self, owner: FakeGraphs, body: Callable[[], None], learner: RAVL) -> None:
        self.owner, self.body, self.learner = owner, body, learner
        self.states = [o.state for o in _optims(learner)]

    def replay(self) -> None:
        # The real graph reads the optimiser state tensors it captured by address.
        if any(o.state is not s for o, s in zip(_optims(self.learner), self.states, strict=True)):
            raise AssertionError("replay after the captured optimiser state was replaced")
        self.owner.events.append("replay")
        self.body()


def _optims(learner: RAVL) -> list[torch.optim.Optimizer]:
    optims: list[torch.optim.Optimizer] = [learner.actor_optim, learner.critic_optim]
    return optims if learner.alpha_optim is None else [learner.alpha_optim, *optims]


class FakeGraphs:
    """`_CudaGraphs` for the CPU: records what GraphedUpdate asks of the CUDA side."""

    def __init__(self, learner: RAVL) -> None:
        self.learner = learner
        self.events: list[str] = []
        self.generators: list[torch.Generator] = []
        self.capturable_at_capture: list[bool] = []

    @contextmanager
    def side_stream(self) -> Iterator[None]:
        self.events.append("side")
        yield

    def capture(self, body: Callable[[], None], generator: torch.Generator) -> FakeGraph:
        self.events.append("capture")
        self.generators.append(generator)
        groups = [g for o in _optims(self.learner) for g in o.param_groups]
        self.capturable_at_capture += [g["capturable"] for g in groups]
        return FakeGraph(self, body, self.learner)  # a capture runs nothing


def _pair(seed: int = 1, cfg: RAVLConfig = CFG) -> tuple[RAVL, RAVL]:
    return RAVL(cfg, seed=seed), RAVL(cfg, seed=seed)


# ----------------------------------------------------------------------------- CPU: eager
def test_cpu_updates_equal_ravl_update_bit_for_bit() -> None:
    learner, twin = _pair()
    graphed = GraphedUpdate(learner, B)
    assert not graphed.capture  # the CPU runs the body eagerly
    kinds = [{}, {"log": True}, {"check_finite": False}, {}, {"log": True}, {}]
    for batch, kw in zip(_batches(len(kinds)), kinds, strict=True):
        assert graphed.update(batch, **kw) == twin.update(batch, **kw)
    _assert_same_learner(learner, twin)
    assert (graphed.captures, graphed.replays) == (0, 0)


def test_static_buffers_are_allocated_once_and_hold_the_last_batch() -> None:
    graphed = GraphedUpdate(RAVL(CFG, seed=1), B)
    ptrs = {k: t.data_ptr() for k, t in graphed.static.items()}
    batches = _batches(3)
    for batch in batches:
        graphed.update(batch)
        assert {k: t.data_ptr() for k, t in graphed.static.items()} == ptrs
    for key, value in batches[-1].items():
        assert torch.equal(graphed.static[key], value), key
        assert graphed.static[key].data_ptr() != value.data_ptr()  # a copy, not the caller's


def test_update_reads_only_the_static_copies() -> None:
    """The caller's arrays (numpy views of a reused buffer, as the trainer's sampler gives) are
    overwritten after each call: the results are those of the original batches."""
    learner, twin = _pair()
    graphed = GraphedUpdate(learner, B)
    reused = {k: np.empty(v.shape, np.float32) for k, v in _batches(1)[0].items()}
    for batch in _batches(4):
        for k, v in batch.items():
            reused[k][...] = v.numpy()
        ours = graphed.update(reused)
        for v in reused.values():
            v.fill(np.nan)  # the caller reuses its buffer at once
        assert ours == twin.update(batch)
    _assert_same_learner(learner, twin)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("obs", torch.zeros(B, 4), r"batch\['obs'\] must have shape \[8, 5\].*got \(8, 4\)"),
        ("act", torch.zeros(B + 1, 2), r"batch\['act'\] must have shape \[8, 2\].*batch_size=8"),
        ("rew", torch.zeros(B, 2), r"batch\['rew'\] must have shape \[8\]"),
        ("done", torch.zeros(B, dtype=torch.float64), r"batch\['done'\] must have dtype "),
        ("next_obs", np.zeros((B, 5), np.float64), r"batch\['next_obs'\].*torch.float32"),
        ("obs", torch.zeros(B, 5, dtype=torch.int64), r"batch\['obs'\].*got torch.int64"),
    ],
)
def test_wrong_batch_is_a_clear_error_naming_the_key(key: str, value: Any, match: str) -> None:
    learner = RAVL(CFG, seed=1)
    graphed = GraphedUpdate(learner, B)
    good = _batches(1)[0]
    before = {k: t.clone() for k, t in graphed.static.items()}
    with pytest.raises(ValueError, match=match):
        graphed.update({**good, key: value})
    assert learner.num_updates == 0
    for k, t in graphed.static.items():  # nothing was copied in
        assert torch.equal(t, before[k]), k


def test_batch_forms_and_other_errors() -> None:
    learner, twin = _pair()
    graphed = GraphedUpdate(learner, B)
    batch = _batches(1)[0]
    column = {**batch, "rew": batch["rew"].reshape(-1, 1), "done": batch["done"].reshape(-1, 1)}
    assert graphed.update(column) == twin.update(batch)  # [B, 1] rewards and dones
    batch = _batches(2)[1]
    keys = ("obs", "act", "rew", "next_obs", "done")
    assert graphed.update([batch[k] for k in keys]) == twin.update(batch)  # a sequence
    with pytest.raises(ValueError, match=r"batch is missing \['done'\]"):
        graphed.update({k: v for k, v in batch.items() if k != "done"})
    with pytest.raises(ValueError, match="batch must hold 5 arrays"):
        graphed.update([batch["obs"]])
    for name, kw in (("batch_size", {"batch_size": 0}), ("warmup", {"warmup": 0})):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            GraphedUpdate(learner, **{"batch_size": B, **kw})
    with pytest.raises(ValueError, match="capture=True needs a learner on CUDA.*cpu"):
        GraphedUpdate(learner, B, capture=True)


def test_nonfinite_losses_raise_as_in_ravl_update() -> None:
    graphed = GraphedUpdate(RAVL(CFG, seed=1), B)
    good, bad = _batches(2)
    bad["rew"][0] = float("nan")
    graphed.update(good)
    with pytest.raises(NonFiniteLossError, match="at update 2"):
        graphed.update(bad)


# ----------------------------------------------------------------------------- CPU: capture logic
def test_warmup_capture_replay_sequence_equals_eager_updates() -> None:
    learner, twin = _pair()
    fake = FakeGraphs(learner)
    graphed = GraphedUpdate(learner, B, warmup=2, _graphs=fake)
    kinds = [{}, {}, {}, {"check_finite": False}, {"log": True}, {}, {}]
    for batch, kw in zip(_batches(len(kinds)), kinds, strict=True):
        assert graphed.update(batch, **kw) == twin.update(batch, **kw)
        assert learner.num_updates == twin.num_updates
        assert torch.equal(learner.alpha, twin.alpha)  # the graph's α is the learner's
    # two warm-up updates on the side stream, one capture, replays; the log step runs eagerly
    assert fake.events == ["side", "side", "capture", "replay", "replay", "replay", "replay"]
    assert (graphed.captures, graphed.replays) == (1, 4)
    assert fake.generators == [learner.generator]  # registered with the graph
    assert fake.capturable_at_capture and all(fake.capturable_at_capture)
    for optim in _optims(learner):  # set for the capture only
        assert all(group["capturable"] is False for group in optim.param_groups)
    assert learner.state_dict()["actor_optim"]["param_groups"][0]["capturable"] is False
    _assert_same_learner(learner, twin)


def test_fixed_alpha_and_deferred_nan_through_the_graph() -> None:
    cfg = RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3, auto_alpha=False)
    learner, twin = _pair(cfg=cfg)
    graphed = GraphedUpdate(learner, B, warmup=1, _graphs=FakeGraphs(learner))
    batches = _batches(4, cfg)
    for batch in batches[:2]:
        assert graphed.update(batch) == twin.update(batch)
    assert set(graphed.update(batches[2])) == {"critic_loss", "actor_loss"}
    twin.update(batches[2])
    _assert_same_learner(learner, twin)
    batches[3]["rew"][1] = float("inf")
    assert graphed.update(batches[3], check_finite=False) == {}  # a replay, nothing read back
    assert graphed.replays == 3
    with pytest.raises(NonFiniteLossError, match="in one of updates 3..4"):
        learner.raise_if_nonfinite()


def test_reload_recaptures_after_a_new_warmup() -> None:
    learner, twin = _pair()
    fake = FakeGraphs(learner)
    graphed = GraphedUpdate(learner, B, warmup=1, _graphs=fake)
    batches = _batches(8)
    for batch in batches[:3]:
        graphed.update(batch)
        twin.update(batch)
    buf = io.BytesIO()
    torch.save(twin.state_dict(), buf)  # a snapshot to go back to, as a resume does
    for batch in batches[3:5]:
        graphed.update(batch)
    for target in (learner, twin):  # one copy each: loaded optimiser state is not copied
        buf.seek(0)
        target.load_state_dict(torch.load(buf, weights_only=False))  # new optimiser tensors
    for batch in batches[5:]:
        assert graphed.update(batch) == twin.update(batch)
    before = ["side", "capture", "replay", "replay", "replay", "replay"]  # updates 1-5
    assert fake.events == [*before, "side", "capture", "replay", "replay"]  # 6-8, recaptured
    assert graphed.captures == 2
    _assert_same_learner(learner, twin)
    graphed.reset()
    assert not graphed.captured
    graphed.update(batches[0])
    assert fake.events[-1] == "side"


# ----------------------------------------------------------------------------- trainer and CLI
def test_config_field_is_recorded_and_checked(tmp_path: Path) -> None:
    field = TrainAgentConfig.__dataclass_fields__["cuda_graph"]
    assert field.default is False
    assert "default off until measured on a GPU" in field.metadata["help"]
    cfg = TrainAgentConfig(cuda_graph=True, load_model_dir="m")
    assert cfg.to_dict()["cuda_graph"] is True
    assert TrainAgentConfig.from_dict(cfg.to_dict()).cuda_graph is True
    assert TrainAgentConfig.from_dict({"seed": 1}).cuda_graph is False  # an older config.json
    with pytest.raises(ValueError, match="cuda_graph must be True or False, got 'yes'"):
        TrainAgentConfig(cuda_graph="yes", load_model_dir="m").validate()  # type: ignore[arg-type]
    run = tmp_path / "run"
    Trainer(small_config(run, epochs=1, updates_per_epoch=2), components=make_components())
    assert json.loads((run / "config.json").read_text())["cuda_graph"] is False


def test_trainer_refuses_cuda_graph_without_cuda(tmp_path: Path) -> None:
    with pytest.raises(TrainingSetupError, match=r"^cuda_graph: needs CUDA.*device is cpu"):
        Trainer(small_config(tmp_path / "x", cuda_graph=True), components=make_components())
    assert not (tmp_path / "x").exists()


def test_trainer_runs_updates_through_the_wrapper(tmp_path: Path) -> None:
    """The loop's updates go through `Trainer.graphed` when set (on the CPU: eagerly on the
    static buffers), with the same run as plain `RAVL.update` bit for bit."""
    straight = Trainer(small_config(tmp_path / "a"), components=make_components())
    straight.train()
    trainer = Trainer(small_config(tmp_path / "b"), components=make_components())
    assert trainer.graphed is None
    trainer.graphed = GraphedUpdate(trainer.learner, trainer.config.batch_size)
    calls = {"n": 0}
    real = trainer.graphed.update

    def counted(batch: Any, **kw: Any) -> Any:
        calls["n"] += 1
        return real(batch, **kw)

    trainer.graphed.update = counted  # type: ignore[method-assign]
    trainer.train()
    assert calls["n"] == 24
    assert_states_identical(straight.learner.state_dict(), trainer.learner.state_dict())
    assert comparable(read_metrics(tmp_path / "a")) == comparable(read_metrics(tmp_path / "b"))


def test_resume_of_a_cuda_graph_run_on_a_cpu(tmp_path: Path) -> None:
    """A run made with --cuda_graph (its checkpoint says so) cannot resume on the CPU as is;
    it can with the setting overridden, and continues exactly."""
    run = tmp_path / "run"
    Trainer(small_config(run, epochs=1), components=make_components()).train()
    path = run / "checkpoints" / "latest.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["cuda_graph"] = True  # as a GPU run with --cuda_graph writes it
    torch.save(ckpt, path)
    with pytest.raises(TrainingSetupError, match="cuda_graph: needs CUDA"):
        Trainer.resume(run, overrides={"epochs": 2}, components=make_components())
    resumed = Trainer.resume(
        run, overrides={"epochs": 2, "cuda_graph": False}, components=make_components()
    )
    assert resumed.graphed is None and resumed.train()["status"] == "completed"
    straight = Trainer(small_config(tmp_path / "a"), components=make_components())
    straight.train()
    assert_states_identical(straight.learner.state_dict(), resumed.learner.state_dict())


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["train-agent", *args], catch_exceptions=False)


def test_cli_flag_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    import eor.agent.trainer as trainer_mod

    seen: list[TrainAgentConfig] = []

    class Parsed(Exception):
        pass

    class FakeTrainer:
        def __init__(self, config: TrainAgentConfig) -> None:
            seen.append(config)
            raise Parsed  # stop here: only the parsing is under test

    monkeypatch.setattr(trainer_mod, "Trainer", FakeTrainer)
    for args, value in (([], False), (["--cuda_graph"], True), (["--cuda-graph", "false"], False)):
        with pytest.raises(Parsed):
            _invoke("--load_model_dir", "m", *args)
        assert seen[-1].cuda_graph is value, args
    help_text = " ".join(_invoke("--help").output.split())
    assert "--cuda_graph" in help_text and "default off until measured on a GPU" in help_text


@pytest.mark.parametrize("device", [[], ["--device", "cpu"]], ids=["auto", "cpu"])
def test_cli_cuda_graph_on_a_cpu_is_a_usage_error(tmp_path: Path, device: list[str]) -> None:
    if torch.cuda.is_available() and not device:
        pytest.skip("auto picks CUDA here")
    run = tmp_path / "run"
    result = _invoke(
        "--load_model_dir", str(tmp_path), "--run_dir", str(run), "--quiet", "--cuda_graph", *device
    )
    assert result.exit_code == 2, result.output
    assert "--cuda_graph" in result.output and "needs CUDA" in result.output
    assert "device is cpu" in result.output
    assert not run.exists()


# ----------------------------------------------------------------------------- GPU
def _cuda_pair(cfg: RAVLConfig = CFG, seed: int = 1) -> tuple[RAVL, RAVL]:
    return RAVL(cfg, device="cuda", seed=seed), RAVL(cfg, device="cuda", seed=seed)


def _cuda_batches(n: int, cfg: RAVLConfig = CFG) -> list[dict[str, Any]]:
    return [{k: v.cuda() for k, v in b.items()} for b in _batches(n, cfg)]


def _assert_learners_close(a: RAVL, b: RAVL, rtol: float) -> None:
    for i, (p, q) in enumerate(zip(_params(a), _params(b), strict=True)):
        assert_close_verbose(p, q, rtol=rtol, atol=rtol * 1e-3, name=f"tensor {i}")
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert a.num_updates == b.num_updates


# Tolerance of captured against eager on CUDA: the same kernels run in the same order on the
# same inputs, so they should agree to the last bit; 1e-6 relative leaves room for a library
# that picks another algorithm under capture. EOR_BACKEND=torch: the Triton critic gradient sums
# tiles with atomic adds and differs run to run (README "CPU and GPU"), which is not under test.
GPU_RTOL = 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("auto_alpha", [True, False])
def test_gpu_captured_updates_equal_eager(
    monkeypatch: pytest.MonkeyPatch, auto_alpha: bool
) -> None:
    monkeypatch.setenv("EOR_BACKEND", "torch")
    cfg = RAVLConfig(obs_dim=5, act_dim=2, hidden_dim=16, num_critics=3, auto_alpha=auto_alpha)
    learner, twin = _cuda_pair(cfg)
    graphed = GraphedUpdate(learner, B, warmup=2)
    assert graphed.capture
    kinds = [{}, {}, {}, {}, {"log": True}, {"check_finite": False}, {}, {}]
    for batch, kw in zip(_cuda_batches(len(kinds), cfg), kinds, strict=True):
        ours, theirs = graphed.update(batch, **kw), twin.update(batch, **kw)
        assert ours.keys() == theirs.keys()
        for k in ours:
            assert ours[k] == pytest.approx(theirs[k], rel=GPU_RTOL, abs=1e-9), k
    assert (graphed.captures, graphed.replays) == (1, 5)
    _assert_learners_close(learner, twin, GPU_RTOL)


@pytest.mark.gpu
def test_gpu_replay_after_a_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_BACKEND", "torch")
    learner, twin = _cuda_pair()
    graphed = GraphedUpdate(learner, B, warmup=1)
    batches = _cuda_batches(10)
    for batch in batches[:4]:
        graphed.update(batch)
        twin.update(batch)
    snapshot = twin.state_dict()  # copies; each load_state_dict below gets its own
    for batch in batches[4:6]:
        graphed.update(batch)
    learner.load_state_dict(copy.deepcopy(snapshot))
    twin.load_state_dict(snapshot)
    for batch in batches[6:]:
        ours, theirs = graphed.update(batch), twin.update(batch)
        for k in ours:
            assert ours[k] == pytest.approx(theirs[k], rel=GPU_RTOL, abs=1e-9), k
    assert graphed.captures == 2
    _assert_learners_close(learner, twin, GPU_RTOL)


@pytest.mark.gpu
def test_gpu_default_backend_runs_captured() -> None:
    """With the default backend (Triton where it loads): the capture works and the losses stay
    close to eager ones (1e-4: the atomic-add tile sums differ run to run)."""
    cfg = RAVLConfig(obs_dim=17, act_dim=6, hidden_dim=64, num_critics=10)
    learner, twin = _cuda_pair(cfg)
    graphed = GraphedUpdate(learner, 64, warmup=2)
    batches = [
        {k: v.cuda() for k, v in _batch(cfg, 64, seed=i, dtype=F32).items()} for i in range(6)
    ]
    for batch in batches:
        ours, theirs = graphed.update(batch), twin.update(batch)
        for k in ours:
            assert ours[k] == pytest.approx(theirs[k], rel=1e-4, abs=1e-6), k
    assert graphed.replays == 4


@pytest.mark.gpu
def test_gpu_trainer_with_cuda_graph_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EOR_BACKEND", "torch")
    cfg = dict(device="cuda", cuda_graph=True, deterministic=False)
    straight = Trainer(small_config(tmp_path / "a", **cfg), components=make_components())
    assert straight.graphed is not None
    straight.train()
    assert straight.graphed.replays > 0
    first = Trainer(small_config(tmp_path / "b", epochs=1, **cfg), components=make_components())
    first.train()
    resumed = Trainer.resume(tmp_path / "b", overrides={"epochs": 2}, components=make_components())
    assert resumed.graphed is not None
    assert resumed.train()["status"] == "completed"
    assert resumed.graphed.captures == 1
    _assert_learners_close(straight.learner, resumed.learner, 1e-5)
