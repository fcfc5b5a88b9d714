"""eor.workspace: reused scratch buffers, and that no scratch buffer escapes a hot path."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

import eor
from eor import ops, workspace
from eor.agent.networks import VectorizedCritic
from eor.ops.critic_closed_form import closed_form_grads


@pytest.fixture(autouse=True)
def _fresh_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EOR_WORKSPACE_MB", raising=False)
    workspace.clear()
    yield
    workspace.clear()


def _scratch_ptrs() -> set[int]:
    return {t.data_ptr() for t in workspace._local.buffers.values()}


def test_same_name_and_shape_reuses_the_buffer() -> None:
    like = torch.zeros(1)
    a = workspace.scratch("t", (3, 4), like)
    b = workspace.scratch("t", (3, 4), like)
    assert a.data_ptr() == b.data_ptr() and a.shape == (3, 4)
    assert workspace.cached_bytes() == 12 * 4
    c = workspace.scratch("t", (5,), like)  # a new shape replaces the old buffer
    assert c.shape == (5,) and workspace.cached_bytes() == 5 * 4
    d = workspace.scratch("t", (5,), torch.zeros(1, dtype=torch.float64))  # and a new dtype
    assert d.dtype == torch.float64 and workspace.cached_bytes() == 5 * 8
    other = workspace.scratch("u", (5,), like)
    assert other.data_ptr() != d.data_ptr()


def test_budget_zero_turns_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_WORKSPACE_MB", "0")
    a = workspace.scratch("t", (1000,), torch.zeros(1))
    b = workspace.scratch("t", (1000,), torch.zeros(1))
    assert a.data_ptr() != b.data_ptr()  # a is alive, so b is a second allocation
    assert workspace.cached_bytes() == 0


def test_buffers_over_the_budget_are_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_WORKSPACE_MB", "0.01")  # 10,485 bytes
    small = workspace.scratch("small", (1000,), torch.zeros(1))  # 4000 bytes: cached
    big = workspace.scratch("big", (3000,), torch.zeros(1))  # 12000 bytes: not cached
    assert workspace.cached_bytes() == 4000
    assert workspace.scratch("small", (1000,), torch.zeros(1)).data_ptr() == small.data_ptr()
    assert "big" not in workspace._local.buffers and big.shape == (3000,)


def test_bad_budget_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOR_WORKSPACE_MB", "lots")
    with pytest.raises(ValueError, match="EOR_WORKSPACE_MB"):
        workspace.scratch("t", (2,), torch.zeros(1))


def test_non_cpu_tensors_are_never_cached() -> None:
    meta = torch.empty(1, device="meta")
    t = workspace.scratch("t", (4, 4), meta)
    assert t.device.type == "meta" and workspace.cached_bytes() == 0


def test_each_thread_has_its_own_buffers() -> None:
    main = workspace.scratch("t", (64,), torch.zeros(1))
    seen: list[int] = []

    def worker() -> None:
        seen.append(workspace.scratch("t", (64,), torch.zeros(1)).data_ptr())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen and seen[0] != main.data_ptr()


def _critic_args(n: int = 3, b: int = 9, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    dims = [5 + 2, 8, 8, 8, 1]
    weights = [
        torch.randn(n, i, o, generator=gen) * 0.5 for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]
    biases = [torch.randn(n, o, generator=gen) * 0.1 for o in dims[1:]]
    obs, act = torch.randn(b, 5, generator=gen), torch.rand(b, 2, generator=gen) * 2 - 1
    target = torch.randn(b, generator=gen)
    return obs, act, target, weights, biases


@pytest.mark.parametrize("with_target", [True, False])
def test_critic_loss_outputs_never_alias_scratch(with_target: bool) -> None:
    obs, act, target, weights, biases = _critic_args()
    tgt = target if with_target else None
    first = closed_form_grads(obs, act, tgt, weights, biases, 0.7)
    kept = [first.q.clone(), *(g.clone() for g in first.weight_grads + first.bias_grads)]
    outputs = [first.q, *first.weight_grads, *first.bias_grads]
    assert workspace.cached_bytes() > 0  # the intermediates went through the cache
    assert not {t.data_ptr() for t in outputs} & _scratch_ptrs()
    # A second call on other data reuses the scratch buffers; the first results stay intact.
    obs2, act2, target2, _, _ = _critic_args(seed=1)
    second = closed_form_grads(obs2, act2, target2 if with_target else None, weights, biases, 0.7)
    for before, now in zip(kept, [first.q, *first.weight_grads, *first.bias_grads], strict=True):
        assert torch.equal(before, now)
    again = closed_form_grads(obs, act, tgt, weights, biases, 0.7)
    for a, b in zip(outputs, [again.q, *again.weight_grads, *again.bias_grads], strict=True):
        assert torch.equal(a, b)  # same inputs, same results through reused buffers
    assert not torch.equal(second.q, first.q)


def test_critic_forwards_outputs_survive_later_calls() -> None:
    critic = VectorizedCritic(5, 2, hidden_dim=8, num_critics=3)
    obs, act, *_ = _critic_args()
    q, q_min, grad = critic.min_q_and_action_grad(obs, act, grouped=True)
    kept = [q.clone(), q_min.clone(), grad.clone()]
    x = torch.cat([obs, act], dim=1)
    ws, bs = critic.params(detach=True)
    full = ops.ensemble_mlp(x, ws, bs, "relu")
    full_kept = full.clone()
    critic.min_q_and_action_grad(obs.flip(0), act.flip(0), grouped=True)
    ops.ensemble_mlp(x.flip(0), ws, bs, "relu")
    for before, now in zip(kept, [q, q_min, grad], strict=True):
        assert torch.equal(before, now)
    assert torch.equal(full_kept, full)
    assert not {t.data_ptr() for t in (q, q_min, grad, full)} & _scratch_ptrs()


# ----------------------------------------------------------------------------- key ownership


def scratch_key_owners(source: str, module: str) -> tuple[dict[str, set[str]], set[str]]:
    """Scratch keys used in `source`: (key prefix -> the functions that use it, functions that
    pass a non-literal key through). A key is the first argument of `scratch(...)` or the
    `scratch_key=` of an op; its prefix is the text before the first "." (an f-string must
    start with literal text). Owners are "module.function"."""
    owners: dict[str, set[str]] = {}
    passthrough: set[str] = set()

    def visit(node: ast.AST, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = f"{module}.{node.name}"
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            keys = [node.args[0]] if name == "scratch" and node.args else []
            keys += [kw.value for kw in node.keywords if kw.arg == "scratch_key"]
            for key in keys:
                if isinstance(key, ast.JoinedStr) and key.values:
                    key = key.values[0]
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    owners.setdefault(key.value.split(".")[0], set()).add(func)
                elif not (isinstance(key, ast.Constant) and key.value is None):
                    passthrough.add(func)
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(ast.parse(source), module)
    return owners, passthrough


def test_key_owner_scan_catches_a_shared_key() -> None:
    source = (
        "def actor(x):\n    return ops.ensemble_linear(x, w, b, scratch_key=f'critic.h{1}')\n"
        "def critic(x):\n    return scratch('critic.h1', (2,), x)\n"
        "def layer(x, key):\n    return scratch(key, (2,), x)\n"
    )
    owners, passthrough = scratch_key_owners(source, "m")
    assert owners == {"critic": {"m.actor", "m.critic"}}
    assert passthrough == {"m.layer"}


def test_every_scratch_key_prefix_has_one_call_site() -> None:
    """A scratch buffer is valid until the next call with its key, so two call sites sharing a
    key would overwrite each other's intermediates (the actor step and the closed-form critic
    loss once shared `critic.h1..h3`). Each key prefix belongs to one function."""
    root = Path(eor.__file__).parent
    owners: dict[str, set[str]] = {}
    passthrough: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        module = ".".join(("eor", *path.relative_to(root).with_suffix("").parts))
        found, through = scratch_key_owners(path.read_text(), module)
        for prefix, funcs in found.items():
            owners.setdefault(prefix, set()).update(funcs)
        passthrough |= through
    shared = {prefix: funcs for prefix, funcs in owners.items() if len(funcs) > 1}
    assert not shared, f"scratch key prefixes used by more than one function: {shared}"
    assert {"critic_closed_form", "actor_step", "ensemble_mlp"} <= set(owners)
    # the one function that takes its key from its caller (ops.ensemble_linear's scratch_key)
    assert passthrough == {"eor.ops.linear._linear_into_scratch"}


def test_scratch_key_is_inference_only() -> None:
    x, w, b = torch.randn(4, 3), torch.randn(2, 3, 5, requires_grad=True), torch.randn(2, 5)
    with pytest.raises(ValueError, match="scratch_key is for inference only"):
        ops.ensemble_linear(x, w, b, "relu", scratch_key="test.h")
    with torch.no_grad():
        y = ops.ensemble_linear(x, w, b, "relu", scratch_key="test.h")
        assert y.data_ptr() == workspace.scratch("test.h", (2, 4, 5), x).data_ptr()
        assert torch.equal(y, ops.ensemble_linear(x, w, b, "relu"))
