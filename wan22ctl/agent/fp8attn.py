"""8-bit self-attention beside `WAN22_DTYPE=fp8`: `WAN22_FP8_ATTENTION=auto|off|triton|cudnn`.

At 720P an A14B forward spends ~6.6 s of its ~9.7 s in self-attention (75,600 tokens x 40 heads,
4.7 PFLOP: bf16 FlashAttention-4 runs it at ~700 TFLOP/s on an H200). The 8-bit tensor cores (FP8,
INT8) have twice the peak, so two 8-bit paths exist for the DiT's self-attention (cross-attention
over the 512 text tokens always stays on the bf16 backend). Measured on an H200 (BENCHMARKS.md,
session 9):

- `cudnn`: cuDNN's FP8 SDPA through the nvidia-cudnn-frontend package (`attention_cudnn`):
  912 TFLOP/s at 720P with its quantization and key tail, 7.36 s a forward with FP8 linears
  (8.94 s with bf16 FlashAttention-4 attention, 9.77 s all bf16); one scale per tensor and an FP8
  output (Hopper cuDNN has no bf16 output for FP8 SDPA); video PSNR against bf16 38.1 dB (FP8
  linears alone: 38.4 dB). What `auto`, the default, runs on Hopper where the package imports.
- `triton`: this module's kernels. 711 TFLOP/s at 720P, no faster than FlashAttention-4 there, so
  only on request; it is the 8-bit path for Ada (sm_89, L40S), where neither FlashAttention-4 nor
  cuDNN's FP8 SDPA runs (not yet measured there).

The Triton scheme is SageAttention2's (INT8 Q K^T, FP8 P V):

- K is smoothed first: its mean over the tokens (per head and channel) is subtracted. Softmax is
  unchanged by it (each query row's scores move by one constant, q . mean) and the offset that DiT
  keys carry per channel no longer sets the quantization range.
- Q gets one scale per head and `BLOCK_M` tokens, K one per head and `BLOCK_N` tokens (amax / 127),
  rounded to int8: the scores come out of the INT8 MMA exact in int32 and are rescaled per tile.
  (e4m3 Q/K measured ~2x the output error; `set_qk_format("fp8")` keeps that variant for the
  benchmark.)
- V gets one e4m3 scale per head and channel, stored transposed so the second MMA reads it K-major.
- The probabilities (0..1) enter the P @ V MMA as p x 2^8, which keeps the small ones out of e4m3's
  subnormal range; each tile's P @ V starts a fresh float32 accumulator that is then added to the
  running output, so the FP8 MMA never sums more than one tile (Hopper's FP8 MMA accumulates at
  reduced precision).
- Online softmax in float32 as in FlashAttention; output bf16 in Wan's [B, L, N, C] layout.

`reference()` computes the same quantized attention with torch tensor code (the CPU tests' yardstick
and the definition of what the kernels compute); `attention()` is the Triton path
(agent/fp8attn_kernels.py).

The cuDNN path (`attention_cudnn`) smooths K the same way, scales each tensor once (cuDNN takes
scalar descales) and quantizes it in one Triton pass; cuDNN's kernel is ~12 % faster when the key
count is a multiple of 256 (KEY_MULTIPLE), so it takes the keys up to the last such multiple and
returns its row log-sum-exp, and `tail_merge_kernel` attends to the rest (80 keys at 720P) in bf16
and merges the two by their log-sum-exps.

Wan's own Python process imports this file: standard library and torch (Triton, which ships with
torch's CUDA wheels, and cudnn-frontend are imported on first use).
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "WAN22_FP8_ATTENTION"
E4M3 = getattr(torch, "float8_e4m3fn", None)
E4M3_MAX = 448.0
P_SHIFT = 8  # probabilities enter the P @ V MMA as p * 2^8 (e4m3's max is 448)
P_SCALE = float(2 ** P_SHIFT)
MIN_KEYS = 4096  # shorter key sequences (cross-attention over text, tiny grids) stay bf16
HEAD_DIMS = (64, 128)
CAPABILITIES = ((8, 9), (9, 0))
LOG2E = 1.4426950408889634

# Kernel tile per compute capability: (BLOCK_M, BLOCK_N, num_warps, num_stages). Chosen by
# benchmarks/attn_fp8_bench.py (BENCHMARKS.md); BLOCK_M and BLOCK_N are also the Q and K scale
# granularity.
CONFIGS: dict[tuple[int, int], tuple[int, int, int, int]] = {
    (9, 0): (128, 128, 8, 3),
    (8, 9): (128, 64, 4, 3),
}
_config_override: list = [None]
QK_FORMATS = ("int8", "fp8")
_qk_format = ["int8"]


MODES = ("auto", "off", "triton", "cudnn")
CUDNN_CAPABILITIES = ((9, 0),)  # cuDNN's FP8 SDPA: Hopper
_ran: list = [None]


def mode() -> str | None:
    """The 8-bit self-attention asked for by WAN22_FP8_ATTENTION, only with WAN22_DTYPE=fp8: None
    (off), "auto" (the default: cudnn where it runs, else bf16 attention; `resolve`), "triton" (this
    module's kernels) or "cudnn" (cuDNN's FP8 SDPA through the nvidia-cudnn-frontend package).
    ValueError when unknown."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value == "0":
        value = "off"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: use {', '.join(MODES)}")
    if value == "off" or (os.environ.get("WAN22_DTYPE", "bf16").strip().lower() or "bf16") != "fp8":
        return None
    return value


def resolve(device: torch.device) -> str | None:
    """The 8-bit self-attention that runs on `device`: `mode()`, with "auto" turned into "cudnn" on
    Hopper where nvidia-cudnn-frontend and Triton import, else None (bf16 attention)."""
    chosen = mode()
    if chosen != "auto":
        return chosen
    if device.type != "cuda" or tuple(torch.cuda.get_device_capability(device)) not in CUDNN_CAPABILITIES:
        return None
    return "cudnn" if _cudnn() is not None and _kernels() is not None else None


def ran() -> str | None:
    """The 8-bit self-attention that ran in this process (None: none did)."""
    return _ran[0]


def missing() -> str | None:
    """What the asked-for 8-bit attention needs and this Python lacks (one line with the fix), or None.
    "auto" lacks nothing: it falls back to bf16 attention."""
    chosen = mode()
    if chosen == "cudnn" and _cudnn() is None:
        return f"{ENV_VAR}=cudnn needs the nvidia-cudnn-frontend package: pip install nvidia-cudnn-frontend"
    if chosen in ("triton", "cudnn") and _kernels() is None:  # cudnn's quantization and key tail are Triton
        return f"{ENV_VAR}={chosen} needs Triton (it ships with torch's CUDA wheels): pip install triton"
    return None


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, window_size, dropout_p: float,
            chosen: str) -> bool:
    """Whether this call can take the `chosen` ("triton" or "cudnn") 8-bit path: CUDA on sm_89/sm_90
    (cudnn: sm_90) with Triton (and cudnn-frontend), equal head counts, head dim 64 or 128, no mask,
    no dropout, >= MIN_KEYS keys."""
    if not (q.is_cuda and E4M3 is not None and not causal and tuple(window_size) == (-1, -1) and not dropout_p):
        return False
    if q.size(-1) not in HEAD_DIMS or v.size(-1) != q.size(-1) or q.size(2) != k.size(2) or k.size(1) < MIN_KEYS:
        return False
    capability = tuple(torch.cuda.get_device_capability(q.device))
    if capability not in (CUDNN_CAPABILITIES if chosen == "cudnn" else CAPABILITIES):
        return False
    if chosen == "cudnn" and _cudnn() is None:
        return False
    if _kernels() is None:
        return False
    _ran[0] = chosen
    return True


def config(device: torch.device) -> tuple[int, int, int, int]:
    if _config_override[0] is not None:
        return _config_override[0]
    return CONFIGS.get(tuple(torch.cuda.get_device_capability(device)), CONFIGS[(9, 0)])


def set_config(value: tuple[int, int, int, int] | None) -> None:
    """Use another tile (benchmarks); None restores the table."""
    _config_override[0] = value


def set_qk_format(value: str) -> None:
    """int8 (default) or fp8 for Q and K (benchmarks)."""
    if value not in QK_FORMATS:
        raise ValueError(f"qk format {value!r}: use {' or '.join(QK_FORMATS)}")
    _qk_format[0] = value


# ---- the definition, in torch ------------------------------------------------------------------

def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """[B, L, N, C] -> [B, N, nblocks, block, C], zero-padded to whole blocks."""
    b, length, n, c = x.shape
    pad = -length % block
    x = x.transpose(1, 2)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(b, n, -1, block, c)


def quantize_blockwise(x: torch.Tensor, block: int, fmt: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 or e4m3 [B, N, nblocks, block, C], float32 scales [B, N, nblocks]) with one scale per
    head and `block` tokens; int8 rounds half away from zero, as the kernel does."""
    xb = _blocks(x.float(), block)
    top = 127.0 if fmt == "int8" else E4M3_MAX
    scale = (xb.abs().amax(dim=(-1, -2)) / top).clamp(min=1e-12)
    y = xb / scale[..., None, None]
    if fmt == "int8":
        return (y + 0.5 * torch.sign(y)).trunc().clamp(-127, 127).to(torch.int8), scale
    return y.clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
              block_m: int = 128, block_n: int = 128, qk_format: str = "int8") -> torch.Tensor:
    """The kernels' computation in float32 torch code: q/k/v [B, L, N, C] -> [B, Lq, N, C] bf16.

    The same quantization of Q, smoothed K, V and P, and the same online softmax over key tiles of
    `block_n` (P is quantized against the running row maximum, as the kernel does)."""
    b, lq, n, c = q.shape
    lk = k.size(1)
    scale = (softmax_scale if softmax_scale is not None else c ** -0.5) * LOG2E
    ks = k.float() - k.float().mean(dim=1, keepdim=True)
    q8, sq = quantize_blockwise(q, block_m, qk_format)
    k8, sk = quantize_blockwise(ks, block_n, qk_format)
    qd = (q8.float() * sq[..., None, None]).reshape(b, n, -1, c)[:, :, :lq]  # [B, N, Lq, C]
    sv = (v.float().abs().amax(dim=1) / E4M3_MAX).clamp(min=1e-12)  # [B, N, C]
    vd = (v.float() / sv[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3).float().transpose(1, 2)  # [B, N, Lk, C]
    m = torch.full((b, n, lq), float("-inf"))
    denom = torch.zeros(b, n, lq)
    acc = torch.zeros(b, n, lq, c)
    for j in range(k8.size(2)):
        kd = k8[:, :, j].float()  # [B, N, block_n, C]
        s = (qd @ kd.transpose(-1, -2)) * (scale * sk[:, :, j, None, None])
        s = s[..., :max(0, min(block_n, lk - j * block_n))]
        m_new = torch.maximum(m, s.amax(dim=-1))
        p = torch.exp2(s - m_new[..., None])
        alpha = torch.exp2(m - m_new)
        denom = denom * alpha + p.sum(dim=-1)
        p8 = (p * P_SCALE).to(E4M3).float()
        acc = acc * alpha[..., None] + p8 @ vd[:, :, j * block_n:j * block_n + s.size(-1)]
        m = m_new
    out = acc * (sv[:, :, None, :] / P_SCALE) / denom[..., None]
    return out.transpose(1, 2).to(torch.bfloat16)


# ---- the Triton kernels ------------------------------------------------------------------------

_cache: dict = {}


def _kernels():
    """The compiled Triton kernels (a namespace), or None where Triton does not import."""
    if "k" in _cache:
        return _cache["k"]
    try:
        from wan22ctl.agent import fp8attn_kernels as kernels  # noqa: PLC0415 - imports Triton
    except Exception:  # noqa: BLE001 - no Triton (CPU wheels): the bf16 backend serves
        kernels = None
    _cache["k"] = kernels
    return kernels


def _quantize(x, block: int, mean=None):
    kern = _kernels()
    b, length, n, d = x.shape
    n_blocks = -(-length // block)
    int8 = _qk_format[0] == "int8"
    out = torch.empty(b, n, n_blocks * block, d, device=x.device, dtype=torch.int8 if int8 else E4M3)
    scale = torch.empty(b, n, n_blocks, device=x.device, dtype=torch.float32)
    kern.quantize_rows_kernel[(n_blocks, b * n)](x, mean if mean is not None else scale, out, scale, length, n, n_blocks,
                                          x.stride(0), x.stride(1), x.stride(2), n_blocks * block,
                                          BLOCK=block, D=d, HAS_MEAN=mean is not None, INT8=int8)
    return out, scale


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None) -> torch.Tensor:
    """8-bit attention on CUDA: q/k/v [B, L, N, C] (bf16/fp16/fp32, unit channel stride) -> [B, Lq, N, C] bf16."""
    kern = _kernels()
    block_m, block_n, warps, stages = config(q.device)
    b, lq, n, d = q.shape
    lk = k.size(1)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    mean = k.mean(dim=1, dtype=torch.float32).contiguous()  # [B, N, D]: K's smoothing
    q8, sq = _quantize(q, block_m)
    k8, sk = _quantize(k, block_n, mean)
    sv = (torch.maximum(v.amax(dim=1), -v.amin(dim=1)).float() / E4M3_MAX).clamp_(min=1e-12).contiguous()
    n_kblocks = k8.size(2) // block_n
    vt = torch.empty(b, n, d, n_kblocks * block_n, device=v.device, dtype=E4M3)
    kern.quantize_v_kernel[(n_kblocks, b * n)](v, sv, vt, lk, n, v.stride(0), v.stride(1), v.stride(2), n_kblocks * block_n,
                                        BLOCK=block_n, D=d)
    out = torch.empty(b, lq, n, d, device=q.device, dtype=torch.bfloat16)
    scale = (softmax_scale if softmax_scale is not None else d ** -0.5) * LOG2E
    n_qblocks = q8.size(2) // block_m
    kern.attn_kernel[(n_qblocks, b * n)](q8, k8, vt, sq, sk, sv, out, scale, lq, lk, n, q8.size(2), k8.size(2),
                                  n_qblocks, n_kblocks, out.stride(0), out.stride(1), out.stride(2),
                                  BLOCK_M=block_m, BLOCK_N=block_n, D=d, P_SHIFT=P_SHIFT,
                                  INT8=_qk_format[0] == "int8", num_warps=warps, num_stages=stages)
    return out


# ---- cuDNN's FP8 SDPA (WAN22_FP8_ATTENTION=cudnn) ---------------------------------------------------

def _cudnn():
    if "cudnn" not in _cache:
        try:
            import cudnn  # noqa: PLC0415 - the nvidia-cudnn-frontend package
        except Exception:  # noqa: BLE001
            cudnn = None
        _cache["cudnn"] = cudnn
    return _cache["cudnn"]


KEY_MULTIPLE = 256  # cuDNN's FP8 SDPA runs ~12 % faster over a key count that is a multiple of this
TAIL_BLOCK = (64, 64)  # tail_merge_kernel's (BLOCK_M, BLOCK_T)


def _amax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x)  # one pass
    return torch.maximum(hi.float(), -lo.float())


def _cudnn_plan(q8, k8, v8, o8, stats, softmax_scale):
    """A built cudnn-frontend graph for these [B, N, L, C] views, with a row-stats output (the
    log-sum-exp, [B, N, Lq, 1]) when `stats` is given; cached per shape and strides."""
    key = (q8.device.index, *(tuple(t.shape) + tuple(t.stride()) for t in (q8, k8, v8, o8)), stats is None,
           softmax_scale)
    plan = _cache.get(key)
    if plan is not None:
        return plan
    cudnn = _cudnn()
    handle = cudnn.create_handle()
    graph = cudnn.pygraph(io_data_type=cudnn.data_type.FP8_E4M3, intermediate_data_type=cudnn.data_type.FLOAT,
                          compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    tensors = {name: graph.tensor(name=name, dim=list(t.shape), stride=list(t.stride()),
                                  data_type=cudnn.data_type.FP8_E4M3) for name, t in zip("QKV", (q8, k8, v8))}
    for name in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"):
        tensors[name] = graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.FLOAT)
    o, row_stats, amax_s, amax_o = graph.sdpa_fp8(
        q=tensors["Q"], k=tensors["K"], v=tensors["V"], descale_q=tensors["descale_q"],
        descale_k=tensors["descale_k"], descale_v=tensors["descale_v"], descale_s=tensors["descale_s"],
        scale_s=tensors["scale_s"], scale_o=tensors["scale_o"], is_inference=stats is None, attn_scale=softmax_scale,
        use_causal_mask=False, name="sdpa_fp8")
    o.set_output(True).set_dim(list(o8.shape)).set_stride(list(o8.stride())).set_data_type(cudnn.data_type.FP8_E4M3)
    if stats is not None:
        row_stats.set_output(True).set_dim(list(stats.shape)).set_stride(list(stats.stride())).set_data_type(
            cudnn.data_type.FLOAT)
    for t in (amax_s, amax_o):
        t.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(cudnn.data_type.FLOAT)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    workspace = torch.empty(max(1, graph.get_workspace_size()), device=q8.device, dtype=torch.uint8)
    amaxes = torch.zeros(2, 1, 1, 1, 1, device=q8.device)
    p_scales = torch.tensor([1.0 / P_SCALE, P_SCALE], device=q8.device).reshape(2, 1, 1, 1, 1)
    plan = (cudnn, handle, graph, tensors, o, row_stats, amax_s, amax_o, workspace, amaxes, p_scales)
    _cache[key] = plan
    return plan


def attention_cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None) -> torch.Tensor:
    """cuDNN's FP8 SDPA (Hopper: FP8 in, FP8 out): q/k/v [B, L, N, C] -> [B, Lq, N, C] bf16.

    K smoothed as in the Triton path; one scale per tensor (cuDNN takes scalar descales), from one
    min/max pass each (K's from its per-channel range and mean, without a smoothed copy); one Triton
    pass quantizes each tensor. cuDNN takes the first KEY_MULTIPLE-multiple of the keys (at 720P
    75,520 of 75,600: 886 against 793 TFLOP/s on an H200) and returns its row log-sum-exp; the few
    keys left (the tail) are attended to exactly in bf16 and merged by `tail_merge_kernel`, which
    also turns the FP8 output (scaled by 448 / amax|V|, |O| <= amax|V|) back into bf16."""
    kern = _kernels()
    b, lq, n, d = q.shape
    lk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if k.stride() != v.stride():  # the tail kernel reads both with one set of strides
        k, v = k.contiguous(), v.contiguous()
    mean = k.mean(dim=1, dtype=torch.float32).contiguous()  # [B, N, C]
    lo, hi = torch.aminmax(k, dim=1)
    amax_k = torch.maximum(hi.float() - mean, mean - lo.float()).amax()  # = amax|k - mean|
    scales = (torch.stack([_amax(q), amax_k, _amax(v)]) / E4M3_MAX).clamp_(min=1e-12)  # sq, sk, sv
    main = lk - lk % KEY_MULTIPLE if lk >= KEY_MULTIPLE else lk
    q8 = torch.empty(b, lq, n, d, device=q.device, dtype=E4M3)
    k8 = torch.empty(b, main, n, d, device=q.device, dtype=E4M3)
    v8 = torch.empty(b, main, n, d, device=q.device, dtype=E4M3)
    for which, (x, x8, length) in enumerate(((q, q8, lq), (k, k8, main), (v, v8, main))):
        kern.quantize_tensor_kernel[(-(-length // 64), b * n)](x, mean, scales, x8, length, n, x.stride(0), x.stride(1),
                                                              x.stride(2), which, BLOCK=64, D=d, HAS_MEAN=which == 1)
    o8 = torch.empty(b, lq, n, d, device=q.device, dtype=E4M3)
    stats = torch.empty(b, n, lq, 1, device=q.device, dtype=torch.float32) if main < lk else None
    views = [t.permute(0, 2, 1, 3) for t in (q8, k8, v8, o8)]  # cuDNN's [B, N, L, C] over Wan's memory
    cudnn, handle, graph, t, o, row_stats, amax_s, amax_o, workspace, amaxes, p_scales = _cudnn_plan(
        *views, stats, float(scale))
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
    sq, sk, sv = (scales[i].reshape(1, 1, 1, 1).clone() for i in range(3))
    feed = {t["Q"]: views[0], t["K"]: views[1], t["V"]: views[2], t["descale_q"]: sq, t["descale_k"]: sk,
            t["descale_v"]: sv, t["descale_s"]: p_scales[0], t["scale_s"]: p_scales[1], t["scale_o"]: 1.0 / sv,
            o: views[3], amax_s: amaxes[0], amax_o: amaxes[1]}
    if stats is not None:
        feed[row_stats] = stats
    graph.execute(feed, workspace, handle=handle)
    out = torch.empty(b, lq, n, d, device=q.device, dtype=torch.bfloat16)
    block_m, block_t = TAIL_BLOCK
    kern.tail_merge_kernel[(-(-lq // block_m), b * n)](
        q, k, v, mean, o8, stats if stats is not None else scales, scales, out, lq, main, lk, n,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), scale * LOG2E,
        BLOCK_M=block_m, BLOCK_T=block_t, D=d, HAS_TAIL=stats is not None)
    return out


def flops(lq: int, lk: int, heads: int, head_dim: int, batch: int = 1) -> float:
    """Multiply-adds x 2 of Q K^T and P V: what TFLOP/s figures divide."""
    return 4.0 * batch * heads * lq * lk * head_dim
