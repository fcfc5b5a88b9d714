"""Fused ensemble-MLP forward (inference): the whole MLP in one Triton program per
(member, row block), every layer a tiled GEMM, hidden activations in a scratch buffer.

The MLP has L = NUM_HID + 2 layers, `act` after all but the last:

    h_0 = act(x @ W_in[e] + b_in[e])                     x `[B, I]` (shared) or `[E, B, I]`
    h_j = act(h_{j-1} @ W_hid[j-1, e] + b_hid[j-1, e])   j = 1..NUM_HID, width H
    out = h_NUM_HID @ W_out[e] + b_out[e]                `[BLOCK_M, O]`

Modes (constexpr MODE): 0 full `[E, B, O]`; 1 min over members `[B, O]` (one program loops
over the members of its row block and keeps the running minimum in the output); 2 gathered:
row b uses member members[b]. For 2 the host sorts rows by member and builds a block table
(member, first sorted position, end position) on the device, without a host sync; a program
reads its rows through the sort permutation and writes them back in place, so no copy of x or
of the output is permuted on the host.

BOUND (constexpr): the dynamics head of width 2·D is split into mean (first D) and
log-variance (last D), bounded as in docs/algorithm.md §2 before the store:
    lv = max − softplus(max − raw);  lv = min + softplus(lv − min).

Design (chosen by `python -m eor.kernels.compile_check`, issue 15): every layer is computed
[BLOCK_M, BLOCK_N] output tile by tile, accumulating over the input in BLOCK_K steps, so no
program ever holds more than a few small tiles in registers, whatever H is. A layer's output
goes to a ping-pong scratch `[2, rows, H]` in global memory, owned row-wise by the program that
writes it and read back by the same program after a block barrier (`tl.debug_barrier`): about
BLOCK_M·H·4 bytes per program in flight, which stays in L2. The hidden layers are a runtime
loop, not unrolled, so the code (and the compile time) does not grow with depth. The earlier
design kept h `[BLOCK_M, H]` in registers through fully unrolled layers; compiled for sm_80 and
sm_90 it spilled 5-210 KB per thread and took minutes to compile at H = 256.

Launchers: `ensemble_mlp_fwd`, `gaussian_ensemble_fwd`; MLPs the fused kernel does not take
(one layer, unequal hidden widths) run layer by layer on the ensemble-linear kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from .ensemble_linear import _act, _check_act, ensemble_linear_fwd
from .launch import cdiv, dot_precision, launch, pow2_block

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
# The fused min over members gives one program per row block, looping over the members: too
# few programs to fill a GPU for small batches (critic targets: B = 256 -> 8 programs). Below
# this many row blocks, the full forward (one program per member and row block) runs instead
# and the minimum is taken by torch.
MIN_ROW_BLOCKS_FOR_FUSED_MIN = 128


@triton.jit
def _softplus(x):
    """log(1 + eˣ), stable: max(x, 0) + log(1 + e^{−|x|})."""
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _tile(
    Src_ptr,  # rows of the layer input, row r at Src_ptr + r * stride_src
    src_rows,  # [BLOCK_M] row indices into Src
    stride_src,
    mask_m,  # [BLOCK_M]
    n_k,  # input width
    W_ptr,  # [n_k, n_n] of this member, contiguous
    B_ptr,  # [n_n] of this member
    n_n,  # output width
    n0,  # first output column of the tile
    APPLY_ACT: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One output tile of one layer: act(src[rows] @ W[:, n0:n0+BLOCK_N] + b) `[BLOCK_M, BLOCK_N]` fp32."""
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_n = offs_n < n_n
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, n_k, BLOCK_K):
        ok = k0 + offs_k
        mask_k = ok < n_k
        a = tl.load(
            Src_ptr + src_rows[:, None] * stride_src + ok[None, :],
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        ).to(tl.float32)
        w = tl.load(
            W_ptr + ok[:, None] * n_n + offs_n[None, :],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=INPUT_PRECISION)
    bias = tl.load(B_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    acc = acc + bias[None, :]
    if APPLY_ACT:
        acc = _act(acc, ACTIVATION)
    return acc


@triton.jit
def _layer_to_scratch(
    Src_ptr,
    src_rows,
    stride_src,
    mask_m,
    n_k,
    W_ptr,
    B_ptr,
    Dst_ptr,  # scratch buffer, row r at Dst_ptr + r * n_hidden
    dst_rows,  # [BLOCK_M]
    n_hidden,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """A hidden layer, tile by tile, into the scratch; then a barrier so that the whole block
    sees it before the next layer reads it."""
    for n0 in range(0, n_hidden, BLOCK_N):
        h = _tile(
            Src_ptr, src_rows, stride_src, mask_m, n_k, W_ptr, B_ptr, n_hidden, n0,
            True, ACTIVATION, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        offs_n = n0 + tl.arange(0, BLOCK_N)
        tl.store(
            Dst_ptr + dst_rows[:, None] * n_hidden + offs_n[None, :],
            h,
            mask=mask_m[:, None] & (offs_n < n_hidden)[None, :],
        )
    tl.debug_barrier()


@triton.jit
def _member_hidden(
    X_ptr,
    W_in_ptr,
    B_in_ptr,
    W_hid_ptr,
    B_hid_ptr,
    S_ptr,  # scratch [2, n_scratch_rows, H] fp32
    rows,  # [BLOCK_M] row indices into x
    srows,  # [BLOCK_M] row indices into the scratch
    mask_m,
    e,
    n_members,
    n_in,
    n_hidden,
    buf_stride,  # n_scratch_rows * H
    stride_xe,
    stride_xb,
    NUM_HID: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Every hidden layer of member e on BLOCK_M rows; the last one ends in scratch buffer
    NUM_HID % 2. Weights are contiguous: W_in `[E, I, H]`, W_hid `[NUM_HID, E, H, H]`."""
    _layer_to_scratch(
        X_ptr + e * stride_xe, rows, stride_xb, mask_m, n_in,
        W_in_ptr + e * n_in * n_hidden, B_in_ptr + e * n_hidden,
        S_ptr, srows, n_hidden,
        ACTIVATION, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    hh = n_hidden * n_hidden
    for j in range(0, NUM_HID):
        _layer_to_scratch(
            S_ptr + (j % 2) * buf_stride, srows, n_hidden, mask_m, n_hidden,
            W_hid_ptr + (j * n_members + e) * hh, B_hid_ptr + (j * n_members + e) * n_hidden,
            S_ptr + ((j + 1) % 2) * buf_stride, srows, n_hidden,
            ACTIVATION, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip


@triton.jit
def _ensemble_mlp_fwd_kernel(
    X_ptr,  # [B, I] shared or [E, B, I] (stride_xe = 0 for shared), row stride stride_xb
    W_in_ptr,  # [E, I, H]
    B_in_ptr,  # [E, H]
    W_hid_ptr,  # [NUM_HID, E, H, H]
    B_hid_ptr,  # [NUM_HID, E, H]
    W_out_ptr,  # [E, H, O]
    B_out_ptr,  # [E, O]
    S_ptr,  # scratch [2, n_scratch_rows, H] fp32: MODE 0 rows e·B + b, else b
    Y_ptr,  # MODE 0: [E, B, O_y]; MODE 1, 2: [B, O_y]  (O_y = D with BOUND, else O)
    LV_ptr,  # BOUND: log-variance, same layout as Y; else unused
    MaxLv_ptr,  # [D] (BOUND)
    MinLv_ptr,  # [D] (BOUND)
    Order_ptr,  # MODE 2: [B] row indices sorted by member
    BlockMember_ptr,  # MODE 2: [n_blocks] member of each block
    BlockStart_ptr,  # MODE 2: [n_blocks] first sorted position of each block
    BlockEnd_ptr,  # MODE 2: [n_blocks] end of the block's member segment
    n_rows,
    n_members,
    n_in,
    n_hidden,
    n_out,
    buf_stride,
    stride_xe,
    stride_xb,
    stride_ye,
    MODE: tl.constexpr,
    BOUND: tl.constexpr,
    NUM_HID: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Grid: MODE 0 (cdiv(B, BLOCK_M), E); MODE 1 (cdiv(B, BLOCK_M),); MODE 2 (n_blocks,)."""
    pid = tl.program_id(0)
    if MODE == 2:
        e = tl.load(BlockMember_ptr + pid)
        pos = tl.load(BlockStart_ptr + pid) + tl.arange(0, BLOCK_M)
        mask_m = pos < tl.load(BlockEnd_ptr + pid)
        rows = tl.load(Order_ptr + pos, mask=mask_m, other=0)
        srows = rows
    else:
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = rows < n_rows
        e = tl.program_id(1)
        if MODE == 0:
            srows = e.to(tl.int64) * n_rows + rows
        else:
            srows = rows
    if MODE == 0:
        base = e * stride_ye
    else:
        base = 0
    last = NUM_HID % 2
    if MODE == 1:
        m_first = 0
        m_count = n_members
    else:
        m_first = e
        m_count = 1
    for m in range(m_first, m_first + m_count):
        _member_hidden(
            X_ptr, W_in_ptr, B_in_ptr, W_hid_ptr, B_hid_ptr, S_ptr, rows, srows, mask_m,
            m, n_members, n_in, n_hidden, buf_stride, stride_xe, stride_xb,
            NUM_HID, ACTIVATION, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )  # fmt: skip
        for n0 in range(0, n_out, BLOCK_N):
            out = _tile(
                S_ptr + last * buf_stride, srows, n_hidden, mask_m, n_hidden,
                W_out_ptr + m * n_hidden * n_out, B_out_ptr + m * n_out, n_out, n0,
                False, ACTIVATION, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
            )  # fmt: skip
            offs_o = n0 + tl.arange(0, BLOCK_N)
            if BOUND:
                d = n_out // 2
                is_lv = (offs_o >= d) & (offs_o < n_out)
                lv_col = tl.where(is_lv, offs_o - d, 0)
                mx = tl.load(MaxLv_ptr + lv_col, mask=is_lv, other=0.0).to(tl.float32)
                mn = tl.load(MinLv_ptr + lv_col, mask=is_lv, other=0.0).to(tl.float32)
                lv = mx[None, :] - _softplus(mx[None, :] - out)
                lv = mn[None, :] + _softplus(lv - mn[None, :])
                tl.store(
                    Y_ptr + base + rows[:, None] * d + offs_o[None, :],
                    out.to(Y_ptr.dtype.element_ty),
                    mask=mask_m[:, None] & (offs_o < d)[None, :],
                )
                tl.store(
                    LV_ptr + base + rows[:, None] * d + lv_col[None, :],
                    lv.to(LV_ptr.dtype.element_ty),
                    mask=mask_m[:, None] & is_lv[None, :],
                )
            else:
                y_ptrs = Y_ptr + base + rows[:, None] * n_out + offs_o[None, :]
                y_mask = mask_m[:, None] & (offs_o < n_out)[None, :]
                if MODE == 1:
                    # Running min over members: the previous member's store of this tile
                    # is visible through the barrier that ends its iteration.
                    if m > 0:
                        out = tl.minimum(out, tl.load(y_ptrs, mask=y_mask, other=0.0))
                tl.store(y_ptrs, out.to(Y_ptr.dtype.element_ty), mask=y_mask)
        # The next member's first layer overwrites the scratch the head just read.
        tl.debug_barrier()


# ----------------------------------------------------------------------------- host launchers


def fused_supported(weights: Sequence[Tensor]) -> bool:
    """Whether the fused kernel takes this MLP: ≥ 2 layers and every hidden width equal (the
    hidden weights are stacked into one `[NUM_HID, E, H, H]` tensor). Any width: every layer is
    tiled."""
    if len(weights) < 2:
        return False
    hidden = weights[0].shape[2]
    return all(w.shape[1] == hidden for w in weights[1:]) and all(
        w.shape[2] == hidden for w in weights[1:-1]
    )


def mlp_blocks(n_hidden: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) of the fused MLP: a 32-row block, 64-column output tiles
    (32 for narrow layers), 32-wide steps over the input."""
    return 32, pow2_block(n_hidden, 16, 64), 32


# compile_check: with 4 warps, or 2 pipeline stages, the tile loops spill (255 registers, FMA
# and TF32 alike); 8 warps and 1 stage take ~170-180 registers and 12 KB of shared memory.
MLP_NUM_WARPS, MLP_NUM_STAGES = 8, 1


def _block_table(members: Tensor, n_members: int, block_m: int) -> tuple[Tensor, ...]:
    """Rows sorted by member, split into blocks of ≤ block_m rows that never straddle two
    members. Computed on the device with no host sync; the grid is the upper bound
    cdiv(B, block_m) + E, and spare blocks get an empty range.

    Returns (order `[B]`, block_member, block_start, block_end, each `[n_blocks]` int32).
    """
    members = members.long()
    n_rows = members.shape[0]
    order = torch.argsort(members, stable=True)  # [B]
    counts = torch.bincount(members, minlength=n_members)  # [E]
    seg_end = torch.cumsum(counts, 0)  # [E]
    seg_start = seg_end - counts
    blocks = (counts + block_m - 1) // block_m  # [E]
    block_end = torch.cumsum(blocks, 0)  # [E]
    n_blocks = triton.cdiv(n_rows, block_m) + n_members
    j = torch.arange(n_blocks, device=members.device)
    member = torch.searchsorted(block_end, j, right=True)  # [n_blocks], E for spare blocks
    spare = member >= n_members
    member = member.clamp(max=n_members - 1)
    local = j - (block_end - blocks)[member]
    start = seg_start[member] + local * block_m
    end = torch.where(spare, start, seg_end[member])
    start = torch.where(spare, end, start)
    return (order.to(torch.int32), member.to(torch.int32), start.to(torch.int32),
            end.to(torch.int32))  # fmt: skip


def _launch(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
    max_logvar: Tensor | None,
    min_logvar: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    act = _check_act(activation)
    e, n_in, n_hidden = weights[0].shape
    n_out = weights[-1].shape[2]
    n_rows = x.shape[-2]
    num_hid = len(weights) - 2
    x = x.contiguous()
    w_in, b_in = weights[0].contiguous(), biases[0].contiguous()
    w_out, b_out = weights[-1].contiguous(), biases[-1].contiguous()
    if num_hid:
        w_hid = torch.stack(list(weights[1:-1])).contiguous()  # [NUM_HID, E, H, H]
        b_hid = torch.stack(list(biases[1:-1])).contiguous()  # [NUM_HID, E, H]
    else:
        w_hid, b_hid = w_out, b_out  # never read
    block_m, block_n, block_k = mlp_blocks(n_hidden)
    mode = 2 if members is not None else (1 if reduce == "min" else 0)
    if mode == 1 and cdiv(n_rows, block_m) < MIN_ROW_BLOCKS_FOR_FUSED_MIN:
        y, _ = _launch(x, weights, biases, activation, None, None, None, None)
        return y.amin(dim=0), None
    bound = max_logvar is not None
    d = n_out // 2 if bound else n_out
    shape = (e, n_rows, d) if mode == 0 else (n_rows, d)
    y = torch.empty(shape, device=x.device, dtype=x.dtype)
    lv = torch.empty(shape, device=x.device, dtype=x.dtype) if bound else None
    scratch_rows = e * n_rows if mode == 0 else n_rows
    scratch = torch.empty((2, scratch_rows, n_hidden), device=x.device, dtype=torch.float32)
    dummy = y
    if mode == 2:
        assert members is not None
        order, b_member, b_start, b_end = _block_table(members, e, block_m)
        grid: tuple[int, ...] = (b_member.shape[0],)
    else:
        order = b_member = b_start = b_end = dummy  # never read
        grid = (cdiv(n_rows, block_m), e) if mode == 0 else (cdiv(n_rows, block_m),)
    args = (
        x, w_in, b_in, w_hid, b_hid, w_out, b_out, scratch,
        y, lv if lv is not None else dummy,
        max_logvar.contiguous() if bound else dummy,  # type: ignore[union-attr]
        min_logvar.contiguous() if bound else dummy,  # type: ignore[union-attr]
        order, b_member, b_start, b_end,
        n_rows, e, n_in, n_hidden, n_out, scratch_rows * n_hidden,
        x.stride(0) if x.dim() == 3 else 0, n_in,
        y.stride(0) if mode == 0 else 0,
    )  # fmt: skip
    constexprs = dict(
        MODE=mode, BOUND=bound, NUM_HID=num_hid, ACTIVATION=act,
        INPUT_PRECISION=dot_precision("ensemble_mlp", x.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    launch(
        _ensemble_mlp_fwd_kernel,
        grid,
        args,
        constexprs,
        num_warps=MLP_NUM_WARPS,
        num_stages=MLP_NUM_STAGES,
    )
    return y, lv


def _layerwise(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str,
    members: Tensor | None,
    reduce: str | None,
) -> Tensor:
    """MLPs the fused kernel does not take: one ensemble-linear kernel launch per layer (per
    member segment for the gathered form)."""
    last = len(weights) - 1
    if members is not None:
        order = torch.argsort(members.long(), stable=True)
        counts = torch.bincount(members.long(), minlength=weights[0].shape[0]).tolist()
        xs = x.index_select(0, order)  # [B, I], grouped by member
        out_sorted = x.new_empty(x.shape[0], weights[-1].shape[2])
        start = 0
        for m, count in enumerate(counts):
            if count:
                h = xs[start : start + count]
                for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
                    act = "none" if layer == last else activation
                    h = ensemble_linear_fwd(h, w[m : m + 1], b[m : m + 1], act)[0][0]
                out_sorted[start : start + count] = h
                start += count
        out = torch.empty_like(out_sorted)
        out.index_copy_(0, order, out_sorted)
        return out
    h = x
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = ensemble_linear_fwd(h, w, b, "none" if layer == last else activation)[0]
    return h.amin(dim=0) if reduce == "min" else h


def ensemble_mlp_fwd(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    activation: str = "relu",
    *,
    members: Tensor | None = None,
    reduce: str | None = None,
) -> Tensor:
    """Ensemble MLP forward (see module docstring). x `[B, I]` or `[E, B, I]`,
    weights[l] `[E, I_l, O_l]`, biases[l] `[E, O_l]`, members `[B]` (x `[B, I]`).
    Returns `[E, B, O]`, or `[B, O]` with reduce="min" or members."""
    if not fused_supported(weights):
        return _layerwise(x, weights, biases, activation, members, reduce)
    return _launch(x, weights, biases, activation, members, reduce, None, None)[0]


def gaussian_ensemble_fwd(
    x: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    max_logvar: Tensor,
    min_logvar: Tensor,
    activation: str = "silu",
    *,
    members: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Dynamics forward with the docs/algorithm.md §2 log-variance bounding fused into the head's store.
    Returns (mean, logvar), each `[E, B, D]`, or `[B, D]` with members; max/min_logvar `[D]`."""
    if not fused_supported(weights):
        out = _layerwise(x, weights, biases, activation, members, None)
        d = out.shape[-1] // 2
        lv = max_logvar - torch.nn.functional.softplus(max_logvar - out[..., d:])
        lv = min_logvar + torch.nn.functional.softplus(lv - min_logvar)
        return out[..., :d].contiguous(), lv
    y, lv = _launch(x, weights, biases, activation, members, None, max_logvar, min_logvar)
    assert lv is not None
    return y, lv
