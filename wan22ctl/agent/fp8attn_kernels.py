"""The Triton kernels of agent/fp8attn.py (imported on first use: Triton loads only where it is asked for).

See fp8attn.py for the scheme; `fp8attn.reference` is what these compute."""

import triton
import triton.language as tl


@triton.jit
def _load_rows(X, length, n_heads, stride_xb, stride_xl, stride_xh, BLOCK: tl.constexpr, D: tl.constexpr):
    """This program's tile of x [B, L, N, D] in float32 (rows past `length` read as zeros), with its
    block index, (b * N + n), row and channel offsets, and the row mask."""
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D)
    valid = rows < length
    x = tl.load(X + (bh // n_heads) * stride_xb + (bh % n_heads) * stride_xh + rows[:, None] * stride_xl
                + cols[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
    return x, blk, bh, rows, cols, valid


@triton.jit
def _program(n_heads, BLOCK_M: tl.constexpr, D: tl.constexpr):
    """This program's query block, (b * N + n), b, n, row and channel offsets (grid: blocks x B*N)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    return pid_m, bh, bh // n_heads, bh % n_heads, rows, tl.arange(0, D)


@triton.jit
def quantize_rows_kernel(X, MEAN, OUT, SCALE, length, n_heads, n_blocks, stride_xb, stride_xl, stride_xh,
                         out_len, BLOCK: tl.constexpr, D: tl.constexpr, HAS_MEAN: tl.constexpr,
                         INT8: tl.constexpr):
    """x [B, L, N, D] (unit channel stride) -> out [B, N, out_len, D] int8 (or e4m3), one scale per
    (b, n, block of BLOCK tokens); rows past `length` are written as zeros."""
    x, blk, bh, rows, cols, valid = _load_rows(X, length, n_heads, stride_xb, stride_xl, stride_xh, BLOCK, D)
    if HAS_MEAN:
        mean = tl.load(MEAN + bh * D + cols)
        x = tl.where(valid[:, None], x - mean[None, :], 0.0)
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    if INT8:
        scale = tl.maximum(amax / 127.0, 1e-12)
        y = x / scale
        y = tl.clamp(tl.where(y >= 0, y + 0.5, y - 0.5), -127.0, 127.0).to(tl.int8)  # half away from zero
    else:
        scale = tl.maximum(amax / 448.0, 1e-12)
        y = tl.clamp(x / scale, -448.0, 448.0).to(tl.float8e4nv)
    tl.store(OUT + bh * out_len * D + rows[:, None] * D + cols[None, :], y)
    tl.store(SCALE + bh * n_blocks + blk, scale)


@triton.jit
def quantize_v_kernel(X, SV, OUT, length, n_heads, stride_xb, stride_xl, stride_xh, out_len,
                      BLOCK: tl.constexpr, D: tl.constexpr):
    """v [B, L, N, D] / per-(b, n, channel) scale -> out [B, N, D, out_len] e4m3, transposed so the
    P @ V MMA reads it K-major; rows past `length` are written as zeros."""
    x, blk, bh, rows, cols, valid = _load_rows(X, length, n_heads, stride_xb, stride_xl, stride_xh, BLOCK, D)
    sv = tl.load(SV + bh * D + cols)
    y = tl.clamp(x / sv[None, :], -448.0, 448.0)
    tl.store(OUT + bh * D * out_len + cols[None, :] * out_len + rows[:, None], y.to(tl.float8e4nv))


@triton.jit
def _tile(q, k_ptrs, vt_ptrs, sk_ptr, start, length, acc, m_i, l_i, qk_scale,
          BLOCK_N: tl.constexpr, MASKED: tl.constexpr, P_SHIFT: tl.constexpr, INT8: tl.constexpr):
    """One key tile of the online softmax. Scores stay raw (int32 read as float through the 2^23
    trick, or the FP8 MMA's float32) and one FMA per element applies the tile's scale, the row
    maximum and P's x2^P_SHIFT: p = exp2(raw * c - bias)."""
    k = tl.load(k_ptrs)
    c = qk_scale * tl.load(sk_ptr)  # log2 units per raw score unit
    if INT8:
        # |raw| <= 127 * 127 * 128 < 2^22: int + 0x4B400000 read as float is exactly 12582912 + int,
        # one integer add instead of a quarter-rate int->float conversion
        raw = (tl.dot(q, tl.trans(k), out_dtype=tl.int32) + 0x4B400000).to(tl.float32, bitcast=True)
        zero = 12582912.0
    else:
        raw = tl.dot(q, tl.trans(k))
        zero = 0.0
    if MASKED:
        cols = start + tl.arange(0, BLOCK_N)
        raw = tl.where(cols[None, :] < length, raw, float("-inf"))
    m_new = tl.maximum(m_i, (tl.max(raw, 1) - zero) * c)
    bias = zero * c + m_new - P_SHIFT
    p = tl.math.exp2(raw * c - bias[:, None])  # probabilities x 2^P_SHIFT
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    vt = tl.load(vt_ptrs)
    pv = tl.dot(p.to(tl.float8e4nv), tl.trans(vt))  # a fresh float32 accumulator per tile
    acc = acc * alpha[:, None] + pv
    return acc, m_new, l_i


@triton.jit
def attn_kernel(Q, K, VT, SQ, SK, SV, O, qk_scale, length_q, length_k, n_heads, q_len, k_len,
                n_qblocks, n_kblocks, stride_ob, stride_ol, stride_oh,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, P_SHIFT: tl.constexpr,
                INT8: tl.constexpr):
    """Q [B, N, q_len, D], K [B, N, k_len, D] int8 (or e4m3), VT [B, N, D, k_len] e4m3 (padded,
    pads zero); scales SQ [B, N, n_qblocks], SK [B, N, n_kblocks], SV [B, N, D]; O [B, Lq, N, D]."""
    pid_m, bh, b, h, rows, cols = _program(n_heads, BLOCK_M, D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + bh * q_len * D + rows[:, None] * D + cols[None, :])
    scale = qk_scale * tl.load(SQ + bh * n_qblocks + pid_m)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    k_ptrs = K + bh * k_len * D + offs_n[:, None] * D + cols[None, :]
    vt_ptrs = VT + bh * D * k_len + cols[:, None] * k_len + offs_n[None, :]
    sk_ptr = SK + bh * n_kblocks
    full = length_k // BLOCK_N
    for j in range(0, full):
        acc, m_i, l_i = _tile(q, k_ptrs, vt_ptrs, sk_ptr, j * BLOCK_N, length_k, acc, m_i, l_i, scale,
                              BLOCK_N, False, P_SHIFT, INT8)
        k_ptrs += BLOCK_N * D
        vt_ptrs += BLOCK_N
        sk_ptr += 1
    if full * BLOCK_N < length_k:
        acc, m_i, l_i = _tile(q, k_ptrs, vt_ptrs, sk_ptr, full * BLOCK_N, length_k, acc, m_i, l_i, scale,
                              BLOCK_N, True, P_SHIFT, INT8)
    sv = tl.load(SV + bh * D + cols)
    out = acc * sv[None, :] / l_i[:, None]  # P's 2^P_SHIFT is in both acc and l_i
    tl.store(O + b * stride_ob + h * stride_oh + rows[:, None] * stride_ol + cols[None, :],
             out.to(O.dtype.element_ty), mask=(rows < length_q)[:, None])


# ---- WAN22_FP8_ATTENTION=cudnn: the quantization before cuDNN's FP8 SDPA and the key tail after it ----

@triton.jit
def quantize_tensor_kernel(X, MEAN, SCALES, OUT, length, n_heads, stride_xb, stride_xl, stride_xh, which,
                           BLOCK: tl.constexpr, D: tl.constexpr, HAS_MEAN: tl.constexpr):
    """x [B, L, N, D] (rows < length) minus the per-(b, n, channel) mean, / SCALES[which] -> out
    [B, length, N, D] e4m3 (contiguous): one pass where eager torch takes three."""
    x, blk, bh, rows, cols, valid = _load_rows(X, length, n_heads, stride_xb, stride_xl, stride_xh, BLOCK, D)
    if HAS_MEAN:
        x = x - tl.load(MEAN + bh * D + cols)[None, :]
    y = tl.clamp(x / tl.load(SCALES + which), -448.0, 448.0).to(tl.float8e4nv)
    b = bh // n_heads
    h = bh % n_heads
    tl.store(OUT + ((b * length + rows[:, None]) * n_heads + h) * D + cols[None, :], y, mask=valid[:, None])


@triton.jit
def tail_merge_kernel(Q, K, V, MEAN, O8, STATS, SCALES, OUT, length_q, main, length_k, n_heads,
                      stride_qb, stride_ql, stride_qh, stride_kb, stride_kl, stride_kh, qk_scale,
                      BLOCK_M: tl.constexpr, BLOCK_T: tl.constexpr, D: tl.constexpr, HAS_TAIL: tl.constexpr):
    """OUT [B, Lq, N, D] = cuDNN's output over keys [0, main) (O8 [B, Lq, N, D] e4m3 x SCALES[2],
    natural-log row stats STATS [B, N, Lq]) merged with exact bf16 attention over the key tail
    [main, length_k) of K smoothed by MEAN (the keys cuDNN saw were smoothed by the same mean, so
    both log-sum-exps carry the same per-row shift). K and V share strides. qk_scale in log2 units."""
    pid_m, bh, b, h, rows, cols = _program(n_heads, BLOCK_M, D)
    valid = rows < length_q
    o = tl.load(O8 + ((b * length_q + rows[:, None]) * n_heads + h) * D + cols[None, :], mask=valid[:, None],
                other=0.0).to(tl.float32) * tl.load(SCALES + 2)
    if HAS_TAIL:
        q = tl.load(Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_ql + cols[None, :],
                    mask=valid[:, None], other=0.0).to(tl.bfloat16)
        mean = tl.load(MEAN + bh * D + cols)
        m_t = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_t = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for start in range(main, length_k, BLOCK_T):
            keys = start + tl.arange(0, BLOCK_T)
            kmask = keys < length_k
            offs = b * stride_kb + h * stride_kh + keys[:, None] * stride_kl + cols[None, :]
            kt = tl.load(K + offs, mask=kmask[:, None], other=0.0).to(tl.float32) - mean[None, :]
            vt = tl.load(V + offs, mask=kmask[:, None], other=0.0).to(tl.bfloat16)
            s = tl.dot(q, tl.trans(kt.to(tl.bfloat16))) * qk_scale
            s = tl.where(kmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_t, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_t - m_new)
            l_t = l_t * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), vt)
            m_t = m_new
        lse_t = m_t + tl.math.log2(l_t)
        lse_m = tl.load(STATS + bh * length_q + rows, mask=valid, other=0.0) * 1.4426950408889634
        top = tl.maximum(lse_m, lse_t)
        w_m = tl.math.exp2(lse_m - top)
        w_t = tl.math.exp2(lse_t - top)
        o = (o * w_m[:, None] + acc * (w_t / l_t)[:, None]) / (w_m + w_t)[:, None]
    tl.store(OUT + ((b * length_q + rows[:, None]) * n_heads + h) * D + cols[None, :], o.to(OUT.dtype.element_ty),
             mask=valid[:, None])
