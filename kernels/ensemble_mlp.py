"""Fused ensemble-MLP forward (inference): the whole MLP in one Triton program per
(member, row block), hidden activations kept in registers.

The MLP has L = NUM_HID + 2 layers, `act` after all but the last:

    h_0 = act(x @ W_in[e] + b_in[e])                     x `[B, I]` (shared) or `[E, B, I]`
    h_j = act(h_{j-1} @ W_hid[j-1, e] + b_hid[j-1, e])   j = 1..NUM_HID, width H (≤ 256)
    out = h_NUM_HID @ W_out[e] + b_out[e]                `[BLOCK_M, O]`

Modes (constexpr MODE): 0 full `[E, B, O]`; 1 min over members `[B, O]` (one program loops
over the members of its row block and keeps the running minimum); 2 gathered: row b uses
member members[b]. For 2 the host sorts rows by member and builds a block table (member,
first sorted position, end position) on the device, without a host sync; a program reads its
rows through the sort permutation and writes them back in place, so no copy of x or of the
output is permuted on the host.

BOUND (constexpr): the dynamics head of width 2·D is split into mean (first D) and
log-variance (last D), bounded as in docs/algorithm.md §2 before the store:
    lv = max − softplus(max − raw);  lv = min + softplus(lv − min).

Registers, not shared memory, hold h (`[BLOCK_M, H_P]`, H_P = next power of two ≥ H). A
hidden-to-hidden product never needs a whole `[H_P, H_P]` weight tile on chip: layers are
processed in pairs (a, b), and layer a's output is produced BLOCK_N columns at a time, each
chunk activated and immediately multiplied into layer b's accumulator:
    acc_b += act(h @ W_a[:, chunk] + b_a[chunk]) @ W_b[chunk, :]
so the largest tiles are `[H_P, BLOCK_N]` and `[BLOCK_N, H_P]`. Padding columns and rows are
masked to 0 and act(0) = 0, so they stay 0 through every layer.

Launchers: `ensemble_mlp_fwd`, `gaussian_ensemble_fwd`; MLPs the fused kernel does not take
(one layer, unequal hidden widths, H > 256) run layer by layer on the ensemble-linear kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from .ensemble_linear import (
    _act,
    _block,
    _check_act,
    ensemble_linear_fwd,
    input_precision,
)

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
MAX_FUSED_WIDTH = 256
# The fused min over members gives one program per row block, looping over the members: too
# few programs to fill a GPU for small batches (critic targets: B = 256 -> 16 programs). Below
# this many row blocks, the full forward (one program per member and row block) runs instead
# and the minimum is taken by torch.
MIN_ROW_BLOCKS_FOR_FUSED_MIN = 128


@triton.jit
def _softplus(x):
    """log(1 + eˣ), stable: max(x, 0) + log(1 + e^{−|x|})."""
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _pair(
    h,  # [BLOCK_M, H_P] fp32
    Wa_ptr,  # [H, H] of this member (layer a)
    Ba_ptr,  # [H]
    Wb_ptr,  # [H, n_b] of this member (layer b)
    Bb_ptr,  # [n_b]
    n_hidden,
    n_b,
    ACT_B: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    H_P: tl.constexpr,
    NB_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Two consecutive layers: returns act_b(act(h @ W_a + b_a) @ W_b + b_b) `[BLOCK_M, NB_P]`,
    streaming layer a's output BLOCK_N columns at a time into layer b's accumulator."""
    offs_k = tl.arange(0, H_P)
    offs_b = tl.arange(0, NB_P)
    mask_k = offs_k < n_hidden
    mask_b = offs_b < n_b
    acc = tl.full((BLOCK_M, NB_P), 0.0, tl.float32)
    for c in tl.static_range(0, H_P, BLOCK_N):
        offs_c = c + tl.arange(0, BLOCK_N)
        mask_c = offs_c < n_hidden
        wa = tl.load(
            Wa_ptr + offs_k[:, None] * n_hidden + offs_c[None, :],
            mask=mask_k[:, None] & mask_c[None, :],
            other=0.0,
        ).to(tl.float32)
        ba = tl.load(Ba_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        a = _act(tl.dot(h, wa, input_precision=INPUT_PRECISION) + ba[None, :], ACTIVATION)
        wb = tl.load(
            Wb_ptr + offs_c[:, None] * n_b + offs_b[None, :],
            mask=mask_c[:, None] & mask_b[None, :],
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(a, wb, acc, input_precision=INPUT_PRECISION)
    bb = tl.load(Bb_ptr + offs_b, mask=mask_b, other=0.0).to(tl.float32)
    acc = acc + bb[None, :]
    if ACT_B:
        acc = _act(acc, ACTIVATION)
    return acc


@triton.jit
def _mlp_rows(
    X_ptr,
    W_in_ptr,
    B_in_ptr,
    W_hid_ptr,
    B_hid_ptr,
    W_out_ptr,
    B_out_ptr,
    rows,  # [BLOCK_M] row indices into x
    mask_m,  # [BLOCK_M]
    e,  # member
    n_members,
    n_in,
    n_hidden,
    n_out,
    stride_xe,
    stride_xb,
    NUM_HID: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    IN_P: tl.constexpr,
    H_P: tl.constexpr,
    OUT_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The whole MLP of member e on BLOCK_M rows; returns the head `[BLOCK_M, OUT_P]` (fp32).
    Weights are contiguous: W_in `[E, I, H]`, W_hid `[NUM_HID, E, H, H]`, W_out `[E, H, O]`."""
    offs_i = tl.arange(0, IN_P)
    offs_h = tl.arange(0, H_P)
    offs_o = tl.arange(0, OUT_P)
    mask_i = offs_i < n_in
    mask_h = offs_h < n_hidden
    mask_o = offs_o < n_out
    x = tl.load(
        X_ptr + e * stride_xe + rows[:, None] * stride_xb + offs_i[None, :],
        mask=mask_m[:, None] & mask_i[None, :],
        other=0.0,
    ).to(tl.float32)
    w = tl.load(
        W_in_ptr + e * n_in * n_hidden + offs_i[:, None] * n_hidden + offs_h[None, :],
        mask=mask_i[:, None] & mask_h[None, :],
        other=0.0,
    ).to(tl.float32)
    b = tl.load(B_in_ptr + e * n_hidden + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    h = _act(tl.dot(x, w, input_precision=INPUT_PRECISION) + b[None, :], ACTIVATION)
    hh = n_hidden * n_hidden
    layer_stride = n_members * hh
    for p in tl.static_range(NUM_HID // 2):
        h = _pair(
            h,
            W_hid_ptr + (2 * p) * layer_stride + e * hh,
            B_hid_ptr + (2 * p * n_members + e) * n_hidden,
            W_hid_ptr + (2 * p + 1) * layer_stride + e * hh,
            B_hid_ptr + ((2 * p + 1) * n_members + e) * n_hidden,
            n_hidden,
            n_hidden,
            True,
            ACTIVATION,
            INPUT_PRECISION,
            H_P,
            H_P,
            BLOCK_M,
            BLOCK_N,
        )
    if NUM_HID % 2 == 1:
        # The last hidden layer pairs with the (linear) head.
        out = _pair(
            h,
            W_hid_ptr + (NUM_HID - 1) * layer_stride + e * hh,
            B_hid_ptr + ((NUM_HID - 1) * n_members + e) * n_hidden,
            W_out_ptr + e * n_hidden * n_out,
            B_out_ptr + e * n_out,
            n_hidden,
            n_out,
            False,
            ACTIVATION,
            INPUT_PRECISION,
            H_P,
            OUT_P,
            BLOCK_M,
            BLOCK_N,
        )
    else:
        wo = tl.load(
            W_out_ptr + e * n_hidden * n_out + offs_h[:, None] * n_out + offs_o[None, :],
            mask=mask_h[:, None] & mask_o[None, :],
            other=0.0,
        ).to(tl.float32)
        bo = tl.load(B_out_ptr + e * n_out + offs_o, mask=mask_o, other=0.0).to(tl.float32)
        out = tl.dot(h, wo, input_precision=INPUT_PRECISION) + bo[None, :]
    return out


@triton.jit
def _ensemble_mlp_fwd_kernel(
    X_ptr,  # [B, I] shared or [E, B, I] (stride_xe = 0 for shared), row stride stride_xb
    W_in_ptr,  # [E, I, H]
    B_in_ptr,  # [E, H]
    W_hid_ptr,  # [NUM_HID, E, H, H]
    B_hid_ptr,  # [NUM_HID, E, H]
    W_out_ptr,  # [E, H, O]
    B_out_ptr,  # [E, O]
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
    stride_xe,
    stride_xb,
    stride_ye,
    MODE: tl.constexpr,
    BOUND: tl.constexpr,
    NUM_HID: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    IN_P: tl.constexpr,
    H_P: tl.constexpr,
    OUT_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Grid: MODE 0 (cdiv(B, BLOCK_M), E); MODE 1 (cdiv(B, BLOCK_M),); MODE 2 (n_blocks,)."""
    pid = tl.program_id(0)
    if MODE == 2:
        e = tl.load(BlockMember_ptr + pid)
        pos = tl.load(BlockStart_ptr + pid) + tl.arange(0, BLOCK_M)
        mask_m = pos < tl.load(BlockEnd_ptr + pid)
        rows = tl.load(Order_ptr + pos, mask=mask_m, other=0)
    else:
        rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = rows < n_rows
        e = tl.program_id(1)
    if MODE == 1:
        out = tl.full((BLOCK_M, OUT_P), float("inf"), dtype=tl.float32)
        for m in range(0, n_members):
            out = tl.minimum(
                out,
                _mlp_rows(
                    X_ptr, W_in_ptr, B_in_ptr, W_hid_ptr, B_hid_ptr, W_out_ptr, B_out_ptr, rows, mask_m, m, n_members, n_in, n_hidden, n_out,
                    stride_xe, stride_xb, NUM_HID, ACTIVATION, INPUT_PRECISION,
                    IN_P, H_P, OUT_P, BLOCK_M, BLOCK_N,
                ),
            )  # fmt: skip
    else:
        out = _mlp_rows(
            X_ptr, W_in_ptr, B_in_ptr, W_hid_ptr, B_hid_ptr, W_out_ptr, B_out_ptr, rows, mask_m, e, n_members, n_in, n_hidden, n_out,
            stride_xe, stride_xb, NUM_HID, ACTIVATION, INPUT_PRECISION,
            IN_P, H_P, OUT_P, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    offs_o = tl.arange(0, OUT_P)
    if MODE == 0:
        base = e * stride_ye
    else:
        base = 0
    if BOUND:
        d = n_out // 2
        is_lv = (offs_o >= d) & (offs_o < n_out)
        lv_col = tl.where(is_lv, offs_o - d, 0)
        mx = tl.load(MaxLv_ptr + lv_col, mask=is_lv, other=0.0).to(tl.float32)
        mn = tl.load(MinLv_ptr + lv_col, mask=is_lv, other=0.0).to(tl.float32)
        lv = mx[None, :] - _softplus(mx[None, :] - out)
        lv = mn[None, :] + _softplus(lv - mn[None, :])
        mean_offs = base + rows[:, None] * d + offs_o[None, :]
        tl.store(
            Y_ptr + mean_offs,
            out.to(Y_ptr.dtype.element_ty),
            mask=mask_m[:, None] & (offs_o < d)[None, :],
        )
        tl.store(
            LV_ptr + base + rows[:, None] * d + lv_col[None, :],
            lv.to(LV_ptr.dtype.element_ty),
            mask=mask_m[:, None] & is_lv[None, :],
        )
    else:
        tl.store(
            Y_ptr + base + rows[:, None] * n_out + offs_o[None, :],
            out.to(Y_ptr.dtype.element_ty),
            mask=mask_m[:, None] & (offs_o < n_out)[None, :],
        )


# ----------------------------------------------------------------------------- host launchers


def fused_supported(weights: Sequence[Tensor]) -> bool:
    """Whether the fused kernel takes this MLP: ≥ 2 layers, every hidden width equal and
    ≤ MAX_FUSED_WIDTH, input and output widths ≤ MAX_FUSED_WIDTH."""
    if len(weights) < 2:
        return False
    hidden = weights[0].shape[2]
    if hidden > MAX_FUSED_WIDTH or weights[0].shape[1] > MAX_FUSED_WIDTH:
        return False
    if weights[-1].shape[2] > MAX_FUSED_WIDTH:
        return False
    return all(w.shape[1] == hidden for w in weights[1:]) and all(
        w.shape[2] == hidden for w in weights[1:-1]
    )


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
    h_p = _block(n_hidden, hi=MAX_FUSED_WIDTH)
    block_m = 16 if h_p > 128 else 32  # h `[BLOCK_M, H_P]` lives in registers
    mode = 2 if members is not None else (1 if reduce == "min" else 0)
    if mode == 1 and triton.cdiv(n_rows, block_m) < MIN_ROW_BLOCKS_FOR_FUSED_MIN:
        y, _ = _launch(x, weights, biases, activation, None, None, None, None)
        return y.amin(dim=0), None
    bound = max_logvar is not None
    d = n_out // 2 if bound else n_out
    shape = (e, n_rows, d) if mode == 0 else (n_rows, d)
    y = torch.empty(shape, device=x.device, dtype=x.dtype)
    lv = torch.empty(shape, device=x.device, dtype=x.dtype) if bound else None
    block_n = min(32, h_p)
    dummy = y
    if mode == 2:
        assert members is not None
        order, b_member, b_start, b_end = _block_table(members, e, block_m)
        grid: tuple[int, ...] = (b_member.shape[0],)
    else:
        order = b_member = b_start = b_end = dummy  # never read
        grid = (triton.cdiv(n_rows, block_m), e) if mode == 0 else (triton.cdiv(n_rows, block_m),)
    _ensemble_mlp_fwd_kernel[grid](
        x, w_in, b_in, w_hid, b_hid, w_out, b_out,
        y, lv if lv is not None else dummy,
        max_logvar.contiguous() if bound else dummy,  # type: ignore[union-attr]
        min_logvar.contiguous() if bound else dummy,  # type: ignore[union-attr]
        order, b_member, b_start, b_end,
        n_rows, e, n_in, n_hidden, n_out,
        x.stride(0) if x.dim() == 3 else 0, n_in,
        y.stride(0) if mode == 0 else 0,
        MODE=mode, BOUND=bound, NUM_HID=num_hid, ACTIVATION=act,
        INPUT_PRECISION=input_precision(x.dtype),
        IN_P=_block(n_in, hi=MAX_FUSED_WIDTH), H_P=h_p, OUT_P=_block(n_out, hi=MAX_FUSED_WIDTH),
        BLOCK_M=block_m, BLOCK_N=block_n,
        # The min-over-members mode loops over the members inside the program; software-
        # pipelining that loop (num_stages 3, Triton's default) asks for ~1.2 MB of shared
        # memory at launch on sm_80/sm_90 (an AOT compile, issue 15); one stage needs ~48 KB.
        num_stages=1 if mode == 1 else 3,
    )  # fmt: skip
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
