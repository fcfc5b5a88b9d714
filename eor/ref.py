"""Plain-torch (and numpy) references: the executable specification of every fast path.

Written for clarity, not speed. Every fast path in `eor.ops`, `kernels/` and `eor._core` is
tested against these. Conventions: ensemble dimension first, `x @ W` with W `[E, I, O]`.

Sections are owned by the part of eor they specify; keep each function self-contained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
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


def ensemble_linear_ref(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none"
) -> Tensor:
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
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.bmm(h.unsqueeze(1), w[members]).squeeze(1) + b[members]
            if layer < len(weights) - 1:
                h = activation_ref(h, activation)
        return h
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
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


def ensemble_linear_loop_ref(
    x: Tensor, layers: Sequence[torch.nn.Linear], activation: str = "none"
) -> Tensor:
    """Speed baseline: one `nn.Linear` per member in a Python loop (how the reference dynamics
    model runs). x `[E, B, I]` or shared `[B, I]`; layers: E modules I -> O. Returns `[E, B, O]`."""
    xs = [x] * len(layers) if x.dim() == 2 else list(x)
    return torch.stack(
        [activation_ref(layer(xe), activation) for layer, xe in zip(layers, xs, strict=True)]
    )


def ensemble_linear_repeated_ref(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none"
) -> Tensor:
    """Speed baseline: the shared input repeated E times, then one baddbmm (how the reference
    critics run). x `[B, I]`, weight `[E, I, O]`, bias `[E, O]`. Returns `[E, B, O]`."""
    x_rep = x.unsqueeze(0).repeat(weight.shape[0], 1, 1)  # [E, B, I], materialised
    return activation_ref(torch.baddbmm(bias.unsqueeze(1), x_rep, weight), activation)


# ----------------------------------------------------------------------------- critic loss


def critic_q_ref(
    obs: Tensor, act: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]
) -> Tensor:
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

BUFFER_FIELDS = ("obs", "act", "rew", "next_obs", "done")
_MASK64 = (1 << 64) - 1


class RingBufferRef:
    """Plain numpy FIFO ring buffer: the specification of `eor.ReplayBuffer`'s storage.

    One float32 array per field, `[capacity, ...]`. Row r of an add goes to slot `position`,
    which then advances modulo capacity; `len` grows to capacity and stays there. Rows with a
    NaN or inf in any field are rejected (ValueError) or, with `drop_nonfinite`, skipped.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.data = {
            "obs": np.zeros((capacity, obs_dim), np.float32),
            "act": np.zeros((capacity, act_dim), np.float32),
            "rew": np.zeros((capacity,), np.float32),
            "next_obs": np.zeros((capacity, obs_dim), np.float32),
            "done": np.zeros((capacity,), np.float32),
        }
        self.size = 0
        self.position = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, rew, next_obs, done, drop_nonfinite: bool = False) -> int:
        rows = {
            "obs": np.asarray(obs, np.float32).reshape(-1, self.obs_dim),
            "act": np.asarray(act, np.float32).reshape(-1, self.act_dim),
            "rew": np.asarray(rew, np.float32).reshape(-1),
            "next_obs": np.asarray(next_obs, np.float32).reshape(-1, self.obs_dim),
            "done": np.asarray(done, np.float32).reshape(-1),
        }
        finite = np.ones(len(rows["obs"]), bool)
        for v in rows.values():
            finite &= np.isfinite(v.reshape(len(finite), -1)).all(axis=1) if v.size else True
        if not finite.all() and not drop_nonfinite:
            raise ValueError(f"{int((~finite).sum())} rows contain NaN or inf")
        m = int(finite.sum())
        slots = (self.position + np.arange(m)) % self.capacity  # row r goes to position + r
        last = slice(max(m - self.capacity, 0), m)  # earlier rows would be overwritten anyway
        for k in BUFFER_FIELDS:
            self.data[k][slots[last]] = rows[k][finite][last]
        self.position = (self.position + m) % self.capacity
        self.size = min(self.size + m, self.capacity)
        return m

    @classmethod
    def from_arrays(cls, obs, act, rew, next_obs, done) -> RingBufferRef:
        """A full buffer (capacity = n) whose field arrays are float32 copies of the inputs."""
        obs = np.asarray(obs, np.float32)
        ref = cls(len(obs), obs.shape[1], np.shape(act)[1])
        for k, v in zip(BUFFER_FIELDS, (obs, act, rew, next_obs, done), strict=True):
            ref.data[k][...] = np.asarray(v, np.float32).reshape(ref.data[k].shape)
        ref.size = len(obs)
        return ref

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Per-field fancy indexing of slots `idx` (each in [0, len))."""
        assert np.all((idx >= 0) & (idx < self.size))
        return {k: v[idx] for k, v in self.data.items()}

    def sample(
        self, batch_size: int, rng: np.random.Generator, replace: bool = False
    ) -> dict[str, np.ndarray]:
        """numpy's own sampler: `rng.choice(len, batch_size, replace)` then `gather`."""
        return self.gather(rng.choice(self.size, batch_size, replace=replace))

    @staticmethod
    def sample_mixed(
        buffers: Sequence[RingBufferRef], counts: Sequence[int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Benchmark baseline (a): per buffer and per field fancy indexing, then np.concatenate."""
        parts = [b.sample(n, rng) for b, n in zip(buffers, counts, strict=True)]
        return {k: np.concatenate([p[k] for p in parts]) for k in BUFFER_FIELDS}


class TorchBufferRef:
    """Benchmark baseline (b): the reference implementation's way of storing and sampling.

    One torch tensor per field; distinct indices from `Generator.choice(len, B, replace=False)`;
    each tensor indexed with them; a mixed batch is `torch.cat` of the per-buffer batches.
    """

    def __init__(self, fields: dict[str, np.ndarray]) -> None:
        self.data = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}
        self.size = len(self.data["obs"])

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, Tensor]:
        idx = torch.from_numpy(rng.choice(self.size, batch_size, replace=False))
        return {k: v[idx] for k, v in self.data.items()}

    @staticmethod
    def sample_mixed(
        buffers: Sequence[TorchBufferRef], counts: Sequence[int], rng: np.random.Generator
    ) -> dict[str, Tensor]:
        parts = [b.sample(n, rng) for b, n in zip(buffers, counts, strict=True)]
        return {k: torch.cat([p[k] for p in parts]) for k in BUFFER_FIELDS}


class Xoshiro256Ref:
    """Pure-Python model of the buffer's generator (csrc/include/eor/random.hpp).

    splitmix64 seeding, xoshiro256** outputs, Lemire's bounded integers, and the sparse
    Fisher-Yates draw of k distinct integers. Same seed, same stream as the C++ code.
    """

    def __init__(self, seed: int = 0, state: Sequence[int] | None = None) -> None:
        if state is not None:
            self.s = [int(w) & _MASK64 for w in state]
            return
        x, self.s = seed & _MASK64, []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & _MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & _MASK64

    def next(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & _MASK64, 7) * 9) & _MASK64
        t = (s[1] << 17) & _MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def bounded(self, n: int) -> int:
        """Uniform in [0, n): high word of next() · n, rejecting low words below 2^64 mod n."""
        m = self.next() * n
        if (m & _MASK64) < n:
            threshold = (1 << 64) % n
            while (m & _MASK64) < threshold:
                m = self.next() * n
        return m >> 64

    def distinct(self, n: int, k: int) -> list[int]:
        """k distinct integers from [0, n) in uniformly random order.

        2k <= n: draw `bounded(n)` until the value is new (rejection). Otherwise: k steps of a
        Fisher-Yates shuffle of range(n).
        """
        out: list[int] = []
        if 2 * k <= n:
            seen: set[int] = set()
            for _ in range(k):
                r = self.bounded(n)
                while r in seen:
                    r = self.bounded(n)
                seen.add(r)
                out.append(r)
            return out
        moved: dict[int, int] = {}  # the shuffled array, where it differs from the identity
        for i in range(k):
            j = i + self.bounded(n - i)
            out.append(moved.get(j, j))
            moved[j] = moved.get(i, i)
        return out

    def indices(self, n: int, k: int, replace: bool = False) -> list[int]:
        """The slots `eor.ReplayBuffer.sample(k)` reads from a buffer holding n rows."""
        return [self.bounded(n) for _ in range(k)] if replace else self.distinct(n, k)


# ============================================================================ dynamics model
# (per-member-loop reference of SPEC section 2; owned by eor/dynamics)


class DynamicsMemberRef(torch.nn.Module):
    """One dynamics member as the reference code runs it: nn.Linear layers, SiLU, two heads.

    `S+A -> H (x num_hidden, SiLU) -> mean [D]` and `-> raw logvar [D]`.
    """

    mean_head: torch.nn.Linear
    logvar_head: torch.nn.Linear

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 200, num_hidden: int = 4
    ) -> None:
        super().__init__()
        sizes = [in_dim] + [hidden_dim] * num_hidden
        self.hidden = torch.nn.ModuleList(
            torch.nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.mean_head = torch.nn.Linear(hidden_dim, out_dim)
        self.logvar_head = torch.nn.Linear(hidden_dim, out_dim)
        for layer in [*self.hidden, self.mean_head, self.logvar_head]:
            std = 1.0 / (2.0 * layer.in_features**0.5)
            torch.nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
            torch.nn.init.zeros_(layer.bias)

    def layers(self) -> list[torch.nn.Linear]:
        """The hidden layers, typed (a ModuleList yields plain Modules)."""
        return [layer for layer in self.hidden if isinstance(layer, torch.nn.Linear)]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers():
            x = F.silu(layer(x))
        return self.mean_head(x), self.logvar_head(x)


class DynamicsEnsembleRef(torch.nn.Module):
    """SPEC 2 ensemble as a Python loop over E separate member modules (the speed baseline).

    Inputs here are already normalised (`input_mean`/`input_std` buffers hold the statistics).
    """

    input_mean: Tensor
    input_std: Tensor
    elites: Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_members: int = 7,
        num_elites: int = 5,
        hidden_dim: int = 200,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim, self.out_dim = obs_dim, act_dim, obs_dim + 1
        self.num_members, self.num_elites = num_members, num_elites
        self.members = torch.nn.ModuleList(
            DynamicsMemberRef(obs_dim + act_dim, obs_dim + 1, hidden_dim)
            for _ in range(num_members)
        )
        self.max_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), 0.5))
        self.min_logvar = torch.nn.Parameter(torch.full((obs_dim + 1,), -10.0))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(num_elites))

    def member_modules(self) -> list[DynamicsMemberRef]:
        return [m for m in self.members if isinstance(m, DynamicsMemberRef)]

    def load_stacked(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Copy stacked `[E, I, O]` weights (head `[E, H, 2D]`: mean half, then logvar half)."""
        d = self.out_dim
        with torch.no_grad():
            for e, member in enumerate(self.member_modules()):
                for layer, w, b in zip(member.layers(), weights[:-1], biases[:-1], strict=True):
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
        for e, member in enumerate(self.member_modules()):
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
        for member in self.member_modules():
            for layer, decay in zip(member.layers(), decays, strict=True):
                groups.append({"params": [layer.weight], "weight_decay": decay * l2_reg_multiplier})
                no_decay.append(layer.bias)
            for head in (member.mean_head, member.logvar_head):
                groups.append({"params": [head.weight], "weight_decay": 1e-4 * l2_reg_multiplier})
                no_decay.append(head.bias)
        groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=lr)

    def train_epoch(
        self,
        x_norm: Tensor,
        target: Tensor,
        order: Tensor,
        optimizer: torch.optim.Optimizer,
        batch_size: int = 256,
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
            losses.append(float(loss.detach()))
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
        slots = torch.randint(
            self.num_elites, (obs.shape[0],), generator=generator, device=obs.device
        )
        members = self.elites[slots]
        picked = samples[members, torch.arange(obs.shape[0], device=obs.device)]  # [B, D]
        return obs + picked[:, : self.obs_dim], picked[:, self.obs_dim], members, noise


def dynamics_sample_ref(mean: Tensor, logvar: Tensor, noise: Tensor) -> Tensor:
    """Gaussian sample mean + exp(logvar/2)·noise (all the same shape)."""
    return mean + torch.exp(0.5 * logvar) * noise


def fit_dynamics_ref(
    model: DynamicsEnsembleRef,
    train_x: Tensor,
    train_y: Tensor,
    holdout_x: Tensor,
    holdout_y: Tensor,
    bootstrap: Tensor,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    l2_reg_multiplier: float = 1.0,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Train `epochs` epochs as the reference does, keeping each member's best weights.

    Inputs are normalised; `bootstrap` `[E, N]` holds each member's resampled row indices, and
    each epoch visits them in a fresh random order (argsort of uniform noise from `generator`).
    A member's weights are saved when its holdout MSE improves by more than 1 % (the first
    comparison is against the untrained model) and restored at the end. No early stop, no lr
    drop: a fixed budget, for like-for-like comparisons. Returns (final holdout MSE per member,
    seconds per epoch including its holdout evaluation). `on_epoch(epoch)` runs after each
    epoch, outside the timing (a benchmark interleaves the other provider's epochs there).
    """
    import copy
    import time

    optimizer = model.make_optimizer(lr, l2_reg_multiplier)
    best = model.holdout_mse(holdout_x, holdout_y).tolist()
    saved = [copy.deepcopy(m.state_dict()) for m in model.member_modules()]
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.argsort(torch.rand(bootstrap.shape, generator=generator), dim=1)
        model.train_epoch(train_x, train_y, bootstrap.gather(1, perm), optimizer, batch_size)
        mse = model.holdout_mse(holdout_x, holdout_y).tolist()
        for e, member in enumerate(model.member_modules()):
            if (best[e] - mse[e]) / best[e] > 0.01:
                best[e] = mse[e]
                saved[e] = copy.deepcopy(member.state_dict())
        times.append(time.perf_counter() - t0)
        if on_epoch is not None:
            on_epoch(len(times))
    for member, state in zip(model.member_modules(), saved, strict=True):
        member.load_state_dict(state)
    return model.holdout_mse(holdout_x, holdout_y).tolist(), times


# ============================================================================ RAVL agent
# (plain autograd reference update of SPEC section 3; owned by eor/agent)
#
# CORL's EDAC as RAVL adapted it (agent_training/agent.py of the RAVL code), restyled: nn.Module
# critics fed an input repeated per critic, torch.distributions for the policy, autograd double
# backward for the diversity term, the logging-only q_random_std pass and .item() syncs on every
# update. Two additions so that `eor.agent.RAVL` can be checked against it draw for draw: every
# random draw takes an explicit torch.Generator, and the critics can load stacked tensors.


class ActorRef(torch.nn.Module):
    """Tanh-Gaussian actor exactly as the reference (parameter names included)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, max_action: float = 1.0):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden_dim, hidden_dim),
            torch.nn.ReLU(),
        )
        self.mu = torch.nn.Linear(hidden_dim, act_dim)
        self.log_sigma = torch.nn.Linear(hidden_dim, act_dim)
        for layer in self.trunk:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.constant_(layer.bias, 0.1)
        for head in (self.mu, self.log_sigma):
            torch.nn.init.uniform_(head.weight, -1e-3, 1e-3)
            torch.nn.init.uniform_(head.bias, -1e-3, 1e-3)
        self.act_dim = act_dim
        self.max_action = max_action

    def forward(
        self,
        state: Tensor,
        deterministic: bool = False,
        need_log_prob: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        hidden = self.trunk(state)
        mu, log_sigma = self.mu(hidden), self.log_sigma(hidden)
        log_sigma = torch.clip(log_sigma, -5, 2)
        policy_dist = torch.distributions.Normal(mu, torch.exp(log_sigma))
        if deterministic:
            action = mu
        else:  # = policy_dist.rsample(), with the noise from `generator`
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            action = mu + torch.exp(log_sigma) * eps
        tanh_action, log_prob = torch.tanh(action), None
        if need_log_prob:
            log_prob = policy_dist.log_prob(action).sum(dim=-1)
            log_prob = log_prob - torch.log(1 - tanh_action.pow(2) + 1e-6).sum(dim=-1)
        return tanh_action * self.max_action, log_prob


class VectorizedLinearRef(torch.nn.Module):
    """x `[N, B, I]` @ W `[N, I, O]` + b `[N, 1, O]`; per-member kaiming init as the reference."""

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = torch.nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        for member in range(ensemble_size):
            torch.nn.init.kaiming_uniform_(self.weight[member], a=5**0.5)
        bound = 1 / out_features**0.5  # torch's fan_in of an [I, O] slice is O
        torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight + self.bias


class VectorizedCriticRef(torch.nn.Module):
    """N critics concat(s, a) -> H -> H -> H -> 1, the input repeated once per critic."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int, num_critics: int):
        super().__init__()
        self.critic = torch.nn.Sequential(
            VectorizedLinearRef(obs_dim + act_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, hidden_dim, num_critics),
            torch.nn.ReLU(),
            VectorizedLinearRef(hidden_dim, 1, num_critics),
        )
        self.layers = [m for m in self.critic if isinstance(m, VectorizedLinearRef)]
        with torch.no_grad():
            for layer in self.layers:
                torch.nn.init.constant_(layer.bias, 0.1)
            torch.nn.init.uniform_(self.layers[-1].weight, -3e-3, 3e-3)
            torch.nn.init.uniform_(self.layers[-1].bias, -3e-3, 3e-3)
        self.num_critics = num_critics

    @torch.no_grad()
    def load_stacked(self, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
        """Copy in eor's layout: weights[l] `[N, I, O]`, biases[l] `[N, O]`."""
        for layer, w, b in zip(self.layers, weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b.unsqueeze(1))

    def forward(self, state: Tensor, action: Tensor) -> Tensor:
        """state `[B, S]` or `[N, B, S]`, action likewise -> Q `[N, B]`."""
        state_action = torch.cat([state, action], dim=-1)
        if state_action.dim() != 3:
            state_action = state_action.unsqueeze(0).repeat_interleave(self.num_critics, dim=0)
        return self.critic(state_action).squeeze(-1)


def soft_update_ref(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


class RAVLRef:
    """The reference SAC-N + EDAC update (SPEC 3 order: α, actor, critic, Polyak).

    All draws come from `generator`, in this order: α-step ε `[B, A]`, actor-step ε, target ε
    (at s′), then the uniform actions of q_random_std.
    """

    def __init__(
        self,
        actor: ActorRef,
        critic: VectorizedCriticRef,
        *,
        gamma: float = 0.99,
        tau: float = 5e-3,
        eta: float = 1.0,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        target_entropy: float | None = None,
        generator: torch.Generator | None = None,
    ):
        import copy

        self.actor = actor
        self.critic = critic
        with torch.no_grad():
            self.target_critic = copy.deepcopy(critic)
        self.actor_optimizer = torch.optim.Adam(actor.parameters(), lr=actor_lr)
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_lr)
        self.gamma, self.tau, self.eta = gamma, tau, eta
        self.target_entropy = -float(actor.act_dim) if target_entropy is None else target_entropy
        param = next(actor.parameters())
        self.log_alpha = torch.tensor(
            [0.0], dtype=param.dtype, device=param.device, requires_grad=True
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=alpha_lr)
        self.alpha = self.log_alpha.exp().detach()
        self.generator = generator

    def _alpha_loss(self, state: Tensor) -> Tensor:
        with torch.no_grad():
            _, action_log_prob = self.actor(state, need_log_prob=True, generator=self.generator)
        return (-self.log_alpha * (action_log_prob + self.target_entropy)).mean()

    def _actor_loss(self, state: Tensor) -> tuple[Tensor, float, float, float]:
        action, action_log_prob = self.actor(state, need_log_prob=True, generator=self.generator)
        q_value_dist = self.critic(state, action)
        q_value_min = q_value_dist.min(0).values
        q_value_std = q_value_dist.std(0).mean().item()
        batch_entropy = -action_log_prob.mean().item()
        q_value_mean = q_value_dist.mean().item()
        loss = (self.alpha * action_log_prob - q_value_min).mean()
        return loss, batch_entropy, q_value_std, q_value_mean

    def _critic_diversity_loss(self, state: Tensor, action: Tensor) -> Tensor:
        num_critics = self.critic.num_critics
        state = state.unsqueeze(0).repeat_interleave(num_critics, dim=0)  # [N, B, S]
        action = action.unsqueeze(0).repeat_interleave(num_critics, dim=0).requires_grad_(True)
        q_ensemble = self.critic(state, action)  # [N, B]
        (q_action_grad,) = torch.autograd.grad(
            q_ensemble.sum(), action, retain_graph=True, create_graph=True
        )  # [N, B, A]
        q_action_grad = q_action_grad / (
            torch.norm(q_action_grad, p=2, dim=2).unsqueeze(-1) + 1e-10
        )
        q_action_grad = q_action_grad.transpose(0, 1)  # [B, N, A]
        masks = (
            torch.eye(num_critics, dtype=state.dtype, device=state.device)
            .unsqueeze(0)
            .repeat(q_action_grad.shape[0], 1, 1)
        )
        q_action_grad = q_action_grad @ q_action_grad.permute(0, 2, 1)  # [B, N, N]
        q_action_grad = (1 - masks) * q_action_grad
        return q_action_grad.sum(dim=(1, 2)).mean() / (num_critics - 1)

    def _critic_target(self, reward: Tensor, next_state: Tensor, done: Tensor) -> Tensor:
        """y `[B, 1]` from reward and done `[B, 1]`."""
        with torch.no_grad():
            next_action, next_action_log_prob = self.actor(
                next_state, need_log_prob=True, generator=self.generator
            )
            q_next = self.target_critic(next_state, next_action).min(0).values
            q_next = q_next - self.alpha * next_action_log_prob
            return reward + self.gamma * (1 - done) * q_next.unsqueeze(-1)

    def _critic_loss(
        self, state: Tensor, action: Tensor, reward: Tensor, next_state: Tensor, done: Tensor
    ) -> Tensor:
        q_target = self._critic_target(reward, next_state, done)
        q_values = self.critic(state, action)
        critic_loss = ((q_values - q_target.view(1, -1)) ** 2).mean(dim=1).sum(dim=0)
        if self.eta == 0.0:
            return critic_loss
        return critic_loss + self.eta * self._critic_diversity_loss(state, action)

    def update(self, batch: Sequence[Tensor]) -> dict[str, float]:
        """batch: [state `[B, S]`, action `[B, A]`, reward `[B, 1]`, next_state, done `[B, 1]`]."""
        state, action, reward, next_state, done = batch

        alpha_loss = self._alpha_loss(state)
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.alpha = self.log_alpha.exp().detach()

        actor_loss, batch_entropy, q_policy_std, q_policy_mean = self._actor_loss(state)
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        critic_loss = self._critic_loss(state, action, reward, next_state, done)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()

        with torch.no_grad():
            soft_update_ref(self.target_critic, self.critic, tau=self.tau)
            max_action = self.actor.max_action
            random_actions = -max_action + 2 * max_action * torch.rand(
                action.shape, generator=self.generator, dtype=action.dtype, device=action.device
            )
            q_random_std = self.critic(state, random_actions).std(0).mean().item()

        return {
            "alpha_loss": alpha_loss.item(),
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "batch_entropy": batch_entropy,
            "alpha": self.alpha.item(),
            "q_policy_mean": q_policy_mean,
            "q_policy_std": q_policy_std,
            "q_random_std": q_random_std,
        }


def sample_mixed_ref(
    buffers: Sequence[dict[str, object]], counts: Sequence[int], rng: object, device: str = "cpu"
) -> list[Tensor]:
    """The reference's batch: per buffer `rng.choice(len, n, replace=False)` (numpy Generator),
    gathered and concatenated, as [state, action, reward `[B, 1]`, next_state, done `[B, 1]`].

    buffers: dicts of numpy arrays with keys obs, act, rew, next_obs, done (rows = transitions).
    """
    import numpy as np

    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for buf, n in zip(buffers, counts, strict=True):
        size = len(buf["obs"])  # type: ignore[arg-type]
        idx = rng.choice(size, size=n, replace=False)  # type: ignore[attr-defined]
        for i, key in enumerate(("obs", "act", "rew", "next_obs", "done")):
            parts[i].append(np.asarray(buf[key])[idx])
    out = [torch.as_tensor(np.concatenate(p), device=device) for p in parts]
    out[2] = out[2].reshape(-1, 1)
    out[4] = out[4].reshape(-1, 1)
    return out
