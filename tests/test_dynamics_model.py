"""docs/algorithm.md §2 pieces of the dynamics ensemble: init, bounds, loss, weight decay, normaliser, step."""

from __future__ import annotations

import math

import pytest
import torch

from eor import ref
from eor.dynamics.model import (
    DynamicsEnsemble,
    Normalizer,
    bound_logvar,
    gaussian_nll_loss,
)

S, A = 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _never_done(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


def _model(**kw) -> DynamicsEnsemble:
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("termination_fn", _never_done)
    return DynamicsEnsemble(S, A, **kw)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    diff = (a - b).abs()
    tol = atol + rtol * b.abs()
    worst = int(torch.argmax(diff - tol))
    assert bool((diff <= tol).all()), (
        f"max diff {float(diff.flatten()[worst])} at flat index {worst}: "
        f"{float(a.flatten()[worst])} vs {float(b.flatten()[worst])}"
    )


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("seeded", [False, True])
def test_init_statistics(seeded: bool) -> None:
    gen = torch.Generator().manual_seed(3) if seeded else None
    model = DynamicsEnsemble(11, 6, num_members=7, hidden_dim=200, generator=gen)
    shapes = [(7, 17, 200), (7, 200, 200), (7, 200, 200), (7, 200, 200), (7, 200, 24)]
    assert [tuple(w.shape) for w in model.weights] == shapes
    assert [tuple(b.shape) for b in model.biases] == [(7, s[2]) for s in shapes]
    # The std of N(0, σ²) truncated at ±2σ is σ·sqrt(1 − 4φ(2)/(Φ(2) − Φ(−2))) ≈ 0.8796σ.
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    trunc_factor = math.sqrt(1 - 4 * phi2 / mass)
    for w in [p.detach() for p in model.weights]:
        sigma = 1.0 / (2.0 * math.sqrt(w.shape[1]))
        assert float(w.abs().max()) <= 2 * sigma + 1e-7
        assert abs(float(w.mean())) < 0.02 * sigma
        assert float(w.std()) == pytest.approx(trunc_factor * sigma, rel=0.03)
        # the mass near the cut is not zero: it really is a ±2σ truncation, not a narrower one
        assert float(w.abs().max()) > 1.9 * sigma
    for b in model.biases:
        assert torch.count_nonzero(b) == 0
    assert torch.equal(model.max_logvar.data, torch.full((12,), 0.5))
    assert torch.equal(model.min_logvar.data, torch.full((12,), -10.0))
    # members differ
    assert not torch.equal(model.weights[1][0], model.weights[1][1])


def test_seeded_init_is_reproducible() -> None:
    a = _model(generator=torch.Generator().manual_seed(1))
    b = _model(generator=torch.Generator().manual_seed(1))
    c = _model(generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights, strict=True))
    assert not torch.equal(a.weights[0], c.weights[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_elites": 8, "num_members": 7}, "num_elites must be <= num_members"),
        ({"num_members": 0}, "num_members must be a positive integer"),
        ({"hidden_dim": -3}, "hidden_dim must be a positive integer"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


# ----------------------------------------------------------------------------- bounds and loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("raw", [-30.0, -10.5, -2.0, 0.0, 0.4, 3.0, 40.0])
def test_bound_logvar_by_hand(raw: float) -> None:
    mx, mn = 0.5, -10.0
    step1 = mx - _softplus(mx - raw)
    expected = mn + _softplus(step1 - mn)
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    got = bound_logvar(t(raw), t(mx), t(mn))
    assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # strictly above min; at most a hair above max (the second softplus adds ≤ e^{-(max-min)})
    assert mn < float(got) < mx + math.exp(-(mx - mn))
    # agrees with the reference op
    got_ref = ref.bound_logvar_ref(t(raw), t(mx), t(mn))
    assert float(got_ref) == pytest.approx(expected, rel=1e-12)


def test_loss_hand_computed() -> None:
    # E = 2 members, B = 2 rows, D = 1 dim.
    mean = torch.tensor([[[1.0], [0.0]], [[2.0], [-1.0]]])
    logvar = torch.tensor([[[0.0], [math.log(2.0)]], [[-1.0], [1.0]]])
    target = torch.tensor([[[0.0], [2.0]], [[2.0], [1.0]]])
    max_lv = torch.tensor([0.5])
    min_lv = torch.tensor([-10.0])
    # member 0: rows (0 + 1·1) and (ln2 + 4/2) -> mean = (1 + ln2 + 2)/2
    m0 = (1.0 + math.log(2.0) + 2.0) / 2
    # member 1: rows (−1 + 0) and (1 + 4·e^{−1}) -> mean = (−1 + 1 + 4/e)/2
    m1 = (0.0 + 4.0 * math.exp(-1.0)) / 2
    expected = m0 + m1 + 0.01 * 0.5 - 0.01 * (-10.0)
    got = gaussian_nll_loss(mean, logvar, target, max_lv, min_lv)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    ref_model = ref.DynamicsEnsembleRef(0, 1, num_members=2, num_elites=1, hidden_dim=2)
    with torch.no_grad():
        ref_model.max_logvar.fill_(0.5)
        ref_model.min_logvar.fill_(-10.0)
    assert float(ref_model.loss(mean, logvar, target).detach()) == pytest.approx(expected, rel=1e-6)


def test_forward_loss_and_grads_match_per_member_reference() -> None:
    model = _model(num_members=4, num_elites=2, hidden_dim=12).double()
    ref_model = ref.DynamicsEnsembleRef(S, A, num_members=4, num_elites=2, hidden_dim=12).double()
    ref_model.load_stacked([w.detach() for w in model.weights], [b.detach() for b in model.biases])
    x = torch.randn(4, 9, S + A, dtype=torch.float64)  # each member its own batch
    y = torch.randn(4, 9, S + 1, dtype=torch.float64)
    mean, logvar = model(x)
    mean_r, logvar_r = ref_model(x)
    _close(mean, mean_r, 1e-12, 1e-12)
    _close(logvar, logvar_r, 1e-12, 1e-12)
    model.loss(mean, logvar, y).backward()
    ref_model.loss(mean_r, logvar_r, y).backward()
    for e in range(4):
        member = ref_model.members[e]
        for layer_index, layer in enumerate(member.hidden):
            _close(model.weights[layer_index].grad[e], layer.weight.grad.T, 1e-10, 1e-9)
            _close(model.biases[layer_index].grad[e], layer.bias.grad, 1e-10, 1e-9)
        _close(model.weights[-1].grad[e, :, : S + 1], member.mean_head.weight.grad.T, 1e-10, 1e-9)
        _close(model.weights[-1].grad[e, :, S + 1 :], member.logvar_head.weight.grad.T, 1e-10, 1e-9)
    _close(model.max_logvar.grad, ref_model.max_logvar.grad, 1e-10, 1e-9)
    _close(model.min_logvar.grad, ref_model.min_logvar.grad, 1e-10, 1e-9)


# ----------------------------------------------------------------------------- weight decay


@pytest.mark.parametrize("mult", [1.0, 2.5])
def test_weight_decay_groups(mult: float) -> None:
    model = _model()
    groups = model.param_groups(mult)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    # every parameter is in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters())) == len(decay_of)
    expected = [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
    for w, d in zip(model.weights, expected, strict=True):
        assert decay_of[id(w)] == pytest.approx(d * mult, rel=1e-12)
    for p in [*model.biases, model.max_logvar, model.min_logvar]:
        assert decay_of[id(p)] == 0.0


def test_weight_decay_is_coupled_l2() -> None:
    """Adam(weight_decay=λ) on the weights equals plain Adam on loss + Σ λ/2 ‖W‖² (coupled L2)."""
    torch.manual_seed(1)
    a = _model(num_members=3, num_elites=2).double()
    b = _model(num_members=3, num_elites=2).double()
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.param_groups(3.0), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    decays = [g["weight_decay"] for g in a.param_groups(3.0)][:5]
    x = torch.randn(3, 8, S + A, dtype=torch.float64)
    y = torch.randn(3, 8, S + 1, dtype=torch.float64)
    for _ in range(3):
        opt_a.zero_grad()
        a.loss(*a(x), y).backward()
        opt_a.step()
        opt_b.zero_grad()
        l2 = sum(0.5 * d * w.pow(2).sum() for w, d in zip(b.weights, decays, strict=True))
        (b.loss(*b(x), y) + l2).backward()
        opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        _close(pa.detach(), pb.detach(), 1e-12, 1e-9)
    # and the decay did something: without it the weights differ
    assert decays[0] > 0


def test_bad_l2_multiplier() -> None:
    with pytest.raises(ValueError, match="l2_reg_multiplier"):
        _model().param_groups(-1.0)


# ----------------------------------------------------------------------------- normaliser


def test_normalizer_statistics_clip_and_constant_columns() -> None:
    x = (
        torch.randn(1000, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 1.0]).double()
        + 2.0
    )
    x[:, 3] = 7.0  # a constant column: std 0 -> 1
    norm = Normalizer(4).double().fit(x)
    _close(norm.mean, x.mean(0), 1e-12, 1e-12)
    expected_std = x.std(0, unbiased=False)
    expected_std[3] = 1.0
    _close(norm.std, expected_std, 1e-12, 1e-12)
    out = norm(x)
    _close(out[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), 1e-9, 0)
    _close(out[:, 3], torch.zeros(1000, dtype=torch.float64), 0, 0)
    big = norm(torch.tensor([[1e6, -1e6, 2.0, 7.0]], dtype=torch.float64))
    assert big.tolist() == [[10.0, -10.0, float((2.0 - norm.mean[2]) / norm.std[2]), 0.0]]


def test_normalizer_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \[N > 0, 4\]"):
        Normalizer(4).fit(torch.zeros(10, 3))


# ----------------------------------------------------------------------------- step


def _trained_looking_model(num_members: int = 7, num_elites: int = 5) -> DynamicsEnsemble:
    model = _model(num_members=num_members, num_elites=num_elites)
    with torch.no_grad():  # non-trivial biases and bounds, so that members really differ
        for b in model.biases:
            b.normal_(0.0, 0.3)
        model.max_logvar.fill_(0.2)
        model.normalizer.mean.normal_()
        model.normalizer.std.uniform_(0.5, 2.0)
    if num_members == 7:
        model.set_elites([6, 0, 3, 4, 1][:num_elites])
    return model


def test_step_matches_full_forward_with_same_choices_and_noise() -> None:
    model = _trained_looking_model()
    ref_model = ref.DynamicsEnsembleRef(S, A, num_members=7, num_elites=5, hidden_dim=16)
    ref_model.load_stacked([w.detach() for w in model.weights], [b.detach() for b in model.biases])
    with torch.no_grad():
        ref_model.max_logvar.copy_(model.max_logvar)
        ref_model.min_logvar.copy_(model.min_logvar)
        ref_model.input_mean.copy_(model.normalizer.mean)
        ref_model.input_std.copy_(model.normalizer.std)
        ref_model.elites.copy_(model.elites)
    n = 300
    obs, act = torch.randn(n, S), torch.randn(n, A)
    next_obs, reward, done = model.step(obs, act, torch.Generator().manual_seed(5))
    # Replay the generator: elite slots first, then the chosen rows' noise.
    g = torch.Generator().manual_seed(5)
    members = model.elites[torch.randint(5, (n,), generator=g)]
    noise = torch.randn(n, S + 1, generator=g)
    # Full-forward path of docs/algorithm.md §2: every member predicts and samples; member members[b]'s noise
    # at row b is the noise the gathered path drew for row b.
    full_noise = torch.randn(7, n, S + 1)
    full_noise[members, torch.arange(n)] = noise
    mean, logvar = ref_model(ref_model.normalize(torch.cat([obs, act], -1)))  # [E, B, D]
    samples = ref.dynamics_sample_ref(mean, logvar, full_noise)
    picked = samples[members, torch.arange(n)]
    _close(next_obs, obs + picked[:, :S], 1e-5, 1e-5)
    _close(reward, picked[:, S], 1e-5, 1e-5)
    assert done.dtype == torch.bool and done.shape == (n,) and not done.any()
    # and the same seed gives the same transition
    again = model.step(obs, act, torch.Generator().manual_seed(5))
    assert torch.equal(again[0], next_obs) and torch.equal(again[1], reward)
    other = model.step(obs, act, torch.Generator().manual_seed(6))
    assert not torch.equal(other[0], next_obs)


def test_step_elite_choice_is_uniform_over_elites_only() -> None:
    """With zero variance, each row's output identifies its member: count the choices."""
    model = _trained_looking_model()
    with torch.no_grad():
        model.max_logvar.fill_(-60.0)  # std ≈ e^{-30}: the sample is the mean
        model.min_logvar.fill_(-70.0)
        for e in range(7):  # member e predicts reward e exactly (head bias, zero head weights)
            model.weights[-1][e].zero_()
            model.biases[-1][e, S] = float(e)
    n = 35_000
    obs, act = torch.zeros(n, S), torch.zeros(n, A)
    _, reward, _ = model.step(obs, act, torch.Generator().manual_seed(0))
    chosen = reward.round().long()
    counts = torch.bincount(chosen, minlength=7).double()
    assert counts[[2, 5]].sum() == 0  # non-elites are never used
    elite_counts = counts[model.elites]
    expected = n / 5
    chi2 = float(((elite_counts - expected) ** 2 / expected).sum())
    assert chi2 < 23.5  # chi-square with 4 dof: p ≈ 1e-4


def test_step_gaussian_sample_moments() -> None:
    model = _trained_looking_model(num_members=1, num_elites=1)
    obs = torch.randn(1, S).expand(40_000, S).contiguous()
    act = torch.randn(1, A).expand(40_000, A).contiguous()
    next_obs, reward, _ = model.step(obs, act, torch.Generator().manual_seed(1))
    mean, logvar = model.predict(obs[:1], act[:1])  # [1, 1, D]
    out = torch.cat([next_obs - obs, reward[:, None]], 1)
    _close(out.mean(0), mean[0, 0], 0.03, 0.0)
    _close(out.std(0), torch.exp(0.5 * logvar[0, 0]), 0.0, 0.03)


def test_step_applies_termination_function() -> None:
    model = _trained_looking_model()
    calls = []

    def fn(next_obs: torch.Tensor) -> torch.Tensor:
        calls.append(next_obs)
        return next_obs[:, 0] > 0

    model._termination_fn = fn
    next_obs, _, done = model.step(
        torch.randn(50, S), torch.randn(50, A), torch.Generator().manual_seed(0)
    )
    assert len(calls) == 1 and torch.equal(calls[0], next_obs)
    assert torch.equal(done, next_obs[:, 0] > 0)


def test_step_uses_env_termination_from_registry() -> None:
    from eor.envs import get_env

    spec = get_env("hopper")
    model = DynamicsEnsemble(spec.obs_dim, spec.act_dim, hidden_dim=8, env_name="hopper")
    obs = torch.zeros(64, spec.obs_dim)
    obs[:, 0] = torch.linspace(0.0, 2.0, 64)  # heights on both sides of 0.7
    next_obs, _, done = model.step(
        obs, torch.zeros(64, spec.act_dim), torch.Generator().manual_seed(0)
    )
    assert torch.equal(done, spec.termination_fn(next_obs))
    assert done.any() and not done.all()


@pytest.mark.parametrize(
    "obs_shape, act_shape, dtype, match",
    [
        ((4, S + 1), (4, A), torch.float32, "obs must have shape"),
        ((4, S), (3, A), torch.float32, "act must have shape"),
        ((4, S), (4, A), torch.float64, "must be torch.float32"),
    ],
)
def test_step_bad_inputs(
    obs_shape: tuple, act_shape: tuple, dtype: torch.dtype, match: str
) -> None:
    model = _model()
    with pytest.raises(ValueError, match=match):
        model.step(torch.zeros(obs_shape, dtype=dtype), torch.zeros(act_shape, dtype=dtype), None)


@pytest.mark.parametrize("chunk", [1, 7, 50, 2048])
def test_holdout_mse_is_the_mean_squared_error_of_the_means(chunk: int) -> None:
    """Per member, over rows and dims, from the mean half of the head only, in any chunking."""
    torch.manual_seed(0)
    model = _model(num_members=3, num_elites=2).double()
    x = torch.randn(50, S + A, dtype=torch.float64)
    y = torch.randn(50, S + 1, dtype=torch.float64)
    mean, _ = model(x)  # [3, 50, S+1]
    expected = ((mean - y) ** 2).mean(dim=(1, 2)).detach()
    got = model.holdout_mse(x, y, chunk=chunk)
    assert got.dtype == torch.float64 and got.shape == (3,)
    _close(got, expected, 1e-12, 1e-12)


def test_set_elites_validation() -> None:
    model = _model()
    with pytest.raises(ValueError, match="distinct"):
        model.set_elites([0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        model.set_elites([0, 1, 2, 3, 9])


@pytest.mark.parametrize("case", ["plain", "u_threshold", "v_threshold"])
def test_training_loss_closed_form_matches_autograd(case: str) -> None:
    """model.training_loss (closed-form NLL and bounding gradients) equals the autograd loss of
    `loss(*model(x), y)`: value and the gradient of every weight, bias and logvar bound.
    The threshold cases put u = max − raw or v = lv₁ − min just above softplus's threshold
    (20), where autograd's softplus′ is exactly 1 rather than σ(·)."""
    torch.manual_seed(0)
    model = _model(num_members=3, num_elites=2, hidden_dim=10).double()
    twin = _model(num_members=3, num_elites=2, hidden_dim=10).double()
    with torch.no_grad():
        model.max_logvar.uniform_(0.0, 1.0)
        if case == "u_threshold":  # member 1: u ≈ max + 21
            model.biases[-1][1, S + 1 :] = -21.0
            model.min_logvar.fill_(-30.0)
        if case == "v_threshold":  # member 0: lv₁ ≈ max, v ≈ max + 21
            model.biases[-1][0, S + 1 :] = 60.0
            model.min_logvar.fill_(-21.0)
        twin.load_state_dict(model.state_dict())
    x = torch.randn(3, 11, S + A, dtype=torch.float64)
    y = torch.randn(3, 11, S + 1, dtype=torch.float64)
    fused = model.training_loss(x, y)
    expected = twin.loss(*twin(x), y)
    _close(fused.detach(), expected.detach(), 1e-12, 0.0)
    fused.backward()
    expected.backward()
    named = dict(twin.named_parameters())
    # Rounding only: the bound gradients sum terms as large as the largest gradient entry
    # (exp(21) ≈ 1e9 in the u_threshold case) that cancel, so their error scales with that.
    scale = max(float(p.grad.abs().max()) for p in twin.parameters() if p.grad is not None)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        _close(p.grad, named[name].grad, 1e-15 * scale, 1e-10)
