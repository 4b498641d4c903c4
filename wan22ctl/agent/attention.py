"""Wan2.2's `flash_attention` contract on PyTorch's fused attention, and the switch between backends.

Upstream's DiT calls `wan.modules.attention.flash_attention`, which needs the flash-attn package
(FlashAttention-3 or -2) and dies on an assert without it. This module implements the same
function on `torch.nn.functional.scaled_dot_product_attention` (SDPA) so that the image runs without
flash-attn, and picks the kernel per `WAN22_ATTENTION`:

    auto            the fastest backend measured on this GPU architecture (`MEASURED_ORDER`), else
                    the first available of flash3, sdpa-cudnn, flash2, sdpa-flash
    flash3 / flash2 the flash-attn packages, exactly as upstream calls them (must be installed)
    flash4          FlashAttention-4 (`flash_attn.cute`, package flash-attn-4: CuTe DSL kernels
                    compiled at first use for Hopper and Blackwell; no build step in the image)
    sdpa            SDPA preferring cuDNN, then flash, mem-efficient, math
    sdpa-cudnn / sdpa-flash / sdpa-efficient / sdpa-math
                    SDPA with that kernel first (sdpa-flash = FlashAttention-2 kernels inside PyTorch,
                    the FA2-equivalent baseline of the benchmarks)

Semantics follow flash-attn's varlen call as upstream uses it: q/k/v are [B, L, N, C]; sample i
attends its first `q_lens[i]` queries to its first `k_lens[i]` keys (query rows past `q_lens[i]`
come back as zeros, as do rows with no key to attend); `causal` and `window_size` align the last
query with the last key (flash-attn >= 2.1); inputs that are not fp16/bf16 are cast to `dtype`, and
the result comes back in q's original dtype. Nq may be a multiple of Nk (grouped heads).

Wan's own Python process imports this file: it imports only the standard library, torch and
agent/fp8attn.py (the 8-bit self-attention of WAN22_FP8_ATTENTION beside WAN22_DTYPE=fp8, which
imports Triton or cudnn-frontend only under FP8 weights).
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.nn.functional as F

from wan22ctl.agent import fp8attn

ENV_VAR = "WAN22_ATTENTION"
CHOICES = ("auto", "flash4", "flash3", "flash2", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")

# Backends ranked by measured speed at Wan2.2 shapes, keyed by CUDA compute capability; a backend
# that is not installed is skipped. Source: BENCHMARKS.md, "GPU: attention backends ..." (torch
# 2.11+cu130, 2026-11-27), H100 at A14B 720P (75,600 tokens x 40 heads x 128): FlashAttention-4
# (flash-attn-4 4.0.0b36, CuTe DSL 4.8.1) 669.6 TFLOP/s, cuDNN SDPA 571.7, SDPA's FA2 kernels 355.7;
# 480P 654.9 / 573.8 / 356.7 (H200 runs: cuDNN 554-574 vs FA2 352-361). FA3 could not be installed
# there, so it ranks after the measured winners; capabilities with no measurement use FALLBACK_ORDER.
MEASURED_ORDER: dict[tuple[int, int], tuple[str, ...]] = {
    (9, 0): ("flash4", "sdpa-cudnn", "flash3", "flash2", "sdpa-flash", "sdpa-efficient"),
}
FALLBACK_ORDER = ("flash3", "sdpa-cudnn", "flash2", "sdpa-flash", "sdpa-efficient", "sdpa-math")

_HALF = (torch.float16, torch.bfloat16)
_resolved: dict[int, str] = {}  # device index -> backend name
_fp8_announced = [False]


def _sdpa_backends(name: str) -> list:
    """SDPBackend priority list for an `sdpa-*` choice; fallbacks cover masks the first can't take."""
    from torch.nn.attention import SDPBackend

    table = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    first = {"sdpa": "cudnn"}.get(name, name.removeprefix("sdpa-"))
    order = [first] + [k for k in ("cudnn", "flash", "efficient", "math") if k != first]
    if name != "sdpa" and first in ("cudnn", "flash"):
        # an explicit kernel must not silently turn into the other fast one: keep it measurable
        order = [first, "efficient", "math"]
    return [table[k] for k in order]


def _flash_module(name: str):
    try:
        if name == "flash4":
            import flash_attn.cute as mod  # noqa: PLC0415
        elif name == "flash3":
            import flash_attn_interface as mod  # noqa: PLC0415
        else:
            import flash_attn as mod  # noqa: PLC0415

            mod.flash_attn_varlen_func  # noqa: B018 - flash-attn-4 alone leaves a bare `flash_attn`
    except Exception:  # noqa: BLE001 - a broken install (missing CUDA libs) counts as absent
        return None
    return mod


def _sdpa_usable(name: str, device: torch.device) -> bool:
    """Whether an SDPA kernel runs here: one tiny call with only that kernel allowed."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no per-kernel choice
        return name in ("sdpa", "sdpa-math")
    kernel = {
        "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
        "sdpa-flash": SDPBackend.FLASH_ATTENTION,
        "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    }.get(name)
    if kernel is None:
        return True
    q = torch.randn(1, 2, 256, 128, device=device, dtype=torch.bfloat16)
    try:
        with warnings.catch_warnings(), sdpa_kernel([kernel]):
            warnings.simplefilter("ignore")
            F.scaled_dot_product_attention(q, q, q)
        return True
    except RuntimeError:
        return False


def available(name: str, device: torch.device | None = None) -> bool:
    """Whether backend `name` can run on `device` (default: the current CUDA device)."""
    if name in ("flash3", "flash2"):
        return _flash_module(name) is not None
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if name == "flash4":  # kernels for sm_90 (Hopper) and sm_100+ (Blackwell) only
        return (device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
                and _flash_module(name) is not None)
    if device.type != "cuda":
        return name in ("sdpa", "sdpa-math")
    return _sdpa_usable(name, device)


def requested() -> str:
    """The backend asked for through WAN22_ATTENTION (default auto); ValueError when unknown."""
    name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in CHOICES:
        raise ValueError(f"{ENV_VAR}={name!r} is not one of {', '.join(CHOICES)}")
    return name


def resolve(name: str | None = None, device: torch.device | None = None) -> str:
    """The concrete backend for `name` (default: the environment's) on `device`.

    `auto` walks the measured order for the device's compute capability, else the fallback order,
    and returns the first available backend. An explicit choice that is not available raises
    RuntimeError naming what is missing, so a run never silently measures the wrong kernel.
    """
    name = requested() if name is None else name
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name != "auto":
        if not available(name, device):
            missing = {"flash4": "the flash-attn-4 package (flash_attn.cute) and a Hopper or newer GPU",
                       "flash3": "the flash_attn_interface package (FlashAttention-3)",
                       "flash2": "the flash_attn package (FlashAttention-2)"}.get(name, f"PyTorch's {name} kernel on this GPU")
            raise RuntimeError(f"{ENV_VAR}={name} needs {missing}; use {ENV_VAR}=auto or sdpa")
        return name
    if device.type != "cuda":
        return "sdpa-math"
    order = MEASURED_ORDER.get(torch.cuda.get_device_capability(device), FALLBACK_ORDER)
    for candidate in order:
        if available(candidate, device):
            return candidate
    return "sdpa"


def _backend_for(device: torch.device) -> str:
    index = device.index if device.index is not None else -1
    name = _resolved.get(index)
    if name is None:
        name = resolve(device=device)
        _resolved[index] = name
        cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        where = f"sm_{cap[0]}{cap[1]}" if cap else device.type
        print(f"wan22ctl: attention backend {name} ({ENV_VAR}={requested()}, {where})", file=sys.stderr, flush=True)
    return name


def reset() -> None:
    """Forget the per-device choice (tests and benchmarks switch WAN22_ATTENTION between calls)."""
    _resolved.clear()


def _flash_varlen(name, q, k, v, q_lens, k_lens, lq, lk, b, dropout_p, softmax_scale, causal, window_size, deterministic):
    """The flash-attn varlen call as upstream makes it (q/k/v already packed to [total, N, C])."""
    mod = _flash_module(name)
    cu_q = torch.cat([q_lens.new_zeros([1]), q_lens]).cumsum(0, dtype=torch.int32).to(q.device, non_blocking=True)
    cu_k = torch.cat([k_lens.new_zeros([1]), k_lens]).cumsum(0, dtype=torch.int32).to(q.device, non_blocking=True)
    if name == "flash4":
        return mod.flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=lq,
                                          max_seqlen_k=lk, softmax_scale=softmax_scale, causal=causal,
                                          window_size=_fa4_window(window_size))[0]
    if name == "flash3":
        out = mod.flash_attn_varlen_func(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, seqused_q=None,
                                         seqused_k=None, max_seqlen_q=lq, max_seqlen_k=lk,
                                         softmax_scale=softmax_scale, causal=causal, deterministic=deterministic)
        return out[0] if isinstance(out, tuple) else out
    return mod.flash_attn_varlen_func(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=lq,
                                      max_seqlen_k=lk, dropout_p=dropout_p, softmax_scale=softmax_scale,
                                      causal=causal, window_size=window_size, deterministic=deterministic)


# FlashAttention-4's sm_90 forward tile for head dim 128 is 128 x 128 (its `_tile_size_fwd_sm90`).
# benchmarks/fa4_tiles.py on an H100 (BENCHMARKS.md, session 3) measured 192 x 128 (three MMA
# warpgroups, P kept in registers, no intra-warpgroup overlap) faster at the A14B shapes (720P
# 689.4 vs 676.3 TFLOP/s, 480P 681.4 vs 644.5) and slower at TI2V-5B 1280*704 (634.0 vs 675.1), so
# it is used from FA4_WIDE_TILE_ROWS query rows x heads on (480P A14B: 32,760 x 40 = 1.31 M).
FA4_WIDE_TILE = {"tile_mn": (192, 128), "mma_pv_is_rs": True, "intra_wg_overlap": False, "num_threads": 512}
FA4_WIDE_TILE_ROWS = 1_000_000
_fa4_wide_ok = [True]


def _fa4_dense(q, k, v, softmax_scale, causal, window_size):
    """FlashAttention-4 on unpadded [B, L, N, C] tensors, with the measured tile where it wins."""
    if (_fa4_wide_ok[0] and not causal and tuple(window_size) == (-1, -1) and q.size(-1) == v.size(-1) == 128
            and q.size(2) == k.size(2) and q.size(0) * q.size(1) * q.size(2) >= FA4_WIDE_TILE_ROWS
            and torch.cuda.get_device_capability(q.device)[0] == 9):
        try:
            from flash_attn.cute.interface import _flash_attn_fwd  # noqa: PLC0415 - FA4's own entry point
            return _flash_attn_fwd(q, k, v, softmax_scale=softmax_scale, **FA4_WIDE_TILE)[0]
        except (ImportError, TypeError) as exc:  # another FA4 version: its public call and its own tile
            _fa4_wide_ok[0] = False
            print(f"wan22ctl: FlashAttention-4 tile override unavailable ({exc}); using its default tile",
                  file=sys.stderr, flush=True)
    return _flash_module("flash4").flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal,
                                                   window_size=_fa4_window(window_size))[0]


def _fa4_window(window_size):
    """flash-attn's (-1, -1) = unlimited as FlashAttention-4 spells it (None)."""
    return tuple(None if w < 0 else w for w in window_size)


def _mask(lq: int, lk: int, causal: bool, window_size, device) -> torch.Tensor | None:
    """Boolean [lq, lk] mask (True = attend) with flash-attn's bottom-right alignment, or None."""
    left, right = window_size
    if causal:
        right = 0
    if left < 0 and right < 0:
        return None
    i = torch.arange(lq, device=device).unsqueeze(1) + (lk - lq)
    j = torch.arange(lk, device=device).unsqueeze(0)
    keep = torch.ones(lq, lk, dtype=torch.bool, device=device)
    if right >= 0:
        keep &= j <= i + right
    if left >= 0:
        keep &= j >= i - left
    return keep


def _sdpa(name, q, k, v, dropout_p, softmax_scale, mask):
    """SDPA on [1, L, N, C] tensors with the kernel order of backend `name`; returns [1, Lq, N, C]."""
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kwargs = dict(attn_mask=mask, dropout_p=dropout_p, scale=softmax_scale)
    try:
        from torch.nn.attention import sdpa_kernel
    except ImportError:
        out = F.scaled_dot_product_attention(qt, kt, vt, **kwargs)
    else:
        backends = _sdpa_backends(name) if q.device.type == "cuda" else _sdpa_backends("sdpa-math")
        try:
            ctx = sdpa_kernel(backends, set_priority=True)
        except TypeError:  # torch < 2.6 has no priority order: the listed kernels, default order
            ctx = sdpa_kernel(backends)
        with ctx:
            out = F.scaled_dot_product_attention(qt, kt, vt, **kwargs)
    return out.transpose(1, 2)


def _flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                     causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    assert dtype in _HALF, f"dtype must be float16 or bfloat16, got {dtype}"
    b, lq, lk, out_dtype = q.size(0), q.size(1), k.size(1), q.dtype
    backend = _backend_for(q.device)
    window_size = tuple(window_size)

    def half(x):
        return x if x.dtype in _HALF else x.to(dtype)

    q, k, v = half(q), half(k), half(v)
    q, k = q.to(v.dtype), k.to(v.dtype)
    if q_scale is not None:
        q = q * q_scale

    if backend == "flash4" and dropout_p:  # no dropout in FA4 (Wan never asks for it in inference)
        backend = "sdpa"
    # lengths live on the CPU in Wan (torch.tensor of Python ints): reading them costs no sync
    q_n = [lq] * b if q_lens is None else [int(n) for n in q_lens.tolist()]
    k_n = [lk] * b if k_lens is None else [int(n) for n in k_lens.tolist()]
    full = all(n == lq for n in q_n) and all(n == lk for n in k_n)
    eight_bit = fp8attn.resolve(q.device) if full else None
    if eight_bit and fp8attn.applies(q, k, v, causal, window_size, dropout_p, eight_bit):
        _announce_fp8(q.device, eight_bit)
        run = fp8attn.attention_cudnn if eight_bit == "cudnn" else fp8attn.attention
        return run(q, k, v, softmax_scale).type(out_dtype)
    if backend == "flash4" and full:  # Wan's usual case (self-attention passes k_lens = the full length)
        out = _fa4_dense(q.contiguous(), k.contiguous(), v.contiguous(), softmax_scale, causal, window_size)
        return out.type(out_dtype)
    if backend in ("flash4", "flash3", "flash2"):
        q_l = torch.tensor([lq] * b, dtype=torch.int32, device=q.device) if q_lens is None else q_lens
        k_l = torch.tensor([lk] * b, dtype=torch.int32, device=k.device) if k_lens is None else k_lens
        pq = q.flatten(0, 1) if q_lens is None else torch.cat([u[:n] for u, n in zip(q, q_lens)])
        pk = k.flatten(0, 1) if k_lens is None else torch.cat([u[:n] for u, n in zip(k, k_lens)])
        pv = v.flatten(0, 1) if k_lens is None else torch.cat([u[:n] for u, n in zip(v, k_lens)])
        x = _flash_varlen(backend, pq, pk, pv, q_l.to(torch.int32), k_l.to(torch.int32), lq, lk, b,
                          dropout_p, softmax_scale, causal, window_size, deterministic)
        if q_lens is None:
            return x.unflatten(0, (b, lq)).type(out_dtype)
        out = x.new_zeros(b, lq, *x.shape[1:])
        for i, (start, n) in enumerate(zip(torch.cumsum(q_lens, 0) - q_lens, q_lens)):
            out[i, :n] = x[start:start + n]
        return out.type(out_dtype)

    if q.size(2) != k.size(2):  # grouped heads: SDPA's kernels want equal head counts here
        rep = q.size(2) // k.size(2)
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)

    if full:
        mask = _mask(lq, lk, causal, window_size, q.device)
        out = _sdpa(backend, q, k, v, dropout_p, softmax_scale, mask)
        if mask is not None:
            out = out.masked_fill(~mask.any(-1).view(1, lq, 1, 1), 0)
        return out.contiguous().type(out_dtype)

    out = q.new_zeros(b, lq, q.size(2), v.size(3))
    for i in range(b):
        nq, nk = min(q_n[i], lq), min(k_n[i], lk)
        if nq <= 0 or nk <= 0:
            continue
        mask = _mask(nq, nk, causal, window_size, q.device)
        y = _sdpa(backend, q[i:i + 1, :nq], k[i:i + 1, :nk], v[i:i + 1, :nk], dropout_p, softmax_scale, mask)
        if mask is not None:
            y = y.masked_fill(~mask.any(-1).view(1, nq, 1, 1), 0)
        out[i, :nq] = y[0]
    return out.type(out_dtype)


def _announce_fp8(device: torch.device, mode: str) -> None:
    if not _fp8_announced[0]:
        _fp8_announced[0] = True
        bm, bn, _, _ = fp8attn.config(device)
        how = "cuDNN FP8 SDPA" if mode == "cudnn" else f"Triton, {bm}x{bn} tiles"
        print(f"wan22ctl: self-attention in 8 bits ({how}; {fp8attn.ENV_VAR}={fp8attn.mode()}, off keeps it bf16)",
              file=sys.stderr, flush=True)


def _compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check and check())


def _register_op():
    """`torch.ops.wan22.flash_attention`: the same call as one opaque operator, so that torch.compile
    captures a whole transformer block as one graph (no graph break at attention; the kernel choice
    and the length handling stay Python inside the operator). None where torch has no custom_op."""
    custom_op = getattr(getattr(torch, "library", None), "custom_op", None)
    if custom_op is None:
        return None
    schema = ("(Tensor q, Tensor k, Tensor v, Tensor? q_lens, Tensor? k_lens, float dropout_p, float? softmax_scale, "
              "float? q_scale, bool causal, int window_left, int window_right, bool deterministic, ScalarType dtype)"
              " -> Tensor")

    def impl(q, k, v, q_lens, k_lens, dropout_p, softmax_scale, q_scale, causal, window_left, window_right,
             deterministic, dtype):
        out = _flash_attention(q, k, v, q_lens, k_lens, dropout_p, softmax_scale, q_scale, causal,
                               (window_left, window_right), deterministic, dtype)
        return out.contiguous()  # every path makes a new tensor: no alias of an input

    try:
        op = custom_op("wan22::flash_attention", impl, mutates_args=(), schema=schema)
    except RuntimeError:  # registered already (module imported twice under another name)
        return torch.ops.wan22.flash_attention
    op.register_fake(lambda q, k, v, *rest: q.new_empty(q.size(0), q.size(1), q.size(2), v.size(3)))
    return op


_op = _register_op()
_disable = getattr(getattr(torch, "compiler", None), "disable", None)
_eager = _disable(_flash_attention) if _disable else _flash_attention  # a clean graph break without _op


def flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                    causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """Wan2.2's `flash_attention(q, k, v, q_lens, k_lens, dropout_p, softmax_scale, q_scale,
    causal, window_size, deterministic, dtype, version)` on the backend chosen by WAN22_ATTENTION.

    q: [B, Lq, Nq, C1]; k: [B, Lk, Nk, C1]; v: [B, Lk, Nk, C2]; returns [B, Lq, Nq, C2] in q's dtype.
    `version` is accepted for compatibility and ignored: the backend is chosen by WAN22_ATTENTION.
    Under torch.compile the call goes through the opaque `wan22::flash_attention` operator."""
    if _op is not None and _compiling():
        left, right = window_size
        return _op(q, k, v, q_lens, k_lens, float(dropout_p), softmax_scale, q_scale, bool(causal), int(left),
                   int(right), bool(deterministic), dtype)
    return _eager(q, k, v, q_lens, k_lens, dropout_p, softmax_scale, q_scale, causal, window_size, deterministic,
                  dtype)


def attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
              window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, fa_version=None):
    """Upstream's `attention` wrapper: the same call, always with the padding honoured."""
    return flash_attention(q, k, v, q_lens=q_lens, k_lens=k_lens, dropout_p=dropout_p, softmax_scale=softmax_scale,
                           q_scale=q_scale, causal=causal, window_size=window_size, deterministic=deterministic,
                           dtype=dtype, version=fa_version)


def face_flash_attn_func(q, k, v):
    """flash-attn 2's `flash_attn_func(q, k, v)` as Wan-Animate's face blocks call it ([b, s, heads,
    dim] in and out, no mask): the kit's backend instead. Upstream imports it from `flash_attn`
    and, where flash-attn 2 is absent (flash-attn-3/4, SDPA), calls None."""
    return flash_attention(q, k, v)


# module -> patch: what each upstream module gets from the kit's backend as it loads
PATCHED = ("wan.modules.attention", "wan.modules.animate.face_blocks")


def _patch_module(module) -> None:
    if module.__name__ == "wan.modules.animate.face_blocks":
        module.flash_attn_func = face_flash_attn_func
        return
    module.flash_attention = flash_attention
    if hasattr(module, "attention") and module.__name__ == "wan.modules.attention":
        module.attention = attention


class _PatchAfterLoad:
    """A meta-path finder that swaps `flash_attention` into wan.modules.attention as soon as it loads,
    so every later `from .attention import flash_attention` (model.py, ulysses.py, ...) binds ours."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in PATCHED:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch_module(module)

        loader.exec_module = exec_module
        return spec


def _guard_bare_flash_attn() -> None:
    """flash-attn-4 ships only `flash_attn/cute`, so `flash_attn` becomes a bare namespace package and
    upstream's `from flash_attn import flash_attn_varlen_func` (wan/utils/prompt_extend.py) raises
    ImportError, which upstream does not catch: generate.py dies at import. Upstream catches
    ModuleNotFoundError (flash-attn absent), so the bare namespace answers missing names with that."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("flash_attn")
    except (ImportError, ValueError):
        return
    if spec is None or spec.origin not in (None, "namespace"):  # absent, or the real flash-attn 2
        return
    import flash_attn

    def __getattr__(name):
        if name.startswith("flash_attn_"):  # what upstream imports from flash-attn 2
            raise ModuleNotFoundError(f"flash_attn.{name}: only flash-attn-4 (flash_attn.cute) is installed",
                                      name="flash_attn")
        raise AttributeError(name)

    flash_attn.__getattr__ = __getattr__


def install() -> str:
    """Route Wan's attention through this module; returns the requested backend name.

    Call before `import wan`. Modules of Wan that are already imported get their `flash_attention`
    name rebound too, so calling it later still works for code that looks the name up at call time.
    Validates WAN22_ATTENTION at once (ValueError) so that a typo fails before any weights load.
    """
    name = requested()
    _guard_bare_flash_attn()
    if not any(isinstance(f, _PatchAfterLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterLoad())
    for mod_name, module in list(sys.modules.items()):
        if mod_name == "wan" or mod_name.startswith("wan."):
            if hasattr(module, "flash_attention") or mod_name in PATCHED:
                _patch_module(module)
    return name
