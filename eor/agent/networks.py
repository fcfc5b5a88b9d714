"""RAVL's networks (docs/algorithm.md §3): the tanh-Gaussian actor and the vectorised critic ensemble.

Both follow the reference (CORL's EDAC, which RAVL adapts) in architecture, initialisation and
state-dict layout where that is possible:

* `Actor`: obs → 256 → 256 → 256 (ReLU) → μ, log σ heads; log σ clipped to [−5, 2]; a = tanh(u)
  · max_action with u ~ N(μ, σ²). Parameter names (`trunk.0`, `trunk.2`, `trunk.4`, `mu`,
  `log_sigma`) are the reference's, so a reference actor's state dict loads as is.
* `VectorizedCritic`: N ReLU MLPs concat(obs, act) → 256 → 256 → 256 → 1, stored as stacked
  tensors `weights[l]` `[N, I_l, O_l]` and `biases[l]` `[N, O_l]`, the layout `eor.ops` takes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from eor import ops
from eor.ops import aten

LOG_SIGMA_MIN = -5.0
LOG_SIGMA_MAX = 2.0
TANH_EPS = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy π(a|s).

    forward(obs `[B, S]`) -> (action `[B, A]`, log π(action|obs) `[B]` or None), with

        u = μ(s) + σ(s) ε,  ε ~ N(0, I),   a = tanh(u) · max_action,
        log π = Σ_k [log N(u_k; μ_k, σ_k) − log(1 − tanh(u_k)² + 1e-6)].

    As in the reference, the log-density is that of tanh(u) (the max_action scale is not
    corrected for; it is 1 for every env eor supports).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dim: int = 256,
        max_action: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.hidden_dim = hidden_dim
        self.max_action = float(max_action)
        self.trunk = nn.Sequential(
            nn.Linear(obs_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.mu = nn.Linear(hidden_dim, act_dim)
        self.log_sigma = nn.Linear(hidden_dim, act_dim)
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """docs/algorithm.md §3 init: trunk weights as nn.Linear (kaiming-uniform a=√5, bound 1/√fan_in),
        trunk biases 0.1, head weights and biases U(±1e-3)."""
        for layer in self.trunk:
            if not isinstance(layer, nn.Linear):
                continue
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            nn.init.constant_(layer.bias, 0.1)
        for head in (self.mu, self.log_sigma):
            nn.init.uniform_(head.weight, -1e-3, 1e-3, generator=generator)
            nn.init.uniform_(head.bias, -1e-3, 1e-3, generator=generator)

    def forward(
        self,
        obs: Tensor,
        deterministic: bool = False,
        need_log_prob: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """obs `[B, S]` -> (action `[B, A]`, log π `[B]` or None). ε is drawn from `generator`
        (the global RNG when None); deterministic uses u = μ."""
        mu, log_sigma = self.dist_params(obs)
        return self.sample(mu, log_sigma, deterministic, need_log_prob, generator)

    def dist_params(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs `[B, S]` -> (μ, log σ), each `[B, A]`, log σ clipped to [−5, 2]. Two samples of
        π at the same obs (RAVL's α and actor steps) can share this forward."""
        hidden = self.trunk(obs)  # [B, H]
        mu = self.mu(hidden)  # [B, A]
        log_sigma = self.log_sigma(hidden).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)  # [B, A]
        return mu, log_sigma

    def sample(
        self,
        mu: Tensor,
        log_sigma: Tensor,
        deterministic: bool = False,
        need_log_prob: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(action `[B, A]`, log π `[B]` or None) from `dist_params` output; one ε draw."""
        if deterministic:
            eps = torch.zeros_like(mu)
            u = mu
        else:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            u = mu + log_sigma.exp() * eps
        tanh_u = torch.tanh(u)
        log_prob = None
        if need_log_prob:
            # log N(u; μ, σ) = −ε²/2 − log σ − log √(2π), with ε = (u − μ)/σ known exactly here
            # (the reference recomputes it from u, equal up to rounding).
            gauss = -0.5 * eps.square() - log_sigma - _HALF_LOG_2PI
            log_prob = (gauss - torch.log(1.0 - tanh_u.square() + TANH_EPS)).sum(dim=-1)
        return tanh_u * self.max_action, log_prob

    @torch.no_grad()
    def act(
        self, obs: Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Actions without gradients: obs `[B, S]` (or `[S]`) -> `[B, A]` (or `[A]`).

        deterministic: tanh(μ(s)) · max_action (evaluation); otherwise a sample of π.
        """
        if obs.dim() not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs must have shape [B, {self.obs_dim}] or [{self.obs_dim}], "
                f"got {tuple(obs.shape)}"
            )
        param = self.mu.weight
        obs = obs.to(device=param.device, dtype=param.dtype)
        action, _ = self(obs, deterministic, need_log_prob=False, generator=generator)
        return action


class VectorizedCritic(nn.Module):
    """N independent ReLU MLP critics evaluated as one batched computation.

    `weights[l]` `[N, I_l, O_l]`, `biases[l]` `[N, O_l]`, with I_0 = obs_dim + act_dim and the
    last layer `[N, H, 1]`. forward(obs `[B, S]`, act `[B, A]`) -> Q `[N, B]`, differentiable.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dim: int = 256,
        num_critics: int = 10,
        *,
        num_hidden: int = 3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.hidden_dim = hidden_dim
        self.num_critics = num_critics
        dims = [obs_dim + act_dim] + [hidden_dim] * num_hidden + [1]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_critics, i, o))
            for i, o in zip(dims[:-1], dims[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.empty(num_critics, o)) for o in dims[1:])
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """docs/algorithm.md §3 init: kaiming-uniform(a=√5) per member, biases 0.1, last layer U(±3e-3).

        Like the reference, the kaiming init is applied to each member's `[I, O]` slice, for
        which torch's fan_in is size(1) = O: the bound is 1/√O (1/√H for the first layer, not
        1/√(S+A)). We keep this to match the reference's initial critics.
        """
        for w in self.weights:
            for member in range(self.num_critics):
                nn.init.kaiming_uniform_(w[member], a=math.sqrt(5), generator=generator)
        for b in self.biases:
            nn.init.constant_(b, 0.1)
        nn.init.uniform_(self.weights[-1], -3e-3, 3e-3, generator=generator)
        nn.init.uniform_(self.biases[-1], -3e-3, 3e-3, generator=generator)

    def params(self, *, detach: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        """(weights, biases) as lists of tensors; detached views with `detach=True`."""
        ws = [w.detach() if detach else w for w in self.weights]
        bs = [b.detach() if detach else b for b in self.biases]
        return ws, bs

    def forward(self, obs: Tensor, act: Tensor, *, detach_params: bool = False) -> Tensor:
        """Q_i(s, a) for all critics: obs `[B, S]`, act `[B, A]` -> `[N, B]`.

        detach_params: differentiate only with respect to the inputs (the actor step needs
        ∂Q/∂a, not the critic weights' gradients, which it would otherwise compute and drop).
        """
        ws, bs = self.params(detach=detach_params)
        h = torch.cat([obs, act], dim=-1)  # [B, S+A], shared by all critics
        last = len(ws) - 1
        for layer, (w, b) in enumerate(zip(ws, bs, strict=True)):
            h = ops.ensemble_linear(h, w, b, "none" if layer == last else "relu")  # [N, B, O]
        return h.squeeze(-1)  # [N, B]

    @torch.no_grad()
    def min_q_and_action_grad(
        self, obs: Tensor, act: Tensor, *, grouped: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Q `[N, B]`, q_min = minᵢ Qᵢ(s, a) `[B]` and ∇ₐ q_min `[B, A]`, without autograd.

        The actor step needs only ∇ₐ minᵢ Qᵢ, and the min picks one critic i*(b) per row, so
        the backward runs through that critic alone (as autograd's min backward routes the
        whole gradient to the selected index; ties go to the index `min` returns):

            δ_L = w_L[i*],  δ_l = m_l[i*, b] ⊙ (δ_{l+1} W_{l+1}[i*]ᵀ),  ∇ₐ = δ_1 W_1[i*, S:]ᵀ,

        with m_l the ReLU masks of the forward. That is 1/N of the backward GEMM work autograd
        does over all N critics (whose gradients the min then discards).

        grouped: run the per-row matmuls as one GEMM per critic over its rows (default on the
        CPU: it reads the group sizes on the host, free there but a sync on a GPU); otherwise a
        dense batched GEMM over all critics with the other rows zeroed (sync-free, N× the work).
        """
        if grouped is None:
            grouped = obs.device.type == "cpu"
        ws, bs = self.params(detach=True)
        h = torch.cat([obs, act], dim=-1)  # [B, S+A]
        hidden = []
        for w, b in zip(ws[:-1], bs[:-1], strict=True):
            h = ops.ensemble_linear(h, w, b, "relu")  # [N, B, H], read by the backward below
            hidden.append(h)
        q = ops.ensemble_linear(h, ws[-1], bs[-1]).squeeze(-1)  # [N, B]
        q_min, idx = q.min(dim=0)  # [B], [B]
        if not grouped:
            rows = torch.arange(q.shape[1], device=q.device)
            delta = ws[-1][idx, :, 0]  # [B, H]: ∂q/∂h_L for each row's critic
            for layer in range(len(hidden) - 1, -1, -1):
                delta = delta * (hidden[layer][idx, rows] > 0)  # [B, H_l]
                w = ws[layer][:, self.obs_dim :, :] if layer == 0 else ws[layer]
                dense = delta.new_zeros(self.num_critics, *delta.shape)  # [N, B, H_l]
                dense[idx, rows] = delta
                delta = torch.bmm(dense, w.transpose(1, 2))[idx, rows]  # [B, I_l]
            return q, q_min, delta
        return (q, q_min, self._grouped_action_grad(ws, hidden, idx))

    def _grouped_action_grad(self, ws: list[Tensor], hidden: list[Tensor], idx: Tensor) -> Tensor:
        """∇ₐ Q_{idx[b]}(s_b, a_b) `[B, A]` through one critic per row (host-side grouping).

        Rows are sorted by their critic once; the chain runs in that order (one GEMM per critic
        and layer, each into its slice of the next delta) and is unsorted once at the end.
        """
        n, b = self.num_critics, idx.shape[0]
        order = torch.argsort(idx)  # [B]: rows grouped by critic
        crit = idx[order]  # [B], non-decreasing
        spans = []
        lo = 0
        for i, count in enumerate(torch.bincount(idx, minlength=n).tolist()):
            if count:
                spans.append((i, lo, lo + count))
            lo += count
        src = crit * b + order  # [B]: each sorted row's row in the [N·B, H] activations
        delta = ws[-1][crit, :, 0]  # [B, H]: ∂q/∂h_L for each row's critic (sorted rows)
        for layer in range(len(hidden) - 1, -1, -1):
            # ReLU backward with autograd's own mask convention (h > 0), in place.
            rows = hidden[layer].reshape(n * b, -1).index_select(0, src)  # [B, H_l]
            aten.relu_backward_into(delta, rows, delta)
            w = ws[layer][:, self.obs_dim :, :] if layer == 0 else ws[layer]  # [N, I_l, H_l]
            out = delta.new_empty(delta.shape[0], w.shape[1])  # [B, I_l]
            for i, start, stop in spans:
                torch.mm(delta[start:stop], w[i].T, out=out[start:stop])
            delta = out
        return torch.empty_like(delta).index_copy_(0, order, delta)  # [B, A], original rows

    @torch.no_grad()
    def q_values(self, obs: Tensor, act: Tensor, *, reduce: str | None = None) -> Tensor:
        """No-grad Q: `[N, B]`, or the min over critics `[B]` with reduce="min"."""
        x = torch.cat([obs, act], dim=-1)  # [B, S+A]
        ws, bs = self.params(detach=True)
        return ops.ensemble_mlp(x, ws, bs, "relu", reduce=reduce).squeeze(-1)
