"""eor.optim.FusedAdam: bitwise torch.optim.Adam(fused=True), with a lean step."""

from __future__ import annotations

import pytest
import torch

from eor.optim import FusedAdam


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 5, 7), (3, 7), (4, 4), (4,), ()]
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _groups(params: list[torch.nn.Parameter]) -> list[dict]:
    return [
        {"params": params[:2], "weight_decay": 1e-2},
        {"params": params[2:4], "weight_decay": 0.0, "lr": 3e-3},
        {"params": params[4:], "weight_decay": 5e-4},
    ]


def _set_grads(params: list[torch.nn.Parameter], step: int, skip: int | None = None) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=g)


def _assert_same(a: torch.optim.Optimizer, pa, b: torch.optim.Optimizer, pb) -> None:
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)
        sa, sb = a.state[x], b.state[y]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.fixture
def torch_step_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the steps FusedAdam hands to torch's own Adam.step."""
    calls: list[int] = []
    original = FusedAdam._torch_step

    def counted(self, closure):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, closure)

    monkeypatch.setattr(FusedAdam, "_torch_step", counted)
    return calls


def test_bitwise_torch_fused_adam_over_steps_groups_and_lr_changes(torch_step_calls) -> None:
    pa, pb = _params(), _params()
    a = torch.optim.Adam(_groups(pa), lr=1e-3, fused=True)
    b = FusedAdam(_groups(pb), lr=1e-3)
    for step in range(8):
        if step == 3:
            for opt in (a, b):
                opt.param_groups[0]["lr"] *= 0.3
        _set_grads(pa, step)
        _set_grads(pb, step)
        a.step()
        b.step()
        _assert_same(a, pa, b, pb)
    assert len(torch_step_calls) == 1  # only the first step (state initialisation)


def test_missing_gradient_falls_back_and_matches(torch_step_calls) -> None:
    pa, pb = _params(), _params()
    a = torch.optim.Adam(_groups(pa), lr=1e-3, fused=True)
    b = FusedAdam(_groups(pb), lr=1e-3)
    for step, skip in enumerate([None, None, 2, None, 4, None]):
        _set_grads(pa, step, skip)
        _set_grads(pb, step, skip)
        a.step()
        b.step()
        _assert_same(a, pa, b, pb)
    assert len(torch_step_calls) == 3  # the first step and the two with a missing gradient


def test_state_dict_moves_between_the_two_classes(torch_step_calls) -> None:
    pa, pb = _params(), _params()
    a = torch.optim.Adam(_groups(pa), lr=1e-3, fused=True)
    b = FusedAdam(_groups(pb), lr=1e-3)
    for step in range(3):
        _set_grads(pa, step)
        _set_grads(pb, step)
        a.step()
        b.step()
    # swap: each continues from the other's saved state
    pa2, pb2 = _params(), _params()
    with torch.no_grad():
        for x, y, x2, y2 in zip(pa, pb, pa2, pb2, strict=True):
            x2.copy_(y)
            y2.copy_(x)
    a2 = torch.optim.Adam(_groups(pa2), lr=1e-3, fused=True)
    a2.load_state_dict(b.state_dict())
    b2 = FusedAdam(_groups(pb2), lr=1e-3)
    b2.load_state_dict(a.state_dict())
    calls_before = len(torch_step_calls)
    for step in range(3, 6):
        _set_grads(pa2, step)
        _set_grads(pb2, step)
        a2.step()
        b2.step()
        _assert_same(a2, pa2, b2, pb2)
    assert len(torch_step_calls) == calls_before  # the loaded state is used by the lean path


def test_hooks_closure_amsgrad_and_new_groups_use_torchs_step(torch_step_calls) -> None:
    pa, pb = _params(), _params()
    a = torch.optim.Adam(_groups(pa[:4]), lr=1e-3, fused=True, amsgrad=False)
    b = FusedAdam(_groups(pb[:4]), lr=1e-3)
    seen: list[int] = []
    for step in range(6):
        if step == 1:
            handle = b.register_step_pre_hook(lambda opt, args, kwargs: seen.append(1))
        if step == 2:
            handle.remove()
        if step == 4:
            a.add_param_group({"params": pa[4:], "weight_decay": 0.0})
            b.add_param_group({"params": pb[4:], "weight_decay": 0.0})
        _set_grads(pa if step >= 4 else pa[:4], step)
        _set_grads(pb if step >= 4 else pb[:4], step)
        if step == 3:
            loss_a = a.step(lambda: 1.5)
            loss_b = b.step(lambda: 1.5)
            assert loss_a == loss_b == 1.5
        else:
            a.step()
            b.step()
        _assert_same(a, pa[: 4 + (step >= 4)], b, pb[: 4 + (step >= 4)])
    assert seen == [1]  # the hook ran on the step it was registered for
    # steps 0 (init), 1 (hook), 3 (closure), 4 (new group: no state yet)
    assert len(torch_step_calls) == 4

    pc, pd = _params(), _params()
    c = torch.optim.Adam(pc, lr=1e-3, fused=True, amsgrad=True)
    d = FusedAdam(pd, lr=1e-3, amsgrad=True)
    for step in range(3):
        _set_grads(pc, step)
        _set_grads(pd, step)
        c.step()
        d.step()
        _assert_same(c, pc, d, pd)
