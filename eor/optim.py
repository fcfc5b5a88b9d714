"""`FusedAdam`: torch's fused Adam with a leaner `step()`.

`torch.optim.Adam(fused=True)` runs one fused kernel per parameter group, but its `step()`
spends half as long again in Python around it (a profiler range, hook loops, option handling,
per-parameter state bookkeeping, grouping tensors by device and dtype): ~0.17 ms of the
dynamics ensemble's ~0.5 ms optimiser step (6 weight-decay groups) on the CPU, every step.

`FusedAdam` is that class, and its state, `state_dict()` and `load_state_dict()` are
torch's own (checkpoints load into either class). Its `step()` makes the same two calls per
group that torch's fused path makes, `torch._foreach_add_(steps, 1)` then
`torch._fused_adam_(...)`, with the same arguments, so the results are bitwise the same
(tested). Whatever the lean path does not cover goes to torch's own `step()`: the first step
(state initialisation), a closure, step hooks, amsgrad, maximize, capturable, differentiable,
decoupled weight decay, a tensor lr, sparse or complex gradients, a group mixing devices or
dtypes, or a torch without `_fused_adam_`.

To be removed (issue 14): measured end to end it pays under 5% (a dynamics training step 2-4%,
an epoch 1.3%, a RAVL update under 1%), too little for the torch internals it relies on; its
users are to take `torch.optim.Adam(..., fused=True)`, which gives the same update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

_LEAN_OFF = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")


class FusedAdam(torch.optim.Adam):
    """`torch.optim.Adam(params, lr, fused=True, **kwargs)` with a lean `step()` (module
    docstring); raises like torch where fused Adam is unsupported (e.g. integer parameters).

    The lean path keeps, per group, the lists of parameters and their state tensors from one
    step to the next; it needs every parameter to have a gradient (otherwise that step is
    torch's). `load_state_dict` and `add_param_group` drop the lists, and so does any step
    that torch's own `step()` runs.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, **kwargs: Any) -> None:
        self._plan: list[tuple[dict[str, Any], list[Tensor], list[list[Tensor]]]] | None = None
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._plan = None
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._plan = None
        super().load_state_dict(state_dict)

    def _build_plan(self) -> list[tuple[dict[str, Any], list[Tensor], list[list[Tensor]]]] | None:
        """Per group: (group, its params list, [exp_avgs, exp_avg_sqs, steps]), or None if
        some parameter has no state yet or a gradient the lean path does not take."""
        plan = []
        for group in self.param_groups:
            params: list[Tensor] = group["params"]
            state_lists: list[list[Tensor]] = [[], [], []]
            for p in params:
                state = self.state.get(p)
                g = p.grad
                if not state or g is None or g.is_sparse or p.is_complex():
                    return None
                if p.device != params[0].device or p.dtype != params[0].dtype:
                    return None
                state_lists[0].append(state["exp_avg"])
                state_lists[1].append(state["exp_avg_sq"])
                state_lists[2].append(state["step"])
            plan.append((group, params, state_lists))
        return plan

    def _lean_ok(self) -> bool:
        if (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
            or not hasattr(torch, "_fused_adam_")
        ):
            return False
        return all(
            not isinstance(group["lr"], Tensor) and not any(group.get(k) for k in _LEAN_OFF)
            for group in self.param_groups
        )

    def _torch_step(self, closure: Callable[[], float] | None) -> float | None:
        """torch's own Adam step, inside torch's step wrapper (profiler range and hooks)."""
        raw = torch.optim.Adam.step
        raw = getattr(raw, "__wrapped__", raw) if getattr(raw, "hooked", False) else raw
        return torch.optim.Optimizer.profile_hook_step(raw)(self, closure)  # type: ignore[no-any-return]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        plan = self._plan
        if closure is None and self._lean_ok():
            if plan is None or len(plan) != len(self.param_groups):
                plan = self._plan = self._build_plan()
        else:
            plan = None
        if plan is not None:
            grads_per_group: list[list[Tensor]] = []
            for (group, params, _), current in zip(plan, self.param_groups, strict=True):
                grads = [p.grad for p in params]
                if (
                    group is not current
                    or current["params"] is not params
                    or any(g is None for g in grads)
                ):
                    plan = None
                    break
                grads_per_group.append(grads)  # type: ignore[arg-type]  # no None (checked)
        if plan is None:
            self._plan = None
            return self._torch_step(closure)
        for (group, params, (exp_avgs, exp_avg_sqs, steps)), group_grads in zip(
            plan, grads_per_group, strict=True
        ):
            if not params:
                continue
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                group_grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        return None


# The lean step is not wrapped in torch's per-step profiler range and hook loop (about 70 us
# on the CPU; `_patch_step_function` skips a step marked `hooked`): it only runs when no hook
# is registered, and everything else goes through `_torch_step`, which has the wrapper.
FusedAdam.step.hooked = True  # type: ignore[attr-defined]
