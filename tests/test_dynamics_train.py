"""docs/algorithm.md §2 training: the early-stopping rule, split, bootstrap, one epoch vs the reference, elites."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from eor import ref
from eor.dynamics.train import (
    DynamicsConfig,
    DynamicsTrainer,
    EarlyStopping,
    bootstrap_indices,
    split_indices,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- stopping rule


def _run(stopper: EarlyStopping, seq: list[list[float]]) -> list:
    return [stopper.update(epoch, losses) for epoch, losses in enumerate(seq, start=1)]


def test_improvement_needs_more_than_one_percent_per_member() -> None:
    s = EarlyStopping(3, min_epochs=100, max_epochs=1000)
    s.start([1.0, 2.0, 4.0])
    d = s.update(1, [0.995, 1.97, 4.5])  # 0.5 % (no), 1.5 % (yes), worse (no)
    assert d.improved == [1] and not d.stop and not d.lower_lr
    assert s.best == [1.0, 1.97, 4.0] and s.best_epoch == [0, 1, 0]
    d = s.update(2, [0.989, 1.96, 3.0])  # 1.1 % (yes); 1.97 -> 1.96 is 0.5 % (no); 25 % (yes)
    assert d.improved == [0, 2]
    assert s.best == [0.989, 1.97, 3.0] and s.best_epoch == [2, 1, 2]
    # exactly 1 % is not "more than 1 %"
    d = s.update(3, [0.989 * 0.99, 1.97, 3.0])
    assert d.improved == [] or abs((0.989 - 0.989 * 0.99) / 0.989 - 0.01) > 1e-15


def test_plateau_before_min_epochs_lowers_lr_once_then_stops_at_min_epochs() -> None:
    s = EarlyStopping(2, min_epochs=12, max_epochs=100, patience=5)
    s.start([1.0, 1.0])
    seq = [[0.5, 1.0]] + [[0.6, 1.0]] * 20  # improves at epoch 1, then never again
    decisions = _run(s, seq)
    lowered = [i + 1 for i, d in enumerate(decisions) if d.lower_lr]
    stopped = [i + 1 for i, d in enumerate(decisions) if d.stop]
    assert lowered == [6]  # epochs 2..6 without improvement: the 5-epoch window is full at 6
    # a fresh window after the drop is full at 11; the first epoch past min_epochs is 13
    assert stopped[0] == 13 and decisions[12].reason == "no improvement"
    assert s.best == [0.5, 1.0] and s.best_epoch == [1, 0]


def _reference_stops(improved: list[bool], min_epochs: int, epochs: int) -> tuple[int, list[int]]:
    """The reference's loop control (train_dynamics_model.train), on a given sequence of
    "improved any member" flags: (epochs run, epochs after which the lr was lowered)."""
    val_improve: deque[bool] = deque(maxlen=6)
    val_improve.append(True)  # the check before training improves on sys.maxsize
    lr_lower, lowered = False, []
    for i in range(epochs):
        val_improve.append(improved[i])
        if len(val_improve) > 5 and not any(list(val_improve)[1:]):
            if i >= min_epochs:
                return i + 1, lowered
            elif not lr_lower:
                lr_lower = True
                lowered.append(i + 1)
                val_improve = deque(maxlen=6)
                val_improve.append(True)
    return epochs, lowered


@pytest.mark.parametrize("seed", range(40))
def test_stopping_rule_matches_the_reference_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    min_epochs, epochs = int(rng.integers(0, 25)), int(rng.integers(1, 60))
    improved = list(rng.random(epochs) < rng.uniform(0.05, 0.5))
    s = EarlyStopping(1, min_epochs=min_epochs, max_epochs=epochs, patience=5)
    s.start([1.0])
    loss, ran, lowered = 1.0, epochs, []
    for epoch in range(1, epochs + 1):
        loss *= 0.5 if improved[epoch - 1] else 1.0
        d = s.update(epoch, [loss])
        assert bool(d.improved) == improved[epoch - 1]
        if d.lower_lr:
            lowered.append(epoch)
        if d.stop:
            ran = epoch
            break
    assert (ran, lowered) == _reference_stops(improved, min_epochs, epochs)


def test_improvement_resets_the_window() -> None:
    s = EarlyStopping(1, min_epochs=0, max_epochs=100, patience=5)
    s.start([1.0])
    seq = [[1.0]] * 4 + [[0.5]] + [[0.5]] * 4 + [[0.5]]
    decisions = _run(s, seq)
    assert [d.stop for d in decisions] == [False] * 9 + [True]
    assert decisions[4].improved == [0]


def test_stop_after_min_epochs_without_lr_drop_when_plateau_is_late() -> None:
    s = EarlyStopping(1, min_epochs=3, max_epochs=100, patience=5)
    s.start([1.0])
    decisions = _run(s, [[1.0]] * 5)
    assert not any(d.lower_lr for d in decisions)  # already past min_epochs: stop, no drop
    assert decisions[-1].stop and decisions[-1].reason == "no improvement"
    assert not any(d.stop for d in decisions[:-1])


def test_hard_cap_and_no_second_lr_drop() -> None:
    s = EarlyStopping(1, min_epochs=50, max_epochs=20, patience=5)
    s.start([1.0])
    decisions = _run(s, [[1.0]] * 20)
    assert sum(d.lower_lr for d in decisions) == 1
    assert [d.stop for d in decisions] == [False] * 19 + [True]
    assert decisions[-1].reason == "max epochs"


def test_stopping_state_roundtrip_and_members_improving() -> None:
    s = EarlyStopping(3, min_epochs=10, max_epochs=50)
    s.start([1.0, 1.0, 1.0])
    _run(s, [[0.5, 1.0, 1.0], [0.5, 0.5, 1.0]])
    assert s.members_improving() == 2 and s.last_improvement() == 2
    t = EarlyStopping(3, min_epochs=10, max_epochs=50)
    t.load_state_dict(s.state_dict())
    for epoch in range(3, 9):
        assert s.update(epoch, [0.5, 0.5, 1.0]) == t.update(epoch, [0.5, 0.5, 1.0])
    assert s.members_improving() == 0


def test_stopping_bad_input() -> None:
    s = EarlyStopping(3, min_epochs=1, max_epochs=2)
    with pytest.raises(RuntimeError, match="before start"):
        s.update(1, [1, 2, 3])
    s.start([1, 2, 3])
    with pytest.raises(ValueError, match="expected 3 losses"):
        s.update(1, [1, 2])


# ----------------------------------------------------------------------------- data


def test_split_is_disjoint_seeded_and_twenty_percent() -> None:
    train, hold = split_indices(1000, 0.2, seed=3)
    assert len(hold) == 200 and len(train) == 800
    assert sorted(torch.cat([train, hold]).tolist()) == list(range(1000))
    train2, hold2 = split_indices(1000, 0.2, seed=3)
    assert torch.equal(hold, hold2) and torch.equal(train, train2)
    _, hold3 = split_indices(1000, 0.2, seed=4)
    assert not torch.equal(hold, hold3)
    with pytest.raises(ValueError, match="too few"):
        split_indices(3, 0.2, seed=0)


def test_bootstrap_is_per_member_with_replacement() -> None:
    boot = bootstrap_indices(500, 7, seed=0)
    assert boot.shape == (7, 500) and int(boot.min()) >= 0 and int(boot.max()) < 500
    for e in range(7):
        unique = boot[e].unique().numel()
        assert 250 < unique < 400  # with replacement: about 1 − 1/e ≈ 63 % distinct rows
    assert not torch.equal(boot[0], boot[1])
    assert torch.equal(boot, bootstrap_indices(500, 7, seed=0))


def _synthetic(n: int = 600, s: int = 4, a: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, s)).astype(np.float32) * np.array([1, 2, 0.5, 3], np.float32)[:s]
    act = rng.uniform(-1, 1, size=(n, a)).astype(np.float32)
    mat = rng.normal(size=(s + a, s)).astype(np.float32) * 0.3
    next_obs = (
        obs
        + np.tanh(np.concatenate([obs, act], 1) @ mat)
        + 0.01 * rng.normal(size=(n, s)).astype(np.float32)
    )
    rew = (obs[:, 0] - act[:, 0] ** 2).astype(np.float32)
    return obs, act, rew, next_obs


def _never_done(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=torch.bool)


def _trainer(**overrides) -> DynamicsTrainer:
    cfg = DynamicsConfig(
        num_models=3, num_elites=2, hidden_dim=16, epochs=4, min_epochs=0, batch_size=64
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return DynamicsTrainer(cfg, *_synthetic(), termination_fn=_never_done)


def test_trainer_holdout_is_never_trained_on_and_normaliser_sees_training_rows() -> None:
    obs, act, rew, next_obs = _synthetic()
    tr = _trainer()
    train_idx, hold_idx = split_indices(600, 0.2, seed=0)
    inputs = torch.from_numpy(np.concatenate([obs, act], 1))
    assert tr.n_holdout == 120 and tr.n_train == 480
    torch.testing.assert_close(tr.model.normalizer.mean, inputs[train_idx].double().mean(0).float())
    torch.testing.assert_close(tr.model.normalizer(inputs[hold_idx]), tr.holdout_x)
    torch.testing.assert_close(tr.model.normalizer(inputs[train_idx]), tr.train_x)
    targets_hold = torch.from_numpy(np.concatenate([next_obs - obs, rew[:, None]], 1))[hold_idx]
    torch.testing.assert_close(tr.holdout_y, targets_hold)  # targets are not normalised
    # the bootstrap only indexes training rows (train_x has no holdout row in it)
    assert int(tr.bootstrap.max()) < tr.n_train


@pytest.mark.parametrize("mode", ["redeal", "fixed"])
def test_one_epoch_matches_per_member_reference(mode: str) -> None:
    """A trainer epoch = the reference's loop over 3 nn.Module members, same batches."""
    tr = _trainer(bootstrap=mode)
    tr.model.double()
    tr.train_x, tr.train_y = tr.train_x.double(), tr.train_y.double()
    tr.optimizer = torch.optim.Adam(
        tr.model.param_groups(1.0), lr=1e-3, fused=True
    )  # as the trainer builds it
    r = ref.DynamicsEnsembleRef(4, 2, num_members=3, num_elites=2, hidden_dim=16).double()
    r.load_stacked([w.detach() for w in tr.model.weights], [b.detach() for b in tr.model.biases])
    opt_r = r.make_optimizer(1e-3, 1.0)
    # the same draws as the trainer will make, turned into batches the reference code's way
    gen = torch.Generator()
    gen.set_state(tr.shuffle_gen.get_state())
    data_x, data_y = tr.train_x[tr.bootstrap], tr.train_y[tr.bootstrap]
    batches = ref.reference_epoch_batches(data_x, data_y, 64, gen, mode)
    loss_r = r.train_batches(batches, opt_r)
    loss = tr.train_epoch()
    assert loss == pytest.approx(loss_r, rel=1e-9)
    for e in range(3):
        for i, layer in enumerate(r.members[e].hidden):
            torch.testing.assert_close(
                tr.model.weights[i][e].detach(), layer.weight.T.detach(), rtol=1e-9, atol=1e-11
            )
        torch.testing.assert_close(
            tr.model.biases[-1][e, :5].detach(),
            r.members[e].mean_head.bias.detach(),
            rtol=1e-9,
            atol=1e-11,
        )
    torch.testing.assert_close(
        tr.model.max_logvar.detach(), r.max_logvar.detach(), rtol=1e-9, atol=1e-11
    )


def test_redeal_deals_each_resample_to_one_member_every_epoch() -> None:
    tr = _trainer(num_models=5, num_elites=2)
    boot_sorted = tr.bootstrap.sort(dim=1).values
    deals = []
    for _ in range(12):
        order = tr.epoch_order().sort(dim=1).values
        # member i's rows are one whole resample (as a multiset), each resample dealt once
        deal = [
            next(k for k in range(5) if torch.equal(order[i], boot_sorted[k])) for i in range(5)
        ]
        assert sorted(deal) == list(range(5))
        deals.append(tuple(deal))
    assert len(set(deals)) > 1  # the deal changes from epoch to epoch
    fixed = _trainer(num_models=5, num_elites=2, bootstrap="fixed")
    for _ in range(3):
        assert torch.equal(fixed.epoch_order().sort(dim=1).values, boot_sorted)


def test_redeal_shares_the_row_order_and_fixed_does_not() -> None:
    tr = _trainer(num_models=4, num_elites=2)
    tr.bootstrap = torch.arange(tr.n_train).repeat(4, 1)  # identity resamples expose the order
    order = tr.epoch_order()
    assert all(torch.equal(order[i], order[0]) for i in range(4))
    assert not torch.equal(order[0], torch.arange(tr.n_train))  # shuffled
    tf = _trainer(num_models=4, num_elites=2, bootstrap="fixed")
    tf.bootstrap = torch.arange(tf.n_train).repeat(4, 1)
    order = tf.epoch_order()
    assert not torch.equal(order[0], order[1])


@pytest.mark.parametrize("mode, low, high", [("redeal", 0.97, 1.0), ("fixed", 0.55, 0.72)])
def test_redeal_shows_each_member_about_all_rows(mode: str, low: float, high: float) -> None:
    """Over 12 epochs a re-dealt member sees ~all training rows; a fixed one ~63 % (1 − 1/e)."""
    tr = _trainer(num_models=5, num_elites=2, bootstrap=mode)
    seen = [set() for _ in range(5)]
    for _ in range(12):
        order = tr.epoch_order()
        for i in range(5):
            seen[i].update(order[i].tolist())
    for s in seen:
        assert low <= len(s) / tr.n_train <= high


@pytest.mark.parametrize("mode", ["redeal", "fixed"])
def test_resumed_trainer_continues_exactly(mode: str) -> None:
    """state_dict() after 2 epochs, loaded into a fresh trainer: epochs 3-4 are the same bits."""
    a = _trainer(bootstrap=mode)
    a.start()
    a.run_epoch()
    a.run_epoch()
    state = a.state_dict()
    b = _trainer(bootstrap=mode)
    b.load_state_dict(state)
    for _ in range(2):
        ra, rb = a.run_epoch(), b.run_epoch()
        assert ra["train_loss"] == rb["train_loss"] and ra["holdout_mse"] == rb["holdout_mse"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    # without the shuffle stream's state the run would differ: the check can fail
    c = _trainer(bootstrap=mode)
    c.load_state_dict({**state, "shuffle_gen": torch.Generator().manual_seed(1).get_state()})
    c.run_epoch()
    d = _trainer(bootstrap=mode)
    d.load_state_dict(state)
    d.run_epoch()
    assert not torch.equal(c.model.weights[0], d.model.weights[0])


def test_saved_configs_without_bootstrap_were_fixed() -> None:
    assert DynamicsConfig().bootstrap == "redeal"
    old = DynamicsConfig().to_dict()
    del old["bootstrap"]
    assert DynamicsConfig.from_saved(old).bootstrap == "fixed"
    assert DynamicsConfig.from_saved({**old, "bootstrap": "redeal"}).bootstrap == "redeal"


def test_fit_restores_best_weights_and_picks_elites() -> None:
    tr = _trainer(epochs=6)
    start = tr.start()
    history = [tr.run_epoch() for _ in range(6)]
    assert tr.done and tr.stop_reason == "max epochs"
    assert np.mean(history[-1]["holdout_mse"]) < np.mean(start["holdout_mse"])  # it learns
    final = tr.finish()
    # the restored weights are each member's best: their holdout MSE is the recorded best
    np.testing.assert_allclose(final, tr.stopper.best, rtol=1e-6)
    best_by_hand = [
        min([start["holdout_mse"][i]] + [h["holdout_mse"][i] for h in history]) for i in range(3)
    ]
    assert all(f <= b * 1.0000001 for f, b in zip(final, best_by_hand, strict=True))
    expected_elites = sorted(np.argsort(final)[:2].tolist())
    assert tr.model.elites.tolist() == expected_elites


def test_lr_drop_and_stop_through_the_trainer() -> None:
    # An impossible improvement threshold: no member ever improves.
    tr = _trainer(epochs=20, min_epochs=7, improvement_threshold=10.0)
    tr.start()
    lrs = []
    while not tr.done:
        lrs.append(tr.run_epoch()["lr"])
    # the drop after epoch 5, then a fresh 5-epoch window: the stop after epoch 10
    assert lrs == [1e-3] * 4 + [pytest.approx(3e-4)] * 6
    assert tr.epoch == 10 and tr.stop_reason == "no improvement"
    # no member improved: finishing restores the initial weights
    init = _trainer()
    for w, w0 in zip(tr.best_params, [*init.model.weights, *init.model.biases], strict=True):
        torch.testing.assert_close(w, w0.detach())


def test_trainer_is_deterministic() -> None:
    a, b = _trainer(epochs=2), _trainer(epochs=2)
    a.fit()
    b.fit()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("train_val_ratio", 1.0, r"train_val_ratio must lie in \(0, 1\)"),
        ("train_val_ratio", 0.0, r"train_val_ratio must lie in \(0, 1\)"),
        ("num_elites", 9, "num_elites must be <= num_models"),
        ("epochs", 0, "epochs must be a positive integer"),
        ("model_lr", -1.0, "model_lr must be"),
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("bootstrap", "shuffle", r"bootstrap must be one of \('redeal', 'fixed'\), got 'shuffle'"),
        ("dtype", "float16", "dtype must be one of"),
        ("log_interval", -1, "log_interval must be an integer >= 0"),
        ("train_memory", 0, "train_memory must be a positive integer"),
        ("fix_std", True, "fix_std True is not implemented in eor.*never uses it"),
        ("model_free", True, "model_free True is not implemented"),
        ("var_max", True, "var_max True is not implemented"),
        ("logvar_head", False, "logvar_head False is not implemented.*only True"),
    ],
)
def test_bad_config(field: str, value: object, match: str) -> None:
    cfg = DynamicsConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def test_bad_arrays() -> None:
    obs, act, rew, next_obs = _synthetic()
    cfg = DynamicsConfig(num_models=2, num_elites=1, hidden_dim=8)
    with pytest.raises(ValueError, match="actions must have shape"):
        DynamicsTrainer(cfg, obs, act[:-1], rew, next_obs)
    obs = obs.copy()
    obs[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values in 1 rows"):
        DynamicsTrainer(cfg, obs, act, rew, next_obs)


def test_batches_are_each_members_rows() -> None:
    tr = _trainer()
    idx = torch.randint(0, tr.n_train, (3, 64))
    x, y = tr._batch(idx)
    assert torch.equal(x, tr.train_x[idx]) and torch.equal(y, tr.train_y[idx])
    x2, _ = tr._batch(idx.flip(1))
    assert torch.equal(x2, tr.train_x[idx.flip(1)])
    assert torch.equal(x, tr.train_x[idx])  # the next batch leaves this one as it was
    short = idx[:, :5]  # the epoch's last, partial batch
    xs, ys = tr._batch(short)
    assert xs.shape == (3, 5, tr.train_x.shape[1])
    assert torch.equal(xs, tr.train_x[short]) and torch.equal(ys, tr.train_y[short])


def test_memory_caps_are_the_references_buffer_sizes() -> None:
    obs, act, rew, next_obs = _synthetic()  # 600 rows: 480 train, 120 holdout
    cfg = DynamicsConfig(num_models=2, num_elites=1, hidden_dim=8, train_memory=480, val_memory=120)
    DynamicsTrainer(cfg, obs, act, rew, next_obs)  # exactly full is fine
    cfg.train_memory = 479
    with pytest.raises(ValueError, match="train_memory is 479, but the training split .* 480 rows"):
        DynamicsTrainer(cfg, obs, act, rew, next_obs)
    cfg.train_memory, cfg.val_memory = 480, 100
    with pytest.raises(ValueError, match="val_memory is 100, but the holdout .* 120 rows"):
        DynamicsTrainer(cfg, obs, act, rew, next_obs)


class _Crash(Exception):
    pass


@pytest.mark.parametrize("mode", ["redeal", "fixed"])
def test_directory_resume_is_exact_and_old_directories_resume_as_fixed(
    mode: str, tmp_path: Path
) -> None:
    """A crashed run resumed from its directory ends bit for bit as the uninterrupted one; a
    directory written before the bootstrap option (no "bootstrap" and the other new fields in
    its config.json) resumes with "fixed", the only procedure there was."""
    from eor.data import collect, load_dataset
    from eor.dynamics import load, train_to_dir

    ds = load_dataset(
        collect("halfcheetah-random-v2", steps=400, seed=1, out=tmp_path / "d.hdf5", progress=False)
    )
    cfg = {"env_name": "halfcheetah-random-v2", "num_models": 3, "num_elites": 2,
           "hidden_dim": 8, "epochs": 4, "min_epochs": 0, "batch_size": 64}  # fmt: skip

    def crash(trainer: DynamicsTrainer, row: dict) -> None:
        if trainer.epoch == 2:
            raise _Crash

    straight = tmp_path / "straight"
    train_to_dir(DynamicsConfig(**cfg, bootstrap=mode), ds, straight, checkpoint_interval=0)
    run = tmp_path / "run"
    with pytest.raises(_Crash):
        train_to_dir(
            DynamicsConfig(**cfg, bootstrap=mode), ds, run, checkpoint_interval=0, on_epoch=crash
        )
    saved = json.loads((run / "config.json").read_text())
    assert saved["bootstrap"] == mode
    if mode == "fixed":  # make it look like a directory written before the option existed
        new = ("bootstrap", "dtype", "filename", "log_interval", "train_memory", "val_memory",
               "fix_std", "model_free", "var_max", "logvar_head")  # fmt: skip
        (run / "config.json").write_text(
            json.dumps({k: v for k, v in saved.items() if k not in new})
        )
    trainer = train_to_dir(DynamicsConfig(**cfg), ds, run, resume=True, checkpoint_interval=0)
    assert trainer.config.bootstrap == mode
    for a, b in zip(
        load(run).state_dict().values(), load(straight).state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
