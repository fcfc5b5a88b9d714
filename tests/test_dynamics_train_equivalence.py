"""Several epochs of eor's dynamics training, as it is run, against the reference code's loop.

eor side: `DynamicsTrainer.run_epoch` as `eor train-model` runs it (closed-form training step,
fused Adam, the early-stopping rule's keep-best), in float64. Reference side:
`eor.ref.fit_dynamics_ref`, one nn.Module per member trained by autograd and torch.optim.Adam
with per-layer coupled L2 groups, on the batches the reference code would make
(`eor.ref.reference_epoch_batches`: the E resamples drawn once, re-dealt every epoch, one shared
row order) from the same draws. Same init, normaliser, split and resamples. Per-epoch holdout
MSE, the restored best weights and the shared logvar bounds agree at rounding level.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eor import ref
from eor.dynamics.train import DynamicsConfig, DynamicsTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

E, S, A, H = 3, 4, 2, 16
EPOCHS = 3


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, S)) * np.array([1.0, 2.0, 0.5, 3.0])
    act = rng.uniform(-1, 1, size=(n, A))
    mat = rng.normal(size=(S + A, S)) * 0.3
    next_obs = obs + np.tanh(np.concatenate([obs, act], 1) @ mat) + 0.01 * rng.normal(size=(n, S))
    rew = obs[:, 0] - act[:, 0] ** 2
    return obs, act, rew, next_obs


def _never_done(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=torch.bool)


def _reference_of(tr: DynamicsTrainer) -> ref.DynamicsEnsembleRef:
    m = tr.model
    r = ref.DynamicsEnsembleRef(S, A, num_members=E, num_elites=2, hidden_dim=H).double()
    r.load_stacked([w.detach() for w in m.weights], [b.detach() for b in m.biases])
    with torch.no_grad():
        r.max_logvar.copy_(m.max_logvar)
        r.min_logvar.copy_(m.min_logvar)
    return r


@pytest.mark.parametrize("mode", ["redeal", "fixed"])
def test_epochs_match_the_reference_loop(mode: str) -> None:
    cfg = DynamicsConfig(
        num_models=E,
        num_elites=2,
        hidden_dim=H,
        epochs=EPOCHS,
        min_epochs=0,
        batch_size=64,  # 480 training rows: 7 full batches and a partial one per epoch
        model_lr=3e-3,
        bootstrap=mode,
        dtype="float64",
    )
    tr = DynamicsTrainer(cfg, *_data(), termination_fn=_never_done)
    # the trainer as `eor train-model` runs it on the CPU
    assert tr.closed_form is not None and tr.optimizer.defaults["fused"]
    assert tr.model.weights[0].dtype == torch.float64 and tr.train_x.dtype == torch.float64
    r = _reference_of(tr)
    ref_start = r.holdout_mse(tr.holdout_x, tr.holdout_y).tolist()
    gen = torch.Generator()
    gen.set_state(tr.shuffle_gen.get_state())  # the same draws: deal, row order

    start = tr.start()
    eor_history = [tr.run_epoch()["holdout_mse"] for _ in range(EPOCHS)]
    assert tr.done and tr.stop_reason == "max epochs"
    eor_final = tr.finish()

    ref_history: list[list[float]] = []
    ref_final, _ = ref.fit_dynamics_ref(
        r,
        tr.train_x,
        tr.train_y,
        tr.holdout_x,
        tr.holdout_y,
        tr.bootstrap,
        epochs=EPOCHS,
        batch_size=64,
        lr=3e-3,
        generator=gen,
        bootstrap_mode=mode,
        history=ref_history,
    )

    np.testing.assert_allclose(start["holdout_mse"], ref_start, rtol=1e-12, atol=0)
    np.testing.assert_allclose(eor_history, ref_history, rtol=1e-10, atol=0)
    assert np.mean(eor_history[-1]) < 0.95 * np.mean(start["holdout_mse"])  # it learned
    np.testing.assert_allclose(eor_final, ref_final, rtol=1e-10, atol=0)
    m = tr.model
    for e, member in enumerate(r.member_modules()):
        for i, layer in enumerate(member.layers()):
            torch.testing.assert_close(m.weights[i][e], layer.weight.T, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(m.biases[i][e], layer.bias, rtol=1e-9, atol=1e-12)
        head_w = torch.cat([member.mean_head.weight.T, member.logvar_head.weight.T], dim=1)
        head_b = torch.cat([member.mean_head.bias, member.logvar_head.bias])
        torch.testing.assert_close(m.weights[-1][e], head_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(m.biases[-1][e], head_b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(m.max_logvar, r.max_logvar, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(m.min_logvar, r.min_logvar, rtol=1e-9, atol=1e-12)
