"""Triton kernels for the RAVL critic loss: EDAC's diversity term, the TD term and every gradient,
in closed form (no double backward). The CUDA path of `eor.ops.critic_loss` / `diversity_loss`.

Maths (as in `eor.ops.critic_closed_form`, the torch path of the same algorithm). N ReLU critics
on the shared input x = concat(s, a) `[B, D]`, D = S + A:

    h1 = relu(x W1 + b1)   h2 = relu(h1 W2 + b2)   h3 = relu(h2 W3 + b3)   q = h3 W4 + b4
    W1 `[N, D, H1]`, W2 `[N, H1, H2]`, W3 `[N, H2, H3]`, W4 `[N, H3, 1]`, b_l `[N, H_l]`,
    h_l `[N, B, H_l]`, q `[N, B]`; masks m_l = 1[h_l > 0].

    δ3 = m3 ⊙ w4ᵀ (never stored: the A-operand loader builds it from h3 and w4),
    δ2 = m2 ⊙ (δ3 W3ᵀ), δ1 = m1 ⊙ (δ2 W2ᵀ)                                 `[N, B, H_l]`
    v = ∇ₐQ = δ1 W1aᵀ, W1a = W1[:, S:, :]                                   `[N, B, A]`
    g_i = v_i / (‖v_i‖ + 1e-10), Σ_g = Σ_i g_i,
    L_div = mean_b (‖Σ_g‖² − Σ_i ‖g_i‖²) / (N − 1)                        (per-row kernel)
    U_i = 2 (Σ_g − g_i) / (B (N − 1)),
    G_i = U_i / (r_i + ε) − v_i ⟨v_i, U_i⟩ / (r_i (r_i + ε)²)  (0 where r_i = ‖v_i‖ = 0)
    e1 = m1 ⊙ (ηG W1a), e2 = m2 ⊙ (e1 W2)                                   `[N, B, H_l]`
    TD: dq = 2 (q − y) / B `[N, B]`; every weight gradient is one GEMM of a combined factor:
    dW1 = Zᵀ δ1, Z = [dq ⊙ x_s, dq ⊙ x_a + ηG]    `[N, D, H1]`
    dW2 = (dq ⊙ h1 + e1)ᵀ δ2                        `[N, H1, H2]`
    M = (dq ⊙ h2 + e2)ᵀ m3, dW3 = M ⊙ w4ᵀ,  dw4 = Σ_j W3 ⊙ M + b3 ⊙ (m3ᵀ dq)   (`[N, H2, H3]`, `[N, H3]`)
    db1 = δ1ᵀ dq, db2 = δ2ᵀ dq, db3 = w4 ⊙ (m3ᵀ dq), db4 = Σ_b dq;  L_div's bias gradients are 0.

Kernels:
- `_critic_gemm_kernel`: C[e] = epilogue(A'[e] @ B'[e]) for every critic e, with arbitrary
  strides (transposes and a member stride of 0 for the shared x are free) and fused options:
  A' = 1[A > 0] (A_MASK) scaled along K by a vector (A_SCALE), B' = 1[B > 0] (B_MASK); epilogue
  + bias, relu, ⊙ 1[Mask > 0] (C_MASK), a column dot Σ_m Dot ⊙ C atomically added into DotOut
  (DOT, for dw4), ⊙ a column scale (C_SCALE). Every GEMM of the chain above is one launch.
  Determinism: the DOT epilogue sums the M tiles' partial column dots with `tl.atomic_add`, in
  whatever order the programs finish, so dw4 (the last layer's weight gradient) can differ in
  its last bits from run to run on a GPU when the GEMM has more than one M tile; every other
  output is deterministic. The torch path (`eor.ops.critic_closed_form`) is deterministic.
- `_diversity_rows_kernel`: per block of rows, all N critics: g, Σ_g, the row's L_div and G.
Launcher: `critic_loss_grads_triton` (same contract as
`eor.ops.critic_closed_form.closed_form_grads`).
float32 only (`tl.dot` with input_precision="ieee": fp32 rounding, no TF32).

Verified only under TRITON_INTERPRET=1 on CPU (no GPU was available when it was written).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import cdiv, dot_precision, gemm_tiling, launch, pow2_block

# Whether this module's kernels were decorated in interpreter mode (eor.ops re-imports on change).
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)

EPS = 1e-10


# Only builtins of triton.language (plus these two jit helpers of this module) are used in the
# kernels: the jit'd helpers of triton.language.standard (tl.zeros, tl.sum, ...) are decorated
# once, when triton is first imported, and cannot run in the interpreter when that import
# happened with TRITON_INTERPRET unset (torch imports triton for FakeTensor / opcheck).
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _rsum(x, axis: tl.constexpr):
    """Σ of x along `axis` (tl.sum without triton.language.standard)."""
    return tl.reduce(x, axis, _add)


@triton.jit
def _critic_gemm_kernel(
    A_ptr,  # [E, M, K] (member stride may be 0)
    B_ptr,  # [E, K, N]
    C_ptr,  # [E, M, N] output
    Bias_ptr,  # [E, N]            (HAS_BIAS)
    Mask_ptr,  # [E, M, N]         (C_MASK): a ReLU output, mask = Mask > 0
    Scale_ptr,  # [E, K] or [E, N]  (A_SCALE / C_SCALE)
    Dot_ptr,  # [E, M, N]          (DOT)
    DotOut_ptr,  # [E, N] fp32, accumulated atomically (DOT)
    M,
    N,
    K,
    stride_ae,
    stride_am,
    stride_ak,
    stride_be,
    stride_bk,
    stride_bn,
    stride_ce,
    stride_cm,
    stride_cn,
    stride_biase,
    stride_maske,
    stride_maskm,
    stride_maskn,
    stride_se,
    stride_ss,
    stride_de,
    stride_dm,
    stride_dn,
    stride_doe,
    A_MASK: tl.constexpr,
    A_SCALE: tl.constexpr,
    B_MASK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    C_MASK: tl.constexpr,
    DOT: tl.constexpr,
    C_SCALE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One program: rows [pid_m·BLOCK_M, +BLOCK_M) × columns [pid_n·BLOCK_N, +BLOCK_N) of
    critic pid_e; fp32 accumulation over K in BLOCK_K steps, then the fused epilogue."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ok = k0 + offs_k
        mask_k = ok < K
        a = tl.load(
            A_ptr + e * stride_ae + offs_m[:, None] * stride_am + ok[None, :] * stride_ak,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        if A_MASK:
            a = tl.where(a > 0.0, 1.0, 0.0)
        if A_SCALE:
            sk = tl.load(Scale_ptr + e * stride_se + ok * stride_ss, mask=mask_k, other=0.0)
            a = a * sk.to(tl.float32)[None, :]
        b = tl.load(
            B_ptr + e * stride_be + ok[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        ).to(tl.float32)
        if B_MASK:
            b = tl.where(b > 0.0, 1.0, 0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    out_mask = mask_m[:, None] & mask_n[None, :]
    if HAS_BIAS:
        bias = tl.load(Bias_ptr + e * stride_biase + offs_n, mask=mask_n, other=0.0)
        acc = acc + bias.to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if C_MASK:
        h = tl.load(
            Mask_ptr
            + e * stride_maske
            + offs_m[:, None] * stride_maskm
            + offs_n[None, :] * stride_maskn,
            mask=out_mask,
            other=0.0,
        )
        acc = tl.where(h > 0.0, acc, 0.0)
    if DOT:
        d = tl.load(
            Dot_ptr + e * stride_de + offs_m[:, None] * stride_dm + offs_n[None, :] * stride_dn,
            mask=out_mask,
            other=0.0,
        ).to(tl.float32)
        part = _rsum(d * acc, 0)  # [BLOCK_N]: this tile's rows of Σ_m Dot ⊙ C
        tl.atomic_add(DotOut_ptr + e * stride_doe + offs_n, part, mask=mask_n)
    if C_SCALE:
        sn = tl.load(Scale_ptr + e * stride_se + offs_n * stride_ss, mask=mask_n, other=0.0)
        acc = acc * sn.to(tl.float32)[None, :]
    tl.store(
        C_ptr + e * stride_ce + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn,
        acc.to(C_ptr.dtype.element_ty),
        mask=out_mask,
    )


@triton.jit
def _diversity_rows_kernel(
    V_ptr,  # [N, B, A] contiguous: v = ∇ₐQ
    G_ptr,  # [N, B, A] contiguous output: η ∂L_div/∂v
    RowLoss_ptr,  # [B] output: (‖Σ_g‖² − Σ_i ‖g_i‖²) / (B (N − 1)) per row
    n_critics,
    n_rows,
    n_act,
    scale,  # 1 / (B (N − 1))
    eta,
    EPS_C: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    """Rows [pid·BLOCK_B, +BLOCK_B) for all critics: pass 1 sums g_i (Σ_g, Σ‖g_i‖²), pass 2
    re-reads v and writes G_i (normalisation backward, 0 projection term where ‖v_i‖ = 0)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_A)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_act)
    offs = rows[:, None] * n_act + cols[None, :]
    stride_n = n_rows * n_act
    g_sum = tl.full((BLOCK_B, BLOCK_A), 0.0, tl.float32)
    sq_sum = tl.full((BLOCK_B,), 0.0, tl.float32)
    for i in range(0, n_critics):
        v = tl.load(V_ptr + i * stride_n + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.sqrt(_rsum(v * v, 1))
        g = v / (r + EPS_C)[:, None]
        g_sum += g
        sq_sum += _rsum(g * g, 1)
    row_loss = (_rsum(g_sum * g_sum, 1) - sq_sum) * scale
    tl.store(RowLoss_ptr + rows, row_loss, mask=rows < n_rows)
    for i in range(0, n_critics):
        v = tl.load(V_ptr + i * stride_n + offs, mask=mask, other=0.0).to(tl.float32)
        r = tl.sqrt(_rsum(v * v, 1))
        inv = 1.0 / (r + EPS_C)
        g = v * inv[:, None]
        u = (g_sum - g) * (2.0 * scale)
        vu = _rsum(v * u, 1)
        r_safe = tl.where(r > 0.0, r, 1.0)
        proj = tl.where(r > 0.0, vu * inv * inv / r_safe, 0.0)
        grad = (u * inv[:, None] - v * proj[:, None]) * eta
        tl.store(G_ptr + i * stride_n + offs, grad.to(G_ptr.dtype.element_ty), mask=mask)


def critic_gemm(
    a: Tensor,
    b: Tensor,
    out: Tensor | None = None,
    *,
    bias: Tensor | None = None,
    relu: bool = False,
    a_mask: bool = False,
    a_scale: Tensor | None = None,
    b_mask: bool = False,
    c_mask: Tensor | None = None,
    dot: Tensor | None = None,
    dot_out: Tensor | None = None,
    c_scale: Tensor | None = None,
) -> Tensor:
    """Launch `_critic_gemm_kernel`: out[e] = epilogue(A'[e] @ B'[e]).

    a `[E, M, K]`, b `[E, K, N]` (any strides, views allowed); out `[E, M, N]` (allocated if
    None); bias `[E, N]`; c_mask, dot `[E, M, N]`; a_scale `[E, K]`; c_scale `[E, N]`;
    dot_out `[E, N]` float32, added into.
    """
    e, m, k = a.shape
    n = b.shape[2]
    if out is None:
        out = torch.empty((e, m, n), device=a.device, dtype=a.dtype)
    scale = a_scale if a_scale is not None else c_scale
    dummy = out
    tiny = out.new_empty((1, 1))  # stands in for unused vector arguments
    bias_t = bias if bias is not None else dummy
    mask_t = c_mask if c_mask is not None else dummy
    scale_t = scale if scale is not None else tiny
    dot_t = dot if dot is not None else dummy
    dot_out_t = dot_out if dot_out is not None else tiny
    precision = dot_precision("diversity", a.dtype)
    t = gemm_tiling(m, n, k, precision)
    block_m, block_n, block_k = t.block_m, t.block_n, t.block_k
    grid = (cdiv(m, block_m), cdiv(n, block_n), e)
    launch(
        _critic_gemm_kernel, grid,
        (
            a, b, out, bias_t, mask_t, scale_t, dot_t, dot_out_t,
            m, n, k,
            a.stride(0), a.stride(1), a.stride(2),
            b.stride(0), b.stride(1), b.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            bias_t.stride(0),
            mask_t.stride(0), mask_t.stride(1), mask_t.stride(2),
            scale_t.stride(0), scale_t.stride(1),
            dot_t.stride(0), dot_t.stride(1), dot_t.stride(2),
            dot_out_t.stride(0),
        ),
        dict(
            A_MASK=a_mask, A_SCALE=a_scale is not None, B_MASK=b_mask, HAS_BIAS=bias is not None,
            RELU=relu, C_MASK=c_mask is not None, DOT=dot is not None, C_SCALE=c_scale is not None,
            INPUT_PRECISION=precision,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        ),
        num_warps=t.num_warps, num_stages=t.num_stages,
    )  # fmt: skip
    return out


def diversity_rows(v: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """Launch `_diversity_rows_kernel`. v `[N, B, A]` -> (L_div scalar, η·∂L_div/∂v `[N, B, A]`)."""
    n, bsz, a = v.shape
    v = v.contiguous()
    grad = torch.empty_like(v)
    row_loss = torch.empty(bsz, device=v.device, dtype=torch.float32)
    # 16 rows a program: B = 256 gives 16 programs (64 rows gave 4, too few to spread).
    block_b, block_a = 16, pow2_block(a, 2, 1 << 16)
    launch(
        _diversity_rows_kernel, (cdiv(bsz, block_b),),
        (
            v, grad, row_loss, n, bsz, a, 1.0 / (bsz * (n - 1)), float(eta),
        ),
        dict(
            EPS_C=EPS, BLOCK_B=block_b, BLOCK_A=block_a,
        ),
    )  # fmt: skip
    return row_loss.sum().to(v.dtype), grad


@torch.no_grad()
def critic_loss_grads_triton(
    obs: Tensor,
    act: Tensor,
    target: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    eta: float,
    *,
    need_grads: bool = True,
    need_q: bool = True,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor] | None, list[Tensor] | None]:
    """(td, diversity, q, weight grads, bias grads) of L = [L_td] + η·L_div, by the kernels.

    Same contract as `eor.ops.critic_closed_form.closed_form_grads` (target None leaves L_td
    out; eta > 0 needs N ≥ 2; arguments already checked). float32 only.
    """
    if weights[0].dtype != torch.float32:
        raise TypeError(f"the Triton critic loss runs in float32, got {weights[0].dtype}")
    w1, w2, w3, w4 = (w.contiguous() for w in weights)
    b1, b2, b3, b4 = (b.contiguous() for b in biases)
    n, d, _ = w1.shape
    bsz, s_dim = obs.shape
    eta = float(eta)
    use_div = eta > 0.0

    x = torch.cat([obs, act], dim=1)  # [B, D]
    x3 = x.expand(n, bsz, d)  # [N, B, D], member stride 0 (no copy)
    h1 = critic_gemm(x3, w1, bias=b1, relu=True)  # [N, B, H1]
    h2 = critic_gemm(h1, w2, bias=b2, relu=True)  # [N, B, H2]
    h3 = critic_gemm(h2, w3, bias=b3, relu=True)  # [N, B, H3]
    q = critic_gemm(h3, w4, bias=b4).squeeze(2)  # [N, B]
    q_out = q if target is not None or need_q else q[:, :0]  # the torch path's contract
    zero = q.new_zeros(())
    if target is not None:
        err = q - target  # [N, B]
        td = err.square().mean(dim=1).sum()
        dq: Tensor | None = err.mul_(2.0 / bsz)  # [N, B]
    else:
        dq, td = None, zero
    if not use_div and (dq is None or not need_grads):
        return td, zero, q_out, None, None

    w4_vec = w4.squeeze(2)  # [N, H3]
    # δ2 = m2 ⊙ ((m3 ⊙ w4ᵀ) W3ᵀ): δ3 is built in the A loader from h3 and w4.
    delta2 = critic_gemm(h3, w3.transpose(1, 2), a_mask=True, a_scale=w4_vec, c_mask=h2)
    delta1 = critic_gemm(delta2, w2.transpose(1, 2), c_mask=h1)  # [N, B, H1]
    w1a = w1[:, s_dim:, :]  # [N, A, H1] view
    diversity = zero
    g_v = None
    if use_div:
        v = critic_gemm(delta1, w1a.transpose(1, 2))  # [N, B, A]
        diversity, g_v = diversity_rows(v, eta)  # g_v = η ∂L_div/∂v
    if not need_grads:
        return td, diversity, q_out, None, None

    if g_v is not None:
        left2 = critic_gemm(g_v, w1a, c_mask=h1)  # η e1 [N, B, H1]
        left3 = critic_gemm(left2, w2, c_mask=h2)  # η e2 [N, B, H2]
        if dq is not None:
            left2.addcmul_(h1, dq.unsqueeze(2))  # dq ⊙ h1 + η e1
            left3.addcmul_(h2, dq.unsqueeze(2))  # dq ⊙ h2 + η e2
    else:
        assert dq is not None
        left2 = h1 * dq.unsqueeze(2)
        left3 = h2 * dq.unsqueeze(2)
    dw4 = torch.zeros(n, w4.shape[1], device=q.device, dtype=torch.float32)  # [N, H3]
    # dW3 = (left3ᵀ m3) ⊙ w4ᵀ, and dw4 += Σ_j W3 ⊙ (left3ᵀ m3) in the same launch.
    dw3 = critic_gemm(left3.transpose(1, 2), h3, b_mask=True, dot=w3, dot_out=dw4, c_scale=w4_vec)
    dw2 = critic_gemm(left2.transpose(1, 2), delta2)  # [N, H1, H2]
    if dq is not None:
        dq_row = dq.unsqueeze(1)  # [N, 1, B]
        z = dq.unsqueeze(2) * x  # [N, B, D]
        if g_v is not None:
            z[:, :, s_dim:].add_(g_v)
        dw1 = critic_gemm(z.transpose(1, 2), delta1)  # [N, D, H1]
        db1 = critic_gemm(dq_row, delta1).squeeze(1)  # [N, H1]
        db2 = critic_gemm(dq_row, delta2).squeeze(1)  # [N, H2]
        s3 = critic_gemm(dq_row, h3, b_mask=True).squeeze(1)  # [N, H3] = m3ᵀ dq
        db3 = s3 * w4_vec
        dw4.addcmul_(b3, s3)
        db4 = dq.sum(dim=1, keepdim=True)  # [N, 1]
    else:
        assert g_v is not None
        dw1 = torch.zeros_like(w1)
        critic_gemm(g_v.transpose(1, 2), delta1, out=dw1[:, s_dim:, :])  # obs rows stay 0
        db1, db2, db3, db4 = (torch.zeros_like(b) for b in biases)
    weight_grads = [dw1, dw2, dw3, dw4.to(w4.dtype).unsqueeze(2)]
    return td, diversity, q_out, weight_grads, [db1, db2, db3, db4]
