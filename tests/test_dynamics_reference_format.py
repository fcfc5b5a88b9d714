"""Dynamics models saved by the reference code: reading, conversion, elites, and safety.

The reference side is re-implemented here from its net.py and ensemble.py (forward pass,
filters, `get_validation_loss`, `select_elites`), on the very modules whose weights
tests/reference_save.py saved; eor is never called for the expected values.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import eor.dynamics
from eor.cli import main
from eor.dynamics.reference_format import (
    ReferenceFormatError,
    UnsafePickleError,
    convert_dir,
    is_reference_dir,
)
from tests.reference_save import (
    RefNet,
    SavedReference,
    random_rows,
    save_reference_model,
    write_pickle,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SCALES = [3.0, 1.5, 0.2]  # member 0 worst, member 2 best: the elites are {1, 2}, not {0, 1}


@pytest.fixture
def saved(tmp_path: Path) -> SavedReference:
    return save_reference_model(tmp_path, member_scales=SCALES)


# ----------------------------------------------------------------------------- the reference, re-implemented


def ref_forward(net: RefNet, x: torch.Tensor, max_lv: torch.Tensor, min_lv: torch.Tensor) -> Any:
    """BayesianNeuralNetwork.forward: four SiLU layers, the two heads, the softplus bounding."""
    b = net.net
    h = x
    for fc in (b.fc1, b.fc2, b.fc3, b.fc4):
        h = F.silu(fc(h))
    delta, logvar = b.delta(h), b.logvar(h)
    logvar = max_lv - F.softplus(max_lv - logvar)
    logvar = min_lv + F.softplus(logvar - min_lv)
    return torch.cat((delta, logvar), dim=1)


def ref_mean_logvar(s: SavedReference, i: int, state: torch.Tensor, action: torch.Tensor) -> Any:
    """Net.get_mean_logvar: filter_torch on each part, forward, add the state to the Δ means."""
    sf, af = s.state_filter, s.action_filter
    x = torch.cat(
        [
            ((state - sf.torch_mean.to(state)) / sf.torch_stdev.to(state)).clamp(-10.0, 10.0),
            ((action - af.torch_mean.to(state)) / af.torch_stdev.to(state)).clamp(-10.0, 10.0),
        ],
        dim=1,
    )
    net = s.nets[i].to(state.dtype)
    out = ref_forward(net, x, s.max_logvar.detach().to(state), s.min_logvar.detach().to(state))
    out[:, : state.shape[1]] += state
    return out.chunk(2, dim=1)


def ref_validation_losses(s: SavedReference) -> np.ndarray:
    """Net.get_validation_loss on the validation buffer, float32 batches of 256 like the
    reference's loader: MSE of the means against [next_state - state, reward]."""
    v, sf, af = s.val, s.state_filter, s.action_filter
    filt = lambda x, f: np.clip((x - f.mean) / f.stdev, -f.clip, f.clip)  # noqa: E731
    x = torch.Tensor(np.concatenate([filt(v["observations"], sf), filt(v["actions"], af)], 1))
    y = torch.cat(
        [
            torch.Tensor(v["next_observations"] - v["observations"]),
            torch.Tensor(v["rewards"][:, None]),
        ],
        dim=1,
    )
    losses = []
    with torch.no_grad():
        for net in s.nets:
            net = net.float()
            preds = torch.vstack(
                [
                    ref_forward(net, x[i : i + 256], s.max_logvar, s.min_logvar)
                    for i in range(0, len(x), 256)
                ]
            )
            mu = preds.chunk(2, dim=1)[0]
            losses.append(((y - mu) ** 2).mean().item())
    return np.array(losses)


def random_inputs(s: SavedReference, n: int = 37, dtype: torch.dtype = torch.float32) -> Any:
    g = torch.Generator().manual_seed(5)
    obs = torch.randn(n, 4, generator=g, dtype=dtype) * 3
    obs[0, 1] = 1e4  # far outside: the ±10 clip matters
    act = torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1
    act[1, 0] = -1e4
    return obs, act


# ----------------------------------------------------------------------------- conversion


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_predictions_equal_the_reference_forward(saved: SavedReference, dtype: torch.dtype) -> None:
    model = eor.dynamics.load(saved.path)
    assert (model.num_members, model.num_elites, model.hidden_dim, model.num_hidden) == (3, 2, 8, 4)
    model = model.to(dtype)
    obs, act = random_inputs(saved, dtype=dtype)
    mean, logvar = model.predict(obs, act)  # [E, B, D]: Δobs and reward
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    with torch.no_grad():
        for i in range(3):
            ref_mean, ref_logvar = ref_mean_logvar(saved, i, obs, act)
            torch.testing.assert_close(mean[i, :, :4] + obs, ref_mean[:, :4], **tol)
            torch.testing.assert_close(mean[i, :, 4], ref_mean[:, 4], **tol)  # reward column
            torch.testing.assert_close(logvar[i], ref_logvar, **tol)


def test_step_is_the_reference_sample(saved: SavedReference) -> None:
    """eor's step = the reference's transition: obs + Δ mean + std·ε, reward column obs_dim."""
    model = eor.dynamics.load(saved.path)
    model._termination_fn = lambda x: torch.zeros(x.shape[0], dtype=torch.bool)  # 4-dim toy obs
    obs, act = random_inputs(saved)
    g = torch.Generator().manual_seed(3)
    next_obs, reward, done = model.step(obs, act, g)
    g = torch.Generator().manual_seed(3)  # replay eor's draws: elite slots, then noise
    slots = torch.randint(2, (37,), generator=g)
    noise = torch.randn(37, 5, generator=g)
    members = model.elites[slots]
    with torch.no_grad():
        for b in range(37):
            m, lv = ref_mean_logvar(saved, int(members[b]), obs[b : b + 1], act[b : b + 1])
            sample = m[0] + noise[b] * lv[0].exp().sqrt()
            torch.testing.assert_close(next_obs[b], sample[:4], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(reward[b], sample[4], rtol=1e-5, atol=1e-5)
    assert done.shape == (37,)


def test_elites_are_what_the_reference_loader_selects(saved: SavedReference) -> None:
    model = eor.dynamics.load(saved.path)
    losses = ref_validation_losses(saved)
    ranking = losses.argsort()
    assert sorted(ranking[:2].tolist()) == [1, 2]  # the scales made it a non-trivial choice
    assert model.elites.tolist() == sorted(ranking[:2].tolist())
    info = model.meta["model_info"]
    assert info["elite_ranking"] == ranking.tolist()
    np.testing.assert_allclose(info["validation_mse"], losses, rtol=1e-5)
    assert info["validation_rows"] == 40 and info["elites_from"] == "validation buffer"


def test_elites_follow_the_losses_not_the_member_order(tmp_path: Path) -> None:
    saved = save_reference_model(tmp_path, member_scales=[0.2, 3.0, 0.5])
    model = eor.dynamics.load(saved.path)
    assert ref_validation_losses(saved).argsort()[:2].tolist() == [0, 2]
    assert model.elites.tolist() == [0, 2]


def test_normalizer_is_the_two_filters(saved: SavedReference) -> None:
    model = eor.dynamics.load(saved.path)
    sf, af = saved.state_filter, saved.action_filter
    assert torch.equal(model.normalizer.mean, torch.cat([sf.torch_mean, af.torch_mean]))
    assert torch.equal(model.normalizer.std, torch.cat([sf.torch_stdev, af.torch_stdev]))
    assert torch.equal(model.max_logvar, saved.max_logvar.detach())
    assert torch.equal(model.min_logvar, saved.min_logvar.detach())


def test_load_logs_one_line_and_records_model_info(
    saved: SavedReference, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="eor.dynamics.reference_format"):
        model = eor.dynamics.load(saved.path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "reference-format" in lines[0] and "data.pkl" in lines[0]
    info = model.meta["model_info"]
    assert info["format"] == "reference" and info["source_dir"] == str(saved.path.resolve())
    assert info["pickle"] == "data.pkl" and info["elites"] == [1, 2]
    assert info["dataset"] == "halfcheetah-random-v2"
    assert len(info["weights_sha256"]) == 64 and len(info["pickle_sha256"]) == 64
    json.dumps(info)  # recorded in config.json


@pytest.mark.gpu
def test_load_on_cuda_matches_cpu(saved: SavedReference) -> None:
    cpu, gpu = eor.dynamics.load(saved.path), eor.dynamics.load(saved.path, device="cuda")
    assert gpu.device.type == "cuda" and gpu.elites.tolist() == cpu.elites.tolist() == [1, 2]
    np.testing.assert_allclose(
        gpu.meta["model_info"]["validation_mse"],
        cpu.meta["model_info"]["validation_mse"],
        rtol=1e-9,
    )
    obs, act = random_inputs(saved)
    for a, b in zip(gpu.predict(obs.cuda(), act.cuda()), cpu.predict(obs, act), strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5)
    gpu._termination_fn = lambda x: torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    next_obs, reward, done = gpu.step(obs.cuda(), act.cuda())
    assert next_obs.shape == (37, 4) and reward.shape == (37,) and done.device.type == "cuda"


def test_env_mismatch_is_refused(saved: SavedReference) -> None:
    with pytest.raises(ReferenceFormatError, match="for env 'halfcheetah'.*'hopper' was asked"):
        eor.dynamics.load(saved.path, env="hopper")


# ----------------------------------------------------------------------------- file names and pickle forms


def test_config_pkl_is_preferred_data_pkl_accepted(saved: SavedReference) -> None:
    (saved.path / "config.pkl").write_bytes((saved.path / "data.pkl").read_bytes())
    (saved.path / "data.pkl").write_bytes(b"not read")
    assert eor.dynamics.load(saved.path).meta["model_info"]["pickle"] == "config.pkl"
    (saved.path / "data.pkl").unlink()
    assert eor.dynamics.load(saved.path).elites.tolist() == [1, 2]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_reads(tmp_path: Path, protocol: int) -> None:
    saved = save_reference_model(tmp_path, member_scales=SCALES, protocol=protocol)
    assert eor.dynamics.load(saved.path).elites.tolist() == [1, 2]


class _Numpy1Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes numpy's globals under numpy 1's module paths (numpy.core.*)."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            self.save(module.replace("numpy._core", "numpy.core", 1))
            self.save(name or obj.__name__)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def test_numpy1_module_paths_read(saved: SavedReference) -> None:
    from tests.reference_save import reference_modules

    with reference_modules(), open(saved.path / "data.pkl", "wb") as f:
        _Numpy1Pickler(f, protocol=4).dump(saved.data)
    raw = (saved.path / "data.pkl").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw
    assert eor.dynamics.load(saved.path).elites.tolist() == [1, 2]


# ----------------------------------------------------------------------------- bad input


class _Evil:
    def __init__(self, call: Any, arg: str) -> None:
        self.call, self.arg = call, arg

    def __reduce__(self) -> Any:
        return (self.call, (self.arg,))


@pytest.mark.parametrize("call", [os.system, eval])
def test_a_disallowed_class_is_refused_and_never_runs(
    saved: SavedReference, tmp_path: Path, call: Any
) -> None:
    marker = tmp_path / "ran"
    code = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    saved.data["params"]["payload"] = _Evil(call, code)
    write_pickle(saved.path / "data.pkl", saved.data)
    name = "posix.system" if call is os.system else "builtins.eval"
    with pytest.raises(UnsafePickleError, match=rf"data\.pkl.*names {name}, which eor does not"):
        eor.dynamics.load(saved.path)
    assert not marker.exists()


def test_the_filters_torch_copies_are_never_parsed(saved: SavedReference) -> None:
    """torch_mean/torch_stdev (on the GPU in a real run) are placeholders: their bytes unread."""
    import torch.storage

    for f in (saved.data["state_filter"], saved.data["action_filter"]):
        f.torch_mean = _Evil(torch.storage._load_from_bytes, b"not a torch file")
    write_pickle(saved.path / "data.pkl", saved.data)
    assert eor.dynamics.load(saved.path).elites.tolist() == [1, 2]


def test_weights_pt_with_objects_is_refused(saved: SavedReference, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save(
        {"model_0_state_dict": _Evil(os.system, f"touch {marker}")}, saved.path / "weights.pt"
    )
    with pytest.raises(ReferenceFormatError, match=r"weights\.pt.*corrupt or not a torch file"):
        eor.dynamics.load(saved.path)
    assert not marker.exists()


def test_missing_weights_names_the_file(saved: SavedReference) -> None:
    (saved.path / "weights.pt").unlink()
    with pytest.raises(ReferenceFormatError, match=r"weights\.pt is missing"):
        eor.dynamics.load(saved.path)


def test_missing_pickle_names_both_names(saved: SavedReference) -> None:
    (saved.path / "data.pkl").unlink()
    with pytest.raises(ReferenceFormatError, match=r"no data\.pkl or config\.pkl"):
        eor.dynamics.load(saved.path)


def test_truncated_pickle_names_the_file(saved: SavedReference) -> None:
    raw = (saved.path / "data.pkl").read_bytes()
    (saved.path / "data.pkl").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReferenceFormatError, match=r"data\.pkl' is corrupt or truncated"):
        eor.dynamics.load(saved.path)


def test_truncated_weights_names_the_file(saved: SavedReference) -> None:
    raw = (saved.path / "weights.pt").read_bytes()
    (saved.path / "weights.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReferenceFormatError, match=r"weights\.pt' is corrupt"):
        eor.dynamics.load(saved.path)


def test_a_clip_other_than_10_is_refused(saved: SavedReference) -> None:
    saved.data["action_filter"].clip = 5.0
    write_pickle(saved.path / "data.pkl", saved.data)
    with pytest.raises(
        ReferenceFormatError, match="action_filter clips at 5.0.*cannot be converted"
    ):
        eor.dynamics.load(saved.path)


def test_member_count_must_match_params(saved: SavedReference) -> None:
    saved.data["params"]["num_models"] = 4
    write_pickle(saved.path / "data.pkl", saved.data)
    with pytest.raises(ReferenceFormatError, match="num_models=4 needs"):
        eor.dynamics.load(saved.path)


def test_no_validation_buffer_needs_explicit_elites(saved: SavedReference, tmp_path: Path) -> None:
    saved.data["valid_buffer"]._size = 0
    write_pickle(saved.path / "data.pkl", saved.data)
    with pytest.raises(ReferenceFormatError, match=r"no usable validation buffer.*--elites 0,1"):
        eor.dynamics.load(saved.path)
    with pytest.raises(ValueError, match="elites must be 2 distinct member indices in"):
        convert_dir(saved.path, tmp_path / "bad", elites=[0, 0])
    info = convert_dir(saved.path, tmp_path / "out", elites=[2, 0])
    assert info["elites"] == [0, 2] and info["elites_from"] == "given"
    assert eor.dynamics.load(tmp_path / "out").elites.tolist() == [0, 2]


def test_an_eor_dir_is_not_a_reference_dir(saved: SavedReference, tmp_path: Path) -> None:
    assert is_reference_dir(saved.path)
    convert_dir(saved.path, tmp_path / "out")
    assert not is_reference_dir(tmp_path / "out")
    assert not is_reference_dir(tmp_path / "nothing")


# ----------------------------------------------------------------------------- eor convert-model


def test_convert_model_cli(saved: SavedReference, tmp_path: Path) -> None:
    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert-model", str(saved.path), str(out)])
    assert result.exit_code == 0, result.output
    assert "elites [1, 2]" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "meta.json", "metrics.jsonl", "weights-000000.pt",
    ]  # fmt: skip
    meta = eor.dynamics.read_meta(out)
    assert meta["complete"] and meta["elites"] == [1, 2]
    assert meta["dataset"]["reference"]["source_dir"] == str(saved.path.resolve())
    converted, direct = eor.dynamics.load(out), eor.dynamics.load(saved.path)
    obs, act = random_inputs(saved)
    for a, b in zip(converted.predict(obs, act), direct.predict(obs, act), strict=True):
        assert torch.equal(a, b)
    assert converted.elites.tolist() == direct.elites.tolist()
    from eor.agent.trainer import model_identity

    identity = model_identity(out)
    assert identity is not None and identity["elites"] == [1, 2]
    assert identity["converted_from"]["format"] == "reference"
    assert identity["converted_from"]["pickle_sha256"] == direct.meta["model_info"]["pickle_sha256"]

    again = CliRunner().invoke(main, ["convert-model", str(saved.path), str(out)])
    assert (
        again.exit_code == 2 and "OUT" in again.output and "not an empty directory" in again.output
    )


def test_convert_model_cli_errors(saved: SavedReference, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["convert-model", str(tmp_path / "no"), str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    saved.data["params"]["payload"] = _Evil(os.system, "true")
    write_pickle(saved.path / "data.pkl", saved.data)
    evil = runner.invoke(main, ["convert-model", str(saved.path), str(tmp_path / "o")])
    assert evil.exit_code == 2 and "posix.system" in evil.output
    assert not (tmp_path / "o").exists()
    bad = runner.invoke(
        main, ["convert-model", str(saved.path), str(tmp_path / "o"), "--elites", "x"]
    )
    assert bad.exit_code == 2 and "--elites" in bad.output
    convert_dir(save_reference_model(tmp_path / "ok").path, tmp_path / "eor_dir")
    twice = runner.invoke(main, ["convert-model", str(tmp_path / "eor_dir"), str(tmp_path / "o")])
    assert twice.exit_code == 2 and "is not a reference model directory" in twice.output
    help_text = runner.invoke(main, ["convert-model", "--help"]).output
    assert "Example" in help_text and "eor convert-model" in help_text


# ----------------------------------------------------------------------------- train-agent


def test_train_agent_runs_on_a_reference_dir(tmp_path: Path) -> None:
    from eor.data import collect, load_dataset

    data = collect("hopper-random-v2", steps=400, seed=0, out=tmp_path / "h.hdf5", progress=False)
    ds = load_dataset(data, env="hopper")
    rows = {
        "observations": ds.observations, "actions": ds.actions, "rewards": ds.rewards,
        "next_observations": ds.next_observations, "terminals": ds.terminals.astype(np.float32),
    }  # fmt: skip
    saved = save_reference_model(
        tmp_path / "models", env_name="hopper-medium-v2", obs_dim=11, act_dim=3, rows=rows
    )
    run = tmp_path / "run"
    args = [
        "train-agent", "--env_name", "hopper-random-v2", "--dataset", str(data),
        "--load_model_dir", str(saved.path), "--run_dir", str(run), "--epochs", "1",
        "--updates_per_epoch", "4", "--hidden_dim", "16", "--num_critics", "2",
        "--batch_size", "16", "--rollouts_per_epoch", "20", "--steps_k", "2",
        "--eval_episodes", "1", "--eval_max_steps", "3", "--log_every", "2",
        "--device", "cpu", "--quiet",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["format"] == "reference" and model["source_dir"] == str(saved.path.resolve())
    assert model["elites"] == sorted(ref_validation_losses(saved).argsort()[:2].tolist())


def test_random_rows_are_what_the_fixture_pickles(saved: SavedReference) -> None:
    """The fixture's validation rows are the pickled buffer's first _size rows."""
    buf = saved.data["valid_buffer"]
    assert buf._size == len(saved.val["observations"]) == 40
    np.testing.assert_array_equal(buf._states[:40], saved.val["observations"])
    assert random_rows(3, 4, 2, 0)["observations"].dtype == np.float32
