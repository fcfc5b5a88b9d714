"""Plain-torch (and numpy) references: the executable specification of every fast path.

Written for clarity, not speed. Every fast path in `eor.ops`, `kernels/` and `eor._core` is
tested against these. Conventions: ensemble dimension first, `x @ W` with W `[E, I, O]`.

Sections are owned by the part of eor they specify; keep each function self-contained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATIONS = ("none", "relu", "silu")


def activation_ref(x: Tensor, activation: str) -> Tensor:
    if activation == "none":
        return x
    if activation == "relu":
        return torch.relu(x)
    if activation == "silu":
        return F.silu(x)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


# ----------------------------------------------------------------------------- ensemble ops


def ensemble_linear_ref(x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none") -> Tensor:
    """y[e] = act(x[e] @ W[e] + b[e]).

    x: `[E, B, I]` (per-member input) or `[B, I]` (shared by all members);
    weight: `[E, I, O]`; bias: `[E, O]`. Returns `[E, B, O]`.
    """
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(weight.shape[0], -1, -1)
    return activation_ref(torch.matmul(x, weight) + bias.unsqueeze(1), activation)


def ensemble_mlp_ref(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "relu",
    *,
    members: Tensor | None = None,
    reduce: str | None = None,
) -> Tensor:
    """An ensemble MLP: `activation` after every layer but the last, which is linear.

    x: `[B, I]` shared or `[E, B, I]`; weights[l]: `[E, I_l, O_l]`; biases[l]: `[E, O_l]`.
    - default: returns `[E, B, O]`;
    - reduce="min": returns `[B, O]`, the minimum over members;
    - members (`[B]` int64): gathered form, row b uses member members[b]; x must be `[B, I]`;
      returns `[B, O]`, equal to the full forward's `out[members[b], b]`.
    """
    if members is not None:
        h = x
        for layer, (w, b) in enumerate(zip(weights, biases)):
            h = torch.bmm(h.unsqueeze(1), w[members]).squeeze(1) + b[members]
            if layer < len(weights) - 1:
                h = activation_ref(h, activation)
        return h
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases)):
        last = layer == len(weights) - 1
        h = ensemble_linear_ref(h, w, b, "none" if last else activation)
    if reduce == "min":
        return h.min(dim=0).values
    if reduce is not None:
        raise ValueError(f"reduce must be None or 'min', got {reduce!r}")
    return h


def bound_logvar_ref(logvar: Tensor, max_logvar: Tensor, min_logvar: Tensor) -> Tensor:
    """SPEC 2: logvar = max − softplus(max − logvar), then min + softplus(logvar − min)."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


def gaussian_ensemble_forward_ref(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    *,
    members: Tensor | None = None,
    activation: str = "silu",
) -> tuple[Tensor, Tensor]:
    """Dynamics-model forward: hidden layers with `activation`, then one linear head of width
    2·D whose first D outputs are the mean and last D the raw log-variance, which is bounded.

    Returns (mean, logvar), each `[E, B, D]`, or `[B, D]` with `members`.
    """
    out = ensemble_mlp_ref(x, weights, biases, activation, members=members)
    d = out.shape[-1] // 2
    return out[..., :d], bound_logvar_ref(out[..., d:], max_logvar, min_logvar)


# ----------------------------------------------------------------------------- critic loss


def critic_q_ref(obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """Q-ensemble: Q_i(s, a) for every critic. obs `[B, S]`, act `[B, A]` -> `[N, B]`."""
    x = torch.cat([obs, act], dim=-1)  # [B, S+A], shared by all critics
    return ensemble_mlp_ref(x, weights, biases, "relu").squeeze(-1)


def diversity_loss_ref(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
    """EDAC's diversity term, computed as the reference does: autograd with create_graph.

    g_i = ∇_a Q_i(s, a) / (‖∇_a Q_i(s, a)‖₂ + 1e-10);
    L_div = mean_b [ Σ_{i≠j} ⟨g_i, g_j⟩ ] / (N − 1). Differentiable (double backward).
    """
    n = weights[0].shape[0]
    if n < 2:
        raise ValueError(f"the diversity term needs num_critics >= 2, got {n}")
    obs_tile = obs.unsqueeze(0).expand(n, -1, -1)  # [N, B, S]
    act_tile = act.detach().unsqueeze(0).expand(n, -1, -1).clone().requires_grad_(True)  # [N, B, A]
    h = torch.cat([obs_tile, act_tile], dim=-1)
    q = ensemble_mlp_ref(h, weights, biases, "relu")  # [N, B, 1]
    (grad,) = torch.autograd.grad(q.sum(), act_tile, create_graph=True)  # [N, B, A]
    grad = grad / (torch.norm(grad, p=2, dim=2, keepdim=True) + 1e-10)
    grad = grad.transpose(0, 1)  # [B, N, A]
    gram = torch.einsum("bik,bjk->bij", grad, grad)  # [B, N, N]
    mask = 1.0 - torch.eye(n, dtype=gram.dtype, device=gram.device)
    return (gram * mask).sum(dim=(1, 2)).mean() / (n - 1)


def critic_loss_ref(
    obs: Tensor,
    act: Tensor,
    target: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
) -> Tensor:
    """SPEC 3 step 3: Σ_i mean_b (Q_i(s, a) − y)² + η · L_div. target `[B]`."""
    q = critic_q_ref(obs, act, weights, biases)  # [N, B]
    loss = ((q - target.unsqueeze(0)) ** 2).mean(dim=1).sum()
    if eta > 0:
        loss = loss + eta * diversity_loss_ref(obs, act, weights, biases)
    return loss


# ============================================================================ replay buffer
# (numpy reference ring buffer; owned by the C++ buffer work)


# ============================================================================ dynamics model
# (per-member-loop reference of SPEC section 2; owned by eor/dynamics)


class DynamicsMemberRef(torch.nn.Module):
    """One dynamics member as the reference code runs it: nn.Linear layers, SiLU, two heads.

    `S+A -> H (x num_hidden, SiLU) -> mean [D]` and `-> raw logvar [D]`.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 200, num_hidden: int = 4) -> None:
        super().__init__()
        sizes = [in_dim] + [hidden_dim] * num_hidden
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.mean_head = torch.nn.Linear(hidden_dim, out_dim)
        self.logvar_head = torch.nn.Linear(hidden_dim, out_dim)
        for layer in [*self.hidden, self.mean_head, self.logvar_head]:
            std = 1.0 / (2.0 * layer.in_features**0.5)
            torch.nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.hidden:
            x = F.silu(layer(x))
        return self.mean_head(x), self.logvar_head(x)


class DynamicsEnsembleRef(torch.nn.Module):
    """SPEC 2 ensemble as a Python loop over E separate member modules (the speed baseline).

    Inputs here are already normalised (`input_mean`/`input_std` buffers hold the statistics).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, num_members: int = 7, num_elites: int = 5, hidden_dim: int = 200
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.out_dim = obs_dim, act_dim, obs_dim + 1
        self.num_members, self.num_elites = num_members, num_elites
        self.members = torch.nn.ModuleList(
            DynamicsMemberRef(obs_dim + act_dim, obs_dim + 1, hidden_dim) for _ in range(num_members)
        )
        self.max_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), 0.5))
        self.min_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), -10.0))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(num_elites))

    def load_stacked(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Copy stacked `[E, I, O]` weights (head `[E, H, 2D]`: mean half, then logvar half)."""
        d = self.out_dim
        with torch.no_grad():
            for e, member in enumerate(self.members):
                for layer, w, b in zip(member.hidden, weights[:-1], biases[:-1]):
                    layer.weight.copy_(w[e].T)
                    layer.bias.copy_(b[e])
                member.mean_head.weight.copy_(weights[-1][e, :, :d].T)
                member.mean_head.bias.copy_(biases[-1][e, :d])
                member.logvar_head.weight.copy_(weights[-1][e, :, d:].T)
                member.logvar_head.bias.copy_(biases[-1][e, d:])

    def normalize(self, x: Tensor) -> Tensor:
        return ((x - self.input_mean) / self.input_std).clamp(-10.0, 10.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x `[B, I]` shared or `[E, B, I]` per member -> (mean, bounded logvar) `[E, B, D]`."""
        means, logvars = [], []
        for e, member in enumerate(self.members):
            mean, raw = member(x if x.dim() == 2 else x[e])
            means.append(mean)
            logvars.append(bound_logvar_ref(raw, self.max_logvar, self.min_logvar))
        return torch.stack(means), torch.stack(logvars)

    def loss(self, mean: Tensor, logvar: Tensor, target: Tensor) -> Tensor:
        """Σ_e mean_{b,d}[logvar + (y − μ)² e^{−logvar}] + 0.01 Σ max_logvar − 0.01 Σ min_logvar."""
        total = 0.01 * self.max_logvar.sum() - 0.01 * self.min_logvar.sum()
        for e in range(self.num_members):
            total = total + (logvar[e] + (target[e] - mean[e]) ** 2 * torch.exp(-logvar[e])).mean()
        return total

    def make_optimizer(self, lr: float = 1e-3, l2_reg_multiplier: float = 1.0) -> torch.optim.Adam:
        """Adam with coupled L2 on weights: hidden {2.5e-5, 5e-5, 7.5e-5, 7.5e-5}, heads 1e-4."""
        decays = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
        groups: list[dict] = []
        no_decay: list[Tensor] = [self.max_logvar, self.min_logvar]
        for member in self.members:
            for layer, decay in zip(member.hidden, decays):
                groups.append({"params": [layer.weight], "weight_decay": decay * l2_reg_multiplier})
                no_decay.append(layer.bias)
            for head in (member.mean_head, member.logvar_head):
                groups.append({"params": [head.weight], "weight_decay": 1e-4 * l2_reg_multiplier})
                no_decay.append(head.bias)
        groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=lr)

    def train_epoch(
        self, x_norm: Tensor, target: Tensor, order: Tensor, optimizer: torch.optim.Optimizer, batch_size: int = 256
    ) -> float:
        """One pass: member e visits rows `order[e]` (its bootstrap, shuffled) in batches."""
        losses = []
        for start in range(0, order.shape[1], batch_size):
            idx = order[:, start : start + batch_size]  # [E, b]
            mean, logvar = self(x_norm[idx])
            loss = self.loss(mean, logvar, target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        return sum(losses) / len(losses)

    @torch.no_grad()
    def holdout_mse(self, x_norm: Tensor, target: Tensor) -> Tensor:
        """Per-member MSE of the means, `[E]`."""
        mean, _ = self(x_norm)
        return ((mean - target) ** 2).mean(dim=(1, 2))

    @torch.no_grad()
    def step(
        self, obs: Tensor, act: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SPEC 2 model step, literally: every member predicts and samples, one elite per row.

        Draws noise `[E, B, D]` then elite slots `[B]` from `generator`.
        Returns (next_obs [B, S], reward [B], members [B], noise [E, B, D]); termination is the
        caller's (it depends on the env).
        """
        mean, logvar = self(self.normalize(torch.cat([obs, act], dim=-1)))  # [E, B, D]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        samples = dynamics_sample_ref(mean, logvar, noise)  # [E, B, D]
        slots = torch.randint(self.num_elites, (obs.shape[0],), generator=generator, device=obs.device)
        members = self.elites[slots]
        picked = samples[members, torch.arange(obs.shape[0], device=obs.device)]  # [B, D]
        return obs + picked[:, : self.obs_dim], picked[:, self.obs_dim], members, noise


def dynamics_sample_ref(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
    """Gaussian sample mean + exp(logvar/2)·noise (all the same shape)."""
    return mean + torch.exp(0.5 * logvar) * noise


# ============================================================================ RAVL agent
# (plain autograd reference update of SPEC section 3; owned by eor/agent)
