"""The Triton kernels on a real GPU, at real sizes, against float64 references, at the
tolerances of the precision policy (docs/gpu.md, "Numerics"; kernels/launch.py).

Every test is marked `gpu`: it runs wherever CUDA is visible (`benchmarks/gpu_check.sh` runs them
with EOR_BACKEND=triton) and is skipped with a reason elsewhere. Errors are norm-wise,
‖actual − expected‖ / ‖expected‖, against the same float32 parameters evaluated in float64:

- IEEE dots (the default; the critic loss always): ≤ 1e-5;
- TF32 dots (`torch.backends.cuda.matmul.allow_tf32 = True`): ≤ 5e-3 (10-bit mantissa inputs,
  about 5e-4 per product, summed over a few hundred terms).
"""

from __future__ import annotations

import pytest
import torch

from eor import ops, ref
from eor.ops import critic_closed_form

pytestmark = pytest.mark.gpu

TOL = {False: 1e-5, True: 5e-3}


@pytest.fixture(autouse=True)
def _triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@pytest.fixture(params=[False, True], ids=["ieee", "tf32"])
def tf32(request: pytest.FixtureRequest):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32 = before


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double().cpu(), expected.double().cpu()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def _params(e: int, dims: list[int], gen: torch.Generator) -> tuple[list[torch.Tensor], ...]:
    ws = [
        torch.randn(e, i, o, generator=gen) / i**0.5
        for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    bs = [0.1 * torch.randn(e, o, generator=gen) for o in dims[1:]]
    return ws, bs


@pytest.mark.parametrize(
    "e,b,i,o,shared,activation",
    [(10, 256, 256, 256, False, "relu"), (10, 256, 23, 256, True, "relu"),
     (7, 256, 200, 200, False, "silu"), (7, 256, 200, 36, False, "none")],
)  # fmt: skip
def test_ensemble_linear_forward_backward(tf32, e, b, i, o, shared, activation) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, i, generator=gen) if shared else torch.randn(e, b, i, generator=gen)
    (w,), (bias,) = _params(e, [i, o], gen)
    dy = torch.randn(e, b, o, generator=gen)
    leaves = [t.cuda().requires_grad_() for t in (x, w, bias)]
    y = ops.ensemble_linear(*leaves, activation)
    y.backward(dy.cuda())
    leaves64 = [t.detach().double().requires_grad_() for t in (x, w, bias)]
    y64 = ref.ensemble_linear_ref(*leaves64, activation)
    y64.backward(dy.double())
    assert _rel(y, y64) <= TOL[tf32]
    for name, got, want in zip(("dx", "dW", "db"), leaves, leaves64, strict=True):
        assert _rel(got.grad, want.grad) <= TOL[tf32], name


def test_gaussian_rollout_step_at_full_size(tf32) -> None:
    """The dynamics rollout: 50,000 rows gathered over 7 members, 23 -> 200 x 4 -> 2·18."""
    gen = torch.Generator().manual_seed(1)
    ws, bs = _params(7, [23, 200, 200, 200, 200, 36], gen)
    x = torch.randn(50_000, 23, generator=gen)
    members = torch.randint(0, 7, (50_000,), generator=gen)
    max_lv, min_lv = torch.full((18,), 0.5), torch.full((18,), -10.0)
    mean, lv = ops.gaussian_ensemble_forward(
        x.cuda(), [w.cuda() for w in ws], [b.cuda() for b in bs], max_lv.cuda(), min_lv.cuda(),
        members=members.cuda(),
    )  # fmt: skip
    emean, elv = ref.gaussian_ensemble_forward_ref(
        x.double(), [w.double() for w in ws], [b.double() for b in bs], max_lv.double(),
        min_lv.double(), members=members,
    )  # fmt: skip
    assert _rel(mean, emean) <= TOL[tf32]
    assert _rel(lv, elv) <= TOL[tf32]


@pytest.mark.parametrize("rows,reduce", [(256, None), (256, "min"), (8192, "min")])
def test_ensemble_mlp_critic_shapes(tf32, rows, reduce) -> None:
    """Critic targets (N = 10, hidden 256): full, min via full + amin (256 rows), fused min."""
    gen = torch.Generator().manual_seed(2)
    ws, bs = _params(10, [23, 256, 256, 256, 1], gen)
    x = torch.randn(rows, 23, generator=gen)
    got = ops.ensemble_mlp(x.cuda(), [w.cuda() for w in ws], [b.cuda() for b in bs], "relu",
                           reduce=reduce)  # fmt: skip
    want = ref.ensemble_mlp_ref(x.double(), [w.double() for w in ws], [b.double() for b in bs],
                                "relu", reduce=reduce)  # fmt: skip
    assert _rel(got, want) <= TOL[tf32]


@pytest.mark.parametrize("n", [2, 10, 50])
def test_critic_loss_grads_are_ieee_even_with_tf32_allowed(tf32, n: int) -> None:
    """The critic loss and its diversity gradient: IEEE tolerance whatever torch allows."""
    gen = torch.Generator().manual_seed(3)
    ws, bs = _params(n, [23, 256, 256, 256, 1], gen)
    obs, act = torch.randn(256, 17, generator=gen), torch.rand(256, 6, generator=gen) * 2 - 1
    target = torch.randn(256, generator=gen)
    got = ops.critic_loss_grads(
        obs.cuda(), act.cuda(), target.cuda(), [w.cuda() for w in ws], [b.cuda() for b in bs], 1.0
    )
    want = critic_closed_form.closed_form_grads(
        obs.double(), act.double(), target.double(), [w.double() for w in ws],
        [b.double() for b in bs], 1.0,
    )  # fmt: skip
    assert _rel(got.td, want.td) <= 1e-5
    assert _rel(got.diversity, want.diversity) <= 1e-5
    for layer, (g, w) in enumerate(zip(got.weight_grads, want.weight_grads, strict=True)):
        assert _rel(g, w) <= 1e-5, f"weight grad {layer}"
    for layer, (g, w) in enumerate(zip(got.bias_grads, want.bias_grads, strict=True)):
        assert _rel(g, w) <= 1e-5, f"bias grad {layer}"
