"""The launch recorder, the precision policy and the ahead-of-time compile check
(kernels/launch.py, kernels/compile_check.py), on the CPU: no GPU, Triton's bundled ptxas."""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from eor.kernels import compile_check, launch

from eor.ops import backend


@pytest.fixture
def tf32(request: pytest.FixtureRequest):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = request.param
    yield request.param
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("tf32", [False, True], indirect=True)
def test_precision_policy(tf32: bool) -> None:
    expected = "tf32" if tf32 else "ieee"
    assert launch.dot_precision("ensemble_linear", torch.float32) == expected
    assert launch.dot_precision("ensemble_mlp", torch.float32) == expected
    # The critic loss's GEMMs feed the diversity normalisation: IEEE whatever torch allows.
    assert launch.dot_precision("diversity", torch.float32) == "ieee"
    assert launch.dot_precision("ensemble_linear", torch.float64) == "ieee"
    with pytest.raises(ValueError, match="family must be one of"):
        launch.dot_precision("linear", torch.float32)


def test_gemm_tiling() -> None:
    # IEEE dots step over K by 16, TF32 by 32; 64 x 64 tiles get 8 warps.
    def tiling(*args: object) -> tuple[int, ...]:
        t = launch.gemm_tiling(*args)  # type: ignore[arg-type]
        return (t.block_m, t.block_n, t.block_k, t.num_warps, t.num_stages)

    assert tiling(256, 256, 256, "ieee") == (64, 64, 16, 8, 2)
    assert tiling(256, 256, 256, "tf32") == (64, 64, 32, 8, 2)
    assert tiling(7, 1, 3, "ieee") == (16, 16, 16, 4, 2)
    assert tiling(256, 32, 256, "tf32") == (64, 32, 32, 4, 2)
    assert launch.gemm_tiling(256, 256, 256, "tf32", outer_loop=True).num_stages == 1


def test_recording_records_and_does_not_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without TRITON_INTERPRET a launch on CPU tensors would raise: recording must not launch.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernels = backend.load_kernels("ensemble_linear")
    x, w, b = torch.randn(5, 3), torch.randn(2, 3, 4), torch.randn(2, 4)
    with launch.recording("unit") as launches:
        kernels.ensemble_linear_fwd(x, w, b, "silu")
    assert len(launches) == 1
    r = launches[0]
    assert (r.module, r.kernel, r.where) == (
        "ensemble_linear",
        "_ensemble_linear_fwd_kernel",
        "unit",
    )
    sig = dict(r.signature)
    assert sig["X_ptr"] == "*fp32" and sig["n_rows"] == "i32"
    assert dict(r.constexprs)["ACTIVATION"] == 2 and dict(r.constexprs)["SAVE_Z"] is True
    assert r.grid == (1, 1, 2) and r.programs == 2
    with pytest.raises(Exception):  # noqa: B017 - any failure to launch on CPU will do
        kernels.ensemble_linear_fwd(x, w, b, "silu")


def test_launch_rejects_a_wrong_argument_count() -> None:
    kernels = backend.load_kernels("ensemble_linear")
    with launch.recording(), pytest.raises(TypeError, match="non-constexpr parameters"):
        launch.launch(kernels._ensemble_linear_fwd_kernel, (1,), (1, 2), {"ACTIVATION": 0})


@functools.cache
def _collected() -> tuple[compile_check.Launch, ...]:
    """The launches of the realistic shapes (a second or two to collect: once per module)."""
    return tuple(compile_check.collect_launches())


def test_collected_launches_cover_every_kernel_and_policy() -> None:
    launches = _collected()
    kernels = {x.recorded.kernel for x in launches}
    assert kernels == {
        "_ensemble_linear_fwd_kernel",
        "_ensemble_linear_bwd_dx_kernel",
        "_ensemble_linear_bwd_dw_kernel",
        "_ensemble_mlp_fwd_kernel",
        "_critic_gemm_kernel",
        "_diversity_rows_kernel",
    }
    precisions: dict[str, set[str]] = {}
    for x in launches:
        p = dict(x.recorded.constexprs).get("INPUT_PRECISION")
        if p is not None:
            precisions.setdefault(x.recorded.module, set()).add(p)
    assert precisions == {
        "ensemble_linear": {"ieee", "tf32"},
        "ensemble_mlp": {"ieee", "tf32"},
        "diversity": {"ieee"},
    }
    modes = {
        dict(x.recorded.constexprs)["MODE"] for x in launches if x.recorded.module == "ensemble_mlp"
    }
    assert modes == {0, 1, 2}  # batch 256 falls back to MODE 0 + amin; 4,096 rows fuse the min
    rollout = [x for x in launches if "rollout" in x.wheres[0]]
    assert rollout and max(p for x in rollout for p in x.programs) >= 50_000 // 32


def _launch_of(kernel: str, **constexprs: object) -> compile_check.Launch:
    for x in _collected():
        c = dict(x.recorded.constexprs)
        if x.recorded.kernel == kernel and all(c.get(k) == v for k, v in constexprs.items()):
            return x
    raise AssertionError(f"no launch of {kernel} with {constexprs}")


def test_compile_for_sm90_reports_resources() -> None:
    x = _launch_of("_diversity_rows_kernel")
    (res,) = compile_check.compile_all([x], [90], jobs=1, timeout=120, max_seconds=60)
    assert res.error is None and res.problems == ()
    assert res.registers is not None and 0 < res.registers <= 255
    assert res.spill_bytes == 0 and res.dot == "-"


def test_compile_check_flags_a_spilling_and_an_fma_config() -> None:
    """The launchers' choice passes; the same kernel with 4 warps, BLOCK_K = 32 and 3 stages
    (what the launchers chose before the check) spills and is reported."""
    good = _launch_of(
        "_ensemble_linear_bwd_dw_kernel", INPUT_PRECISION="ieee", BLOCK_M=64, BLOCK_N=64
    )
    c = dict(good.recorded.constexprs) | {"BLOCK_K": 32}
    bad = dataclasses.replace(good, recorded=dataclasses.replace(
        good.recorded, constexprs=tuple(c.items()), num_warps=4, num_stages=3))  # fmt: skip
    ok, spilling = compile_check.compile_all([good, bad], [90], jobs=2, timeout=120, max_seconds=60)
    assert ok.problems == (), ok.problems
    assert ok.dot == "FMA"
    assert spilling.spill_bytes and any("spills" in p for p in spilling.problems)
    # A TF32 request that lowered to FMA, and shared memory over the limit, are failures too.
    fake = compile_check._result(
        dataclasses.replace(good, recorded=dataclasses.replace(
            good.recorded, constexprs=tuple((dict(good.recorded.constexprs) | {"INPUT_PRECISION": "tf32"}).items()))),
        80,
        {"seconds": 1.0, "registers": 100, "spill_bytes": 0, "shared_bytes": 200 * 1024, "dot": "FMA"},
        30.0,
    )  # fmt: skip
    assert any("FMA" in p for p in fake.problems)
    assert any("shared memory" in p for p in fake.problems)


def test_cli_list_and_errors(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert compile_check.main(["--list", "--only", "_diversity_rows"]) == 0
    out = capsys.readouterr().out
    assert "_diversity_rows_kernel" in out and "_critic_gemm" not in out
    for bad in (["--targets", "75"], ["--targets", "x"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as exc:
            compile_check.main(bad)
        assert exc.value.code == 2
    report = tmp_path / "r.json"
    assert (
        compile_check.main(["--only", "_diversity_rows", "--targets", "90", "--json", str(report)])
        == 0
    )
    rows = json.loads(report.read_text())
    assert rows and rows[0]["kernel"] == "_diversity_rows_kernel" and rows[0]["target"] == 90
