"""Triton ensemble linear layer with fused bias and activation, forward and backward.

Maths, for every member e (ensemble dimension first):

    z[e] = x[e] @ W[e] + b[e]           x `[E, B, I]` (or shared `[B, I]`), W `[E, I, O]`, b `[E, O]`
    y[e] = act(z[e])                    act ∈ {none, relu, silu}; y `[E, B, O]`

    dz = dy ⊙ act'(z)                   relu' = [y > 0];  silu'(z) = σ(z)(1 + z(1 − σ(z)))
    dx[e] = dz[e] @ W[e]ᵀ               shared x: dx = Σ_e dz[e] @ W[e]ᵀ   `[B, I]`
    dW[e] = x[e]ᵀ @ dz[e]               `[E, I, O]`
    db[e] = Σ_b dz[e, b]                `[E, O]`

A shared input is read with member stride 0, never copied E times. dz is recomputed from
(dy, y or z) inside both backward kernels instead of being written to memory once.

Kernels: `_ensemble_linear_fwd_kernel`, `_ensemble_linear_bwd_dx_kernel`,
`_ensemble_linear_bwd_dw_kernel`; launchers `ensemble_linear_fwd`, `ensemble_linear_bwd`.
`eor.ops.ensemble_linear` dispatches here on CUDA (its autograd.Function calls both launchers).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import cdiv, dot_precision, gemm_tiling, launch

# Whether this module's kernels were decorated in interpreter mode (eor.ops re-imports on change).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

ACTIVATION_IDS = {"none": 0, "relu": 1, "silu": 2}


# Only builtins of triton.language (plus jit helpers defined here) are used in the kernels: the
# standard library's jit functions (its zeros, sum, sigmoid, ...) are decorated once, when triton
# is first imported, and cannot run in the interpreter if that import happened with
# TRITON_INTERPRET unset (torch._dynamo imports triton, e.g. for torch.compile or opcheck).


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _act(z, ACTIVATION: tl.constexpr):
    """act(z): 0 none, 1 relu, 2 silu."""
    if ACTIVATION == 1:
        z = tl.maximum(z, 0.0)
    elif ACTIVATION == 2:
        z = z * _sigmoid(z)
    return z


@triton.jit
def _act_grad(dy, s, ACTIVATION: tl.constexpr):
    """dz = dy ⊙ act'(·); s is y for relu (mask y > 0), z for silu, unused for none."""
    if ACTIVATION == 1:
        dy = tl.where(s > 0.0, dy, 0.0)
    elif ACTIVATION == 2:
        sig = _sigmoid(s)
        dy = dy * sig * (1.0 + s * (1.0 - sig))
    return dy


@triton.jit
def _ensemble_linear_fwd_kernel(
    X_ptr,  # [E, B, I] or shared [B, I] (stride_xe = 0)
    W_ptr,  # [E, I, O]
    B_ptr,  # [E, O]
    Y_ptr,  # [E, B, O]
    Z_ptr,  # [E, B, O] pre-activation, written only if SAVE_Z
    n_rows,
    n_in,
    n_out,
    stride_xe,
    stride_xb,
    stride_xi,
    stride_we,
    stride_wi,
    stride_wo,
    stride_be,
    stride_ye,
    stride_yb,
    ACTIVATION: tl.constexpr,
    SAVE_Z: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One program: rows [pid_m·BLOCK_M, +BLOCK_M) × outputs [pid_n·BLOCK_N, +BLOCK_N) of member
    pid_e. Accumulates x @ W over I in BLOCK_K steps (fp32), then adds b and applies act."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < n_rows
    mask_n = offs_n < n_out
    x_ptrs = X_ptr + e * stride_xe + offs_m[:, None] * stride_xb + offs_k[None, :] * stride_xi
    w_ptrs = W_ptr + e * stride_we + offs_k[:, None] * stride_wi + offs_n[None, :] * stride_wo
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k in range(0, n_in, BLOCK_K):
        mask_k = (offs_k + k) < n_in
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xi
        w_ptrs += BLOCK_K * stride_wi
    bias = tl.load(B_ptr + e * stride_be + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    z = acc + bias[None, :]
    out_offs = e * stride_ye + offs_m[:, None] * stride_yb + offs_n[None, :]
    out_mask = mask_m[:, None] & mask_n[None, :]
    if SAVE_Z:
        tl.store(Z_ptr + out_offs, z.to(Z_ptr.dtype.element_ty), mask=out_mask)
    y = _act(z, ACTIVATION)
    tl.store(Y_ptr + out_offs, y.to(Y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _ensemble_linear_bwd_dx_kernel(
    dY_ptr,  # [E, B, O] contiguous
    S_ptr,  # [E, B, O]: y (relu) or z (silu); unused for none
    W_ptr,  # [E, I, O]
    dX_ptr,  # [E, B, I], or [B, I] when SUM_MEMBERS
    n_rows,
    n_in,
    n_out,
    n_members,
    stride_ye,
    stride_yb,
    stride_we,
    stride_wi,
    stride_wo,
    stride_dxe,
    stride_dxb,
    ACTIVATION: tl.constexpr,
    SUM_MEMBERS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dx tile [BLOCK_M rows, BLOCK_N inputs] = Σ_o dz[e, rows, o] W[e, inputs, o]; with
    SUM_MEMBERS (shared x) also summed over every member e inside the program."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < n_rows
    mask_n = offs_n < n_in
    if SUM_MEMBERS:
        e_first = 0
        e_count = n_members
    else:
        e_first = tl.program_id(2)
        e_count = 1
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for e in range(e_first, e_first + e_count):
        for k in range(0, n_out, BLOCK_K):
            ok = offs_k + k
            mask_mk = mask_m[:, None] & (ok < n_out)[None, :]
            y_offs = e * stride_ye + offs_m[:, None] * stride_yb + ok[None, :]
            dy = tl.load(dY_ptr + y_offs, mask=mask_mk, other=0.0).to(tl.float32)
            if ACTIVATION != 0:
                s = tl.load(S_ptr + y_offs, mask=mask_mk, other=0.0).to(tl.float32)
                dy = _act_grad(dy, s, ACTIVATION)
            # Wᵀ tile [BLOCK_K outputs, BLOCK_N inputs]
            wt = tl.load(
                W_ptr + e * stride_we + ok[:, None] * stride_wo + offs_n[None, :] * stride_wi,
                mask=(ok < n_out)[:, None] & mask_n[None, :],
                other=0.0,
            ).to(tl.float32)
            acc = tl.dot(dy, wt, acc, input_precision=INPUT_PRECISION)
    if SUM_MEMBERS:
        dx_base = dX_ptr
    else:
        dx_base = dX_ptr + tl.program_id(2).to(tl.int64) * stride_dxe
    tl.store(
        dx_base + offs_m[:, None] * stride_dxb + offs_n[None, :],
        acc.to(dX_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


@triton.jit
def _ensemble_linear_bwd_dw_kernel(
    dY_ptr,  # [E, B, O] contiguous
    S_ptr,  # [E, B, O]: y (relu) or z (silu)
    X_ptr,  # [E, B, I] or shared [B, I] (stride_xe = 0)
    dW_ptr,  # [E, I, O] contiguous
    dB_ptr,  # [E, O] contiguous
    n_rows,
    n_in,
    n_out,
    stride_ye,
    stride_yb,
    stride_xe,
    stride_xb,
    stride_xi,
    ACTIVATION: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dW tile [BLOCK_M inputs, BLOCK_N outputs] of member pid_e = Σ_b x[e, b, i] dz[e, b, o];
    the programs with pid_m == 0 also write db[e, outputs] = Σ_b dz[e, b, o]."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < n_in
    mask_n = offs_n < n_out
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    db = tl.full((BLOCK_N,), 0.0, tl.float32)
    for k in range(0, n_rows, BLOCK_K):
        rows = offs_k + k
        mask_r = rows < n_rows
        y_offs = e * stride_ye + rows[:, None] * stride_yb + offs_n[None, :]
        mask_rn = mask_r[:, None] & mask_n[None, :]
        dz = tl.load(dY_ptr + y_offs, mask=mask_rn, other=0.0).to(tl.float32)
        if ACTIVATION != 0:
            s = tl.load(S_ptr + y_offs, mask=mask_rn, other=0.0).to(tl.float32)
            dz = _act_grad(dz, s, ACTIVATION)
        if COMPUTE_DW:
            # xᵀ tile [BLOCK_M inputs, BLOCK_K rows]
            xt = tl.load(
                X_ptr + e * stride_xe + rows[None, :] * stride_xb + offs_m[:, None] * stride_xi,
                mask=mask_m[:, None] & mask_r[None, :],
                other=0.0,
            ).to(tl.float32)
            acc = tl.dot(xt, dz, acc, input_precision=INPUT_PRECISION)
        if COMPUTE_DB:
            db += tl.reduce(dz, 0, _add)
    if COMPUTE_DW:
        tl.store(
            dW_ptr + e * n_in * n_out + offs_m[:, None] * n_out + offs_n[None, :],
            acc.to(dW_ptr.dtype.element_ty),
            mask=mask_m[:, None] & mask_n[None, :],
        )
    if COMPUTE_DB:
        if pid_m == 0:
            tl.store(dB_ptr + e * n_out + offs_n, db.to(dB_ptr.dtype.element_ty), mask=mask_n)


# ----------------------------------------------------------------------------- host launchers


def _check_act(activation: str) -> int:
    if activation not in ACTIVATION_IDS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATION_IDS)}, got {activation!r}")
    return ACTIVATION_IDS[activation]


def ensemble_linear_fwd(
    x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none"
) -> tuple[Tensor, Tensor]:
    """Launch the forward. x `[E, B, I]` or `[B, I]`, weight `[E, I, O]`, bias `[E, O]`.

    Returns (y `[E, B, O]`, saved): saved is z (pre-activation) for silu, else an empty tensor
    (relu's backward needs only y).
    """
    act = _check_act(activation)
    e, n_in, n_out = weight.shape
    n_rows = x.shape[-2]
    bias = bias.contiguous()
    y = torch.empty((e, n_rows, n_out), device=x.device, dtype=x.dtype)
    z = torch.empty_like(y) if act == 2 else y.new_empty(0)
    shared = x.dim() == 2
    stride_xe = 0 if shared else x.stride(0)
    prec = dot_precision("ensemble_linear", x.dtype)
    t = gemm_tiling(n_rows, n_out, n_in, prec)
    block_m, block_n, block_k = t.block_m, t.block_n, t.block_k
    grid = (cdiv(n_rows, block_m), cdiv(n_out, block_n), e)
    launch(
        _ensemble_linear_fwd_kernel, grid,
        (
            x, weight, bias, y, z if act == 2 else y,
            n_rows, n_in, n_out,
            stride_xe, x.stride(-2), x.stride(-1),
            weight.stride(0), weight.stride(1), weight.stride(2),
            bias.stride(0),
            y.stride(0), y.stride(1),
        ),
        dict(
            ACTIVATION=act, SAVE_Z=act == 2, INPUT_PRECISION=prec,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        ),
        num_warps=t.num_warps, num_stages=t.num_stages,
    )  # fmt: skip
    return y, z


def ensemble_linear_bwd(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    y: Tensor,
    saved: Tensor,
    activation: str,
    needs: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Launch the backward; dy `[E, B, O]`. Returns (dx, dW `[E, I, O]`, db `[E, O]`), None for a
    gradient that `needs` (dx, dW, db) does not ask for. dx has x's shape (`[B, I]` if shared)."""
    act = _check_act(activation)
    e, n_in, n_out = weight.shape
    n_rows = x.shape[-2]
    dy = dy.contiguous()
    s = y.contiguous() if act == 1 else (saved.contiguous() if act == 2 else dy)
    shared = x.dim() == 2
    prec = dot_precision("ensemble_linear", x.dtype)
    dx = dw = db = None
    if needs[0]:
        dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
        t = gemm_tiling(n_rows, n_in, n_out, prec, outer_loop=shared)
        block_m, block_n, block_k = t.block_m, t.block_n, t.block_k
        grid = (cdiv(n_rows, block_m), cdiv(n_in, block_n), 1 if shared else e)
        launch(
            _ensemble_linear_bwd_dx_kernel, grid,
            (
                dy, s, weight, dx,
                n_rows, n_in, n_out, e,
                dy.stride(0), dy.stride(1),
                weight.stride(0), weight.stride(1), weight.stride(2),
                0 if shared else dx.stride(0), dx.stride(-2),
            ),
            dict(
                ACTIVATION=act, SUM_MEMBERS=shared, INPUT_PRECISION=prec,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            ),
            num_warps=t.num_warps, num_stages=t.num_stages,
        )  # fmt: skip
    if needs[1] or needs[2]:
        dw = torch.empty((e, n_in, n_out), device=x.device, dtype=x.dtype) if needs[1] else None
        db = torch.empty((e, n_out), device=x.device, dtype=x.dtype) if needs[2] else None
        t = gemm_tiling(n_in, n_out, n_rows, prec)
        block_m, block_n, block_k = t.block_m, t.block_n, t.block_k
        grid = (cdiv(n_in, block_m) if needs[1] else 1, cdiv(n_out, block_n), e)
        launch(
            _ensemble_linear_bwd_dw_kernel, grid,
            (
                dy, s, x, dw if dw is not None else dy, db if db is not None else dy,
                n_rows, n_in, n_out,
                dy.stride(0), dy.stride(1),
                0 if shared else x.stride(0), x.stride(-2), x.stride(-1),
            ),
            dict(
                ACTIVATION=act, COMPUTE_DW=bool(needs[1]), COMPUTE_DB=bool(needs[2]),
                INPUT_PRECISION=prec, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            ),
            num_warps=t.num_warps, num_stages=t.num_stages,
        )  # fmt: skip
    return dx, dw, db
