"""Backend dispatch of eor.ops: EOR_BACKEND values, explicit Triton errors, quiet fallback,
the registry used by backend_report, and the torch.library custom-op registration."""

from __future__ import annotations

import logging

import pytest
import torch

from eor import ops, ref
from eor.ops import backend
from tests.helpers import assert_close_verbose


@pytest.fixture
def tensors():
    x = torch.randn(5, 7)
    w = torch.randn(3, 7, 4)
    b = torch.randn(3, 4)
    return x, w, b


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EOR_BACKEND", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(backend, "_TRITON_BROKEN", {})


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, "torch"),
        ("auto", "torch"),
        ("torch", "torch"),
        ("ref", "ref"),
        (" Torch ", "torch"),
        ("", "torch"),
    ],
)
def test_backend_values_on_cpu(monkeypatch, tensors, value, expected) -> None:
    if value is not None:
        monkeypatch.setenv("EOR_BACKEND", value)
    for op in ("ensemble_linear", "ensemble_mlp", "gaussian_ensemble_forward"):
        assert backend._choose_backend(op, tensors[0]) == expected
    assert ops.backend_report("cpu")["ensemble_linear"] == expected


@pytest.mark.parametrize("value", ["torch", "ref", "auto"])
def test_every_backend_computes_the_same(monkeypatch, tensors, value) -> None:
    monkeypatch.setenv("EOR_BACKEND", value)
    x, w, b = (t.clone().requires_grad_(True) for t in tensors)
    y = ops.ensemble_linear(x, w, b, "silu")
    y.sum().backward()
    x2, w2, b2 = (t.clone().requires_grad_(True) for t in tensors)
    y2 = ref.ensemble_linear_ref(x2, w2, b2, "silu")
    y2.sum().backward()
    assert_close_verbose(y, y2, name="y")
    for g, g2 in ((x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)):
        assert_close_verbose(g, g2, name="grad")
    out = ops.ensemble_mlp(x.detach(), [w.detach()], [b.detach()], reduce="min")
    assert_close_verbose(out, ref.ensemble_mlp_ref(x, [w], [b], reduce="min"), name="mlp")


def test_invalid_backend_value(monkeypatch, tensors) -> None:
    monkeypatch.setenv("EOR_BACKEND", "cuda")
    with pytest.raises(ValueError, match="EOR_BACKEND must be one of"):
        ops.ensemble_linear(*tensors)
    report = ops.backend_report("cpu")  # never raises, says why
    assert report["ensemble_linear"].startswith("error: EOR_BACKEND must be one of")


def test_explicit_triton_without_gpu_or_interpreter_raises(monkeypatch, tensors) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET"):
        ops.ensemble_linear(*tensors)
    with pytest.raises(ops.BackendUnavailableError, match="not CUDA"):
        ops.ensemble_mlp(tensors[0], [tensors[1]], [tensors[2]])
    assert "error: EOR_BACKEND=triton" in ops.backend_report("cpu")["ensemble_mlp"]


def test_explicit_triton_with_interpreter_is_chosen(monkeypatch, tensors) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend._choose_backend("ensemble_linear", tensors[0]) == "triton"


def test_explicit_triton_without_the_package(monkeypatch, tensors) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    monkeypatch.setattr(backend, "_triton_importable", lambda: False)
    with pytest.raises(ops.BackendUnavailableError, match="not installed"):
        backend._choose_backend("ensemble_linear", torch.empty(0, device="meta"))


def test_auto_prefers_triton_only_on_cuda(monkeypatch) -> None:
    assert backend._choose_backend_on("ensemble_linear", torch.device("cuda")) == "triton"
    assert backend._choose_backend_on("ensemble_linear", torch.device("cpu")) == "torch"
    monkeypatch.setattr(backend, "_triton_importable", lambda: False)
    assert backend._choose_backend_on("ensemble_linear", torch.device("cuda")) == "torch"


def test_auto_falls_back_with_one_warning_when_triton_fails(monkeypatch, tensors, caplog) -> None:
    """An automatic Triton choice that raises gives the torch result, is remembered, and is
    logged once as a warning with the error."""
    calls: list[str] = []

    def broken_kernels(name: str):
        calls.append(name)
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(backend, "load_kernels", broken_kernels)
    monkeypatch.setattr(
        backend,
        "_choose_backend_on",
        lambda op, device: "torch" if (op, device.type) in backend._TRITON_BROKEN else "triton",
    )
    x, w, b = tensors
    with caplog.at_level(logging.WARNING, logger="eor.ops"):
        out = ops.ensemble_mlp(x, [w], [b], "relu")
        assert_close_verbose(out, ref.ensemble_mlp_ref(x, [w], [b], "relu"), name="fallback")
        assert calls == ["ensemble_mlp"]
        assert "simulated compile failure" in backend._TRITON_BROKEN[("ensemble_mlp", "cpu")]
        ops.ensemble_mlp(x, [w], [b], "relu")
    assert calls == ["ensemble_mlp"]  # not retried
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "ensemble_mlp" in warnings[0].getMessage()
    assert "RuntimeError: simulated compile failure" in warnings[0].getMessage()


def test_explicit_triton_failure_is_not_swallowed(monkeypatch, tensors) -> None:
    monkeypatch.setenv("EOR_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")

    def broken_kernels(name: str):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(backend, "load_kernels", broken_kernels)
    with pytest.raises(RuntimeError, match="simulated kernel failure"):
        ops.ensemble_mlp(tensors[0], [tensors[1]], [tensors[2]])


def test_register_op_and_dispatch_for_other_ops(monkeypatch, tensors) -> None:
    """How another op (the critic loss) joins the dispatch and the report."""
    monkeypatch.setattr(backend, "_REGISTRY", dict(backend._REGISTRY))
    backend.register_op("my_op", triton=False)
    impls = {"torch": lambda: "fast", "ref": lambda: "slow"}
    assert backend._dispatch("my_op", impls, tensors[0]) == "fast"
    monkeypatch.setenv("EOR_BACKEND", "ref")
    assert backend._dispatch("my_op", impls, tensors[0]) == "slow"
    monkeypatch.setenv("EOR_BACKEND", "triton")  # no Triton kernel: torch, said so
    assert backend._dispatch("my_op", impls, tensors[0]) == "fast"
    assert ops.backend_report("cpu")["my_op"] == "torch (no Triton kernel for this op)"
    with pytest.raises(KeyError, match="register it"):
        backend._choose_backend("unknown_op", tensors[0])


def test_cpu_use_works_without_triton() -> None:
    """With triton unimportable the ops run, report torch, and never load eor.kernels.

    (torch itself imports triton when it is installed, e.g. torch._dynamo via torch.library,
    so the check is that eor needs it for nothing on CPU.)"""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch; from eor import ops\n"
        "x = torch.randn(3, 2); w = torch.randn(2, 2, 2); b = torch.randn(2, 2)\n"
        "ops.ensemble_linear(x, w.requires_grad_(), b, 'relu').sum().backward()\n"
        "ops.ensemble_mlp(x, [w], [b], members=torch.tensor([0, 1, 1]))\n"
        "print(any(m.startswith('eor.kernels.') for m in sys.modules),\n"
        "      ops.backend_report('cuda')['ensemble_mlp'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "torch"]


# ----------------------------------------------------------------------------- custom ops


def test_custom_ops_registered_and_opcheck(tensors) -> None:
    x, w, b = tensors
    torch.library.opcheck(torch.ops.eor.ensemble_linear.default, (x, w, b, "silu"))
    torch.library.opcheck(
        torch.ops.eor.ensemble_linear.default,
        (x.requires_grad_(True), w.requires_grad_(True), b, "relu"),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    members = torch.tensor([0, 2, 1, 1, 0])
    torch.library.opcheck(
        torch.ops.eor.ensemble_mlp.default,
        (x.detach(), [w.detach()], [b], "relu", members, None),
        test_utils=("test_schema", "test_faketensor"),
    )
    lo, hi = torch.full((2,), -5.0), torch.full((2,), 0.5)
    torch.library.opcheck(
        torch.ops.eor.gaussian_ensemble_forward.default,
        (x.detach(), [w.detach()], [b], hi, lo, None, "silu"),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_torch_compile_graph_with_custom_ops(tensors) -> None:
    """Under torch.compile the ops appear in the graph as eor custom ops, forward and backward
    agree with eager (backend="eager": no C++ toolchain needed)."""
    x, w, b = tensors
    graphs: list[str] = []

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    def f(x, w, b):
        h = ops.ensemble_linear(x, w, b, "relu")
        return h.sum(-1), ops.ensemble_mlp(x, [w], [b], reduce="min")

    compiled = torch.compile(f, backend=backend, fullgraph=True)
    w1 = w.clone().requires_grad_(True)
    out, low = compiled(x, w1, b)
    out.sum().backward()
    assert any("eor.ensemble_linear" in code for code in graphs)
    assert any("eor.ensemble_mlp" in code for code in graphs)
    w2 = w.clone().requires_grad_(True)
    eager_out, eager_low = f(x, w2, b)
    eager_out.sum().backward()
    assert_close_verbose(out, eager_out, name="compiled")
    assert_close_verbose(low, eager_low, name="compiled min")
    assert_close_verbose(w1.grad, w2.grad, name="compiled dW")


def test_torch_compile_critic_loss_grads_is_one_custom_op() -> None:
    """Under torch.compile ops.critic_loss_grads is the opaque eor::critic_loss_grads node (its
    fake gives the shapes), with eager's values and gradients."""
    from tests.test_ops_critic import make_critics

    obs, act, target, weights, biases = make_critics(3, 5, 2, 9, 7, dtype=torch.float32)
    ws, bs = [w.detach() for w in weights], [b.detach() for b in biases]
    graphs: list[str] = []

    def backend(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    def f(obs, act, target, ws, bs):
        g = ops.critic_loss_grads(obs, act, target, ws, bs, 0.5)
        return g.td + 0.5 * g.diversity, g.q, *g.weight_grads, *g.bias_grads

    compiled = torch.compile(f, backend=backend, fullgraph=True)(obs, act, target, ws, bs)
    eager = f(obs, act, target, ws, bs)
    assert any("eor.critic_loss_grads" in code for code in graphs)
    for got, want in zip(compiled, eager, strict=True):
        assert_close_verbose(got, want, rtol=1e-5, atol=1e-6, name="compiled")


def test_torch_compile_critic_loss_backward_fullgraph() -> None:
    """ops.critic_loss (closed-form loss with a precomputed backward) compiles as one graph,
    backward included, and gives eager's gradients."""
    from tests.test_ops_critic import make_critics

    obs, act, target, weights, biases = make_critics(3, 5, 2, 9, 7, dtype=torch.float32)
    params = weights + biases

    def f(obs, act, target, ws, bs):
        return ops.critic_loss(obs, act, target, ws, bs, 0.5).loss

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    compiled(obs, act, target, weights, biases).backward()
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    f(obs, act, target, weights, biases).backward()
    for g, p in zip(got, params, strict=True):
        assert_close_verbose(g, p.grad, rtol=1e-6, atol=1e-7, name="compiled grad")


# ----------------------------------------------------------------------------- backend_for


def test_backend_for_is_the_public_choice(monkeypatch) -> None:
    assert ops.backend_for("ensemble_linear", "cpu") == "torch"
    assert ops.backend_for("critic_loss_grads", torch.device("cpu")) == "torch"
    assert ops.backend_for("ensemble_mlp", "cuda") == "triton"  # triton is installed here
    monkeypatch.setattr(backend, "_triton_importable", lambda: False)
    assert ops.backend_for("ensemble_mlp", "cuda") == "torch"
    monkeypatch.setenv("EOR_BACKEND", "ref")
    assert ops.backend_for("gaussian_ensemble_forward", "cpu") == "ref"
    monkeypatch.setenv("EOR_BACKEND", "triton")
    with pytest.raises(ops.BackendUnavailableError, match="not installed"):
        ops.backend_for("ensemble_linear", "cpu")
    with pytest.raises(KeyError, match="unknown op"):
        ops.backend_for("no_such_op", "cpu")


def test_no_eor_code_picks_a_path_from_the_report_text() -> None:
    """backend_report is text for people (`eor info`); code asks backend_for."""
    from pathlib import Path

    import eor

    root = Path(eor.__file__).parent
    users = {
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "backend_report(" in p.read_text() and p.name != "backend.py"
    }
    assert users == {"cli.py"}


@pytest.mark.parametrize("op", ["ensemble_linear", "ensemble_mlp"])
def test_float64_never_reaches_a_triton_kernel(monkeypatch, op: str) -> None:
    """The kernels compute in float32: float64 takes the torch path under auto (even where
    Triton would be chosen) and is an error under an explicit EOR_BACKEND=triton."""

    def no_kernels(name: str):
        raise AssertionError(f"a float64 call reached the {name} kernels")

    monkeypatch.setattr(backend, "load_kernels", no_kernels)
    monkeypatch.setattr(backend, "_choose_backend_on", lambda name, device: "triton")
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    w, b = torch.randn(3, 4, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    run = {
        "ensemble_linear": lambda: ops.ensemble_linear(x, w, b, "relu"),
        "ensemble_mlp": lambda: ops.ensemble_mlp(x, [w], [b], "relu"),
    }[op]
    last = "relu" if op == "ensemble_linear" else "none"  # an MLP's last layer is linear
    assert_close_verbose(run(), ref.ensemble_linear_ref(x, w, b, last), name="float64 auto")
    monkeypatch.setenv("EOR_BACKEND", "triton")
    with pytest.raises(ops.BackendUnavailableError, match="float64"):
        run()
