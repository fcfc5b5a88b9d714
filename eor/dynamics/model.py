"""The probabilistic dynamics ensemble of docs/algorithm.md §2, as stacked tensors.

Every member is an MLP `S+A -> H -> H -> H -> H -> 2·D` (SiLU after each hidden layer), with
`D = obs_dim + 1` (Δobs and reward). The E members are stored as stacked tensors
(`W1 [E, S+A, H]`, `W2..W4 [E, H, H]`, `W_head [E, H, 2D]`, biases `[E, O]`), so a forward pass is
one batched computation for all members (`eor.ops.ensemble_linear`), never a loop over them. The
head's first D outputs are the mean, its last D the raw log-variance: this is the same as two
linear heads with the same init and the same weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eor import ops
from eor.ops import aten

# docs/algorithm.md §2: Adam's coupled L2 per layer (weights only), before `l2_reg_multiplier`.
HIDDEN_WEIGHT_DECAY: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
HEAD_WEIGHT_DECAY = 1e-4
LOGVAR_LOSS_COEF = 0.01
MAX_LOGVAR_INIT = 0.5
MIN_LOGVAR_INIT = -10.0
NORMALIZER_CLIP = 10.0
NORMALIZER_MIN_STD = 1e-12

TerminationFn = Callable[[Tensor], Tensor]


def truncated_normal_(weight: Tensor, fan_in: int) -> Tensor:
    """docs/algorithm.md §2 init in place: N(0, σ²) with σ = 1/(2·√fan_in), truncated to ±2σ."""
    std = 1.0 / (2.0 * math.sqrt(fan_in))
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def bound_logvar(raw: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """logvar = max − softplus(max − raw), then min + softplus(logvar − min) (docs/algorithm.md §2)."""
    logvar = max_logvar - F.softplus(max_logvar - raw)
    return min_logvar + F.softplus(logvar - min_logvar)


def gaussian_nll_loss(
    mean: Tensor, logvar: Tensor, target: Tensor, max_logvar: Tensor, min_logvar: Tensor
) -> Tensor:
    """docs/algorithm.md §2 training loss (a scalar).

    mean, logvar, target: `[E, B, D]`. Per member: mean over batch and dims of
    `logvar + (y − μ)²·exp(−logvar)`; summed over members; plus
    `0.01·Σ max_logvar − 0.01·Σ min_logvar`.
    """
    per_member = (logvar + (target - mean).pow(2) * torch.exp(-logvar)).mean(dim=(1, 2))  # [E]
    return (
        per_member.sum() + LOGVAR_LOSS_COEF * max_logvar.sum() - LOGVAR_LOSS_COEF * min_logvar.sum()
    )


def head_nll_grads(
    head: Tensor,
    target: Tensor,
    max_logvar: Tensor,
    min_logvar: Tensor,
    grad_head: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`gaussian_nll_loss` of the bounded head output and its gradients, in closed form.

    head `[E, B, 2D]` (mean halves first), target `[E, B, D]`, bounds `[D]`. Returns
    (loss, ∂L/∂head `[E, B, 2D]`, ∂L/∂max_logvar `[D]`, ∂L/∂min_logvar `[D]`); ∂L/∂head is
    written into `grad_head` when given (same shape, dtype and device as head).

    With c = 1/(B·D), μ, r the mean and raw halves of the head output, u = max − r,
    lv₁ = max − softplus(u), v = lv₁ − min, lv = min + softplus(v), e = μ − y:

        ∂L/∂μ = 2c·e·exp(−lv),   g_lv = ∂L/∂lv = c·(1 − e²·exp(−lv)),
        g_v = g_lv·softplus′(v),  g_u = −g_v·softplus′(u),  ∂L/∂r = −g_u,
        ∂L/∂max = Σ (g_v + g_u) + 0.01,   ∂L/∂min = Σ (g_lv − g_v) − 0.01,

    softplus′ taken exactly as autograd does (`aten.softplus_backward`, threshold 20): about
    15 small ops over the `[E, B, 2D]` head instead of some 40 in autograd's forward + backward.
    """
    d = target.shape[-1]
    mean, raw = head[..., :d], head[..., d:]  # [E, B, D] each
    u = max_logvar - raw
    v = (max_logvar - F.softplus(u)) - min_logvar
    logvar = min_logvar + F.softplus(v)
    inv_var = torch.exp(-logvar)
    err = mean - target
    weighted = err.square().mul_(inv_var)  # e²·exp(−lv)
    c = 1.0 / (head.shape[1] * d)
    loss = (logvar + weighted).sum() * c + LOGVAR_LOSS_COEF * (max_logvar.sum() - min_logvar.sum())
    g_lv = weighted.neg_().add_(1.0).mul_(c)  # c·(1 − e²·exp(−lv))
    g_v = aten.softplus_backward(g_lv, v, 1.0, 20.0)
    g_u = aten.softplus_backward(g_v.neg(), u, 1.0, 20.0)
    if grad_head is None:
        grad_head = torch.empty_like(head)
    torch.mul(err.mul_(inv_var), 2.0 * c, out=grad_head[..., :d])
    torch.neg(g_u, out=grad_head[..., d:])
    g_max = (g_v + g_u).sum(dim=(0, 1)) + LOGVAR_LOSS_COEF
    g_min = (g_lv - g_v).sum(dim=(0, 1)) - LOGVAR_LOSS_COEF
    return loss, grad_head, g_max, g_min


class _HeadNLLFn(torch.autograd.Function):
    """`gaussian_nll_loss` of the bounded head output, its gradients in closed form
    (`head_nll_grads`, computed in the forward and handed out in the backward)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        head: Tensor,
        target: Tensor,
        max_logvar: Tensor,
        min_logvar: Tensor,
    ) -> Tensor:
        loss, grad_head, g_max, g_min = head_nll_grads(head, target, max_logvar, min_logvar)
        ctx.save_for_backward(grad_head, g_max, g_min)
        return loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        grad_head, g_max, g_min = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad_head * grad, None, g_max * grad, g_min * grad


def head_nll_loss(head: Tensor, target: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """`gaussian_nll_loss(mean, bound_logvar(raw), ...)` straight from the head output
    `[E, B, 2D]` (mean halves first), differentiable in head, max_logvar and min_logvar with
    closed-form gradients (`_HeadNLLFn`). target `[E, B, D]`."""
    return _HeadNLLFn.apply(head, target, max_logvar, min_logvar)


class Normalizer(nn.Module):
    """Input normaliser: `clip((x − mean)/std, ±10)`, with std ≤ 1e-12 replaced by 1.

    Statistics are buffers (saved with the model). *Quirk fixed* (docs/algorithm.md §2): they are fitted on all
    training inputs, not on one row plus the next states.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> Normalizer:
        """Set mean and (population) std over the rows of x `[N, dim]`."""
        if x.dim() != 2 or x.shape[1] != self.mean.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"Normalizer.fit: x must have shape [N > 0, {self.mean.shape[0]}], got {tuple(x.shape)}"
            )
        x64 = x.to(torch.float64)
        mean = x64.mean(dim=0)
        std = x64.std(dim=0, unbiased=False)
        std = torch.where(std <= NORMALIZER_MIN_STD, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std).clamp(-NORMALIZER_CLIP, NORMALIZER_CLIP)


class DynamicsEnsemble(nn.Module):
    """E probabilistic MLPs predicting `[Δobs, reward]` (mean and bounded log-variance).

    Attributes: `obs_dim`, `act_dim`, `out_dim` (= obs_dim + 1), `num_members`, `num_elites`,
    `hidden_dim`, `env_name`, `elites` (int64 `[num_elites]`, a buffer).
    """

    elites: Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        num_members: int = 7,
        num_elites: int = 5,
        hidden_dim: int = 200,
        num_hidden: int = 4,
        env_name: str | None = None,
        termination_fn: TerminationFn | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("obs_dim", obs_dim),
            ("act_dim", act_dim),
            ("num_members", num_members),
            ("num_elites", num_elites),
            ("hidden_dim", hidden_dim),
            ("num_hidden", num_hidden),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_elites > num_members:
            raise ValueError(
                f"num_elites must be <= num_members, got num_elites={num_elites} > num_members={num_members}"
            )
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.out_dim = obs_dim + 1
        self.num_members = num_members
        self.num_elites = num_elites
        self.hidden_dim = hidden_dim
        self.num_hidden = num_hidden
        self.env_name = env_name
        self._termination_fn = termination_fn
        self.meta: dict[str, Any] = {}  # what `eor.dynamics.load` read from meta.json

        sizes = [obs_dim + act_dim] + [hidden_dim] * num_hidden + [2 * self.out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            w = torch.empty(num_members, fan_in, fan_out)
            if generator is None:
                truncated_normal_(w, fan_in)
            else:  # trunc_normal_ takes no generator: draw by rejection from a seeded normal
                w.copy_(_trunc_normal_seeded(w.shape, fan_in, generator))
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(num_members, fan_out)))
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), MAX_LOGVAR_INIT))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), MIN_LOGVAR_INIT))
        self.normalizer = Normalizer(obs_dim + act_dim)
        self.register_buffer("elites", torch.arange(num_elites, dtype=torch.int64))

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.max_logvar.device

    @property
    def termination_fn(self) -> TerminationFn:
        """The env's batched termination rule (docs/algorithm.md §3), looked up from `env_name` when not given."""
        if self._termination_fn is None:
            if self.env_name is None:
                raise ValueError(
                    "this model has no env_name and no termination_fn; pass termination_fn="
                )
            from eor.envs import get_env

            self._termination_fn = get_env(self.env_name).termination_fn
        return self._termination_fn

    def set_elites(self, elites: Sequence[int] | Tensor) -> None:
        e = torch.as_tensor(elites, dtype=torch.int64).flatten()
        if e.numel() != self.num_elites or e.unique().numel() != e.numel():
            raise ValueError(f"elites must be {self.num_elites} distinct indices, got {e.tolist()}")
        if int(e.min()) < 0 or int(e.max()) >= self.num_members:
            raise ValueError(f"elites must lie in [0, {self.num_members}), got {e.tolist()}")
        self.elites.copy_(e.to(self.elites.device))

    # ------------------------------------------------------------------ training-side

    def param_groups(self, l2_reg_multiplier: float = 1.0) -> list[dict]:
        """Adam param groups: coupled L2 on the weights only, docs/algorithm.md §2's value per layer.

        Hidden layers get {2.5e-5, 5e-5, 7.5e-5, 7.5e-5}, the head (mean and logvar halves) 1e-4,
        all times `l2_reg_multiplier`; biases and the logvar bounds get none.
        """
        if not math.isfinite(l2_reg_multiplier) or l2_reg_multiplier < 0:
            raise ValueError(f"l2_reg_multiplier must be finite and >= 0, got {l2_reg_multiplier}")
        decays = [_hidden_decay(i) for i in range(self.num_hidden)] + [HEAD_WEIGHT_DECAY]
        groups: list[dict] = [
            {"params": [w], "weight_decay": d * l2_reg_multiplier, "name": f"weight{i}"}
            for i, (w, d) in enumerate(zip(self.weights, decays, strict=True))
        ]
        groups.append(
            {
                "params": [*self.biases, self.max_logvar, self.min_logvar],
                "weight_decay": 0.0,
                "name": "no_decay",
            }
        )
        return groups

    def forward(self, x_norm: Tensor) -> tuple[Tensor, Tensor]:
        """Differentiable forward of every member.

        x_norm: normalised inputs, `[E, B, S+A]` (each member its own batch) or shared `[B, S+A]`.
        Returns (mean, logvar), each `[E, B, D]`, logvar bounded.
        """
        h = self._head(x_norm)
        mean, raw = h[..., : self.out_dim], h[..., self.out_dim :]  # [E, B, D] each
        return mean, bound_logvar(raw, self.max_logvar, self.min_logvar)

    def _head(self, x_norm: Tensor) -> Tensor:
        """The last layer's output `[E, B, 2D]` (mean halves, then raw log-variances)."""
        h = x_norm
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = ops.ensemble_linear(h, w, b, "none" if i == last else "silu")
        return h

    def loss(self, mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
        return gaussian_nll_loss(mean, logvar, target, self.max_logvar, self.min_logvar)

    def training_loss(self, x_norm: Tensor, target: Tensor) -> Tensor:
        """docs/algorithm.md §2's training loss at normalised inputs, `loss(*self(x_norm), target)` with the
        bounding and the NLL's gradients in closed form (`head_nll_loss`). target `[E, B, D]`."""
        return head_nll_loss(self._head(x_norm), target, self.max_logvar, self.min_logvar)

    @torch.no_grad()
    def holdout_mse(self, x_norm: Tensor, target: Tensor, chunk: int = 2048) -> Tensor:
        """Mean squared error of the means per member, over rows and dims: `[E]` (float64).

        x_norm: `[N, S+A]` normalised, target: `[N, D]`. Only the head's mean columns are
        computed, `chunk` rows at a time (2048 keeps a layer's `[E, chunk, H]` activations in
        cache: 0.30 s for 40k rows here against 0.51 s for 16k-row chunks of the full head).
        """
        d = self.out_dim
        weights = [*self.weights[:-1], self.weights[-1][..., :d].contiguous()]
        biases = [*self.biases[:-1], self.biases[-1][..., :d].contiguous()]
        total = torch.zeros(self.num_members, dtype=torch.float64, device=x_norm.device)
        for start in range(0, x_norm.shape[0], chunk):
            mean = ops.ensemble_mlp(x_norm[start : start + chunk], weights, biases, "silu")
            err = (mean - target[start : start + chunk].unsqueeze(0)).pow(2)  # [E, n, D]
            total += err.sum(dim=(1, 2)).to(torch.float64)
        return total / (x_norm.shape[0] * d)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def predict_normalized(
        self, x_norm: Tensor, members: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """No-grad forward: `[E, B, D]` pairs, or `[B, D]` with `members` (`[B]` int64)."""
        return ops.gaussian_ensemble_forward(
            x_norm,
            list(self.weights),
            list(self.biases),
            self.max_logvar,
            self.min_logvar,
            members=members,
            activation="silu",
        )

    @torch.no_grad()
    def predict(
        self, obs: Tensor, act: Tensor, members: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(mean, logvar) of `[Δobs, reward]` for raw obs `[B, S]` and act `[B, A]`."""
        return self.predict_normalized(self.normalizer(torch.cat([obs, act], dim=-1)), members)

    @torch.no_grad()
    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One model transition per row: `(next_obs [B, S], reward [B], done [B] bool)`.

        docs/algorithm.md §2: every member predicts, each draws a Gaussian sample, and one elite chosen
        uniformly per row gives the transition. Only the chosen elite's sample is ever used, so
        we draw the elite first and compute just its row (the gathered path); the distribution
        is the same. Random draws, in this order, from `generator` (on the model's device):
        elite slots `randint(num_elites, [B])`, then noise `randn([B, D])`.
        """
        self._check_step_inputs(obs, act)
        n = obs.shape[0]
        slots = torch.randint(self.num_elites, (n,), generator=generator, device=self.device)  # [B]
        members = self.elites[slots]  # [B]
        mean, logvar = self.predict(obs, act, members)  # [B, D] each
        noise = torch.randn(mean.shape, generator=generator, device=self.device, dtype=mean.dtype)
        sample = mean + torch.exp(0.5 * logvar) * noise  # [B, D]
        next_obs = obs + sample[:, : self.obs_dim]
        reward = sample[:, self.obs_dim]
        done = self.termination_fn(next_obs)
        return next_obs, reward, done

    def _check_step_inputs(self, obs: Tensor, act: Tensor) -> None:
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if act.dim() != 2 or act.shape != (obs.shape[0], self.act_dim):
            raise ValueError(
                f"act must have shape [{obs.shape[0]}, {self.act_dim}], got {tuple(act.shape)}"
            )
        if obs.device != self.device or act.device != self.device:
            raise ValueError(
                f"obs and act must be on the model's device {self.device}, got {obs.device}, {act.device}"
            )
        if obs.dtype != self.max_logvar.dtype or act.dtype != self.max_logvar.dtype:
            raise ValueError(
                f"obs and act must be {self.max_logvar.dtype}, got {obs.dtype}, {act.dtype}"
            )


def _hidden_decay(i: int) -> float:
    """Decay of hidden layer i; layers past the fourth (num_hidden > 4) repeat the last value."""
    return HIDDEN_WEIGHT_DECAY[min(i, len(HIDDEN_WEIGHT_DECAY) - 1)]


def _trunc_normal_seeded(shape: torch.Size, fan_in: int, generator: torch.Generator) -> Tensor:
    """Truncated normal (±2σ) by rejection, drawing from `generator` (reproducible init)."""
    std = 1.0 / (2.0 * math.sqrt(fan_in))
    out = torch.randn(shape, generator=generator)
    bad = out.abs() > 2.0
    while bool(bad.any()):
        out[bad] = torch.randn(int(bad.sum()), generator=generator)
        bad = out.abs() > 2.0
    return out * std
