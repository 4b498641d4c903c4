"""Per-forward time of upstream Wan2.2 `WanModel` per attention backend and per speedup, on one GPU.

Builds the DiT from upstream's own classes (A14B or TI2V-5B config, random bf16 weights; output
projections scaled down so activations stay bounded), runs one denoising forward at real video
shapes, and reports: the bf16 matmul rate and copy bandwidth of the card, each attention kernel's
TFLOP/s at the case's shape, the forward time per variant with its ratio against the
FlashAttention-2-equivalent baseline (SDPA's flash kernel) measured in the same run, the relative
difference of every variant's output against the unpatched model with the same attention kernel,
peak memory, and the bf16 compute floor (the forward's FLOPs over the measured matmul rate).

    python3 benchmarks/dit_bench.py --cases a14b:480p,a14b:720p,5b:1280x704 [--quick]

Needs upstream Wan2.2 (`WAN22_DIR`, default .devcarry/wan2.2) and diffusers importable; writes
dit_bench.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from wan22ctl.agent import attention as A  # noqa: E402
from benchmarks.synth_checkpoints import bare_wan_packages  # noqa: E402
from wan22ctl.agent import speedups as S  # noqa: E402

CFG = {
    "a14b": dict(model_type="t2v", dim=5120, ffn_dim=13824, freq_dim=256, num_heads=40, num_layers=40,
                 in_dim=16, out_dim=16, text_len=512),
    "5b": dict(model_type="ti2v", dim=3072, ffn_dim=14336, freq_dim=256, num_heads=24, num_layers=30,
               in_dim=48, out_dim=48, text_len=512),
}
# latent (C, F, H, W): A14B VAE stride (4, 8, 8) at 81 frames; 5B stride (4, 16, 16) at 121 frames
SHAPES = {"a14b:480p": (16, 21, 60, 104), "a14b:720p": (16, 21, 90, 160), "5b:1280x704": (48, 31, 44, 80)}
# name -> (WAN22_ATTENTION, time-embed-once, fast rope, compile, FA4 wide tile where it applies)
VARIANTS = {
    "fa2-equiv": ("sdpa-flash", False, False, False, True),
    "cudnn": ("sdpa-cudnn", False, False, False, True),
    "auto": ("auto", False, False, False, True),
    "cudnn+once": ("sdpa-cudnn", True, False, False, True),
    "cudnn+rope": ("sdpa-cudnn", False, True, False, True),
    "cudnn+once+rope": ("sdpa-cudnn", True, True, False, True),
    "flash4-own-tile": ("flash4", False, False, False, False),
    "flash4": ("flash4", False, False, False, True),
    "flash4+once+rope": ("flash4", True, True, False, True),
    "flash4-own-tile+once+rope+compile": ("flash4", True, True, True, False),
    "kit-default-eager": ("auto", True, True, False, True),
    "kit-default": ("auto", True, True, True, True),  # what a run of >= 20 steps gets (WAN22_COMPILE=auto)
}


def load_wan_model_module(wan_dir: str):
    """Import wan.modules.model without running wan/__init__.py (which imports every pipeline)."""
    bare_wan_packages(wan_dir)
    A.install()
    import wan.modules.model as M

    return M


def bench_ms(fn, iters=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def card_ceilings() -> dict:
    n = 8192
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm = bench_ms(lambda: a @ b, 20)
    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    cp = bench_ms(lambda: y.copy_(x), 20)
    return {"matmul_bf16_tflops": round(2 * n**3 / mm / 1e9, 1), "copy_gbps": round(2 * 2**30 / cp / 1e6, 1)}


def attention_kernels(tokens: int, heads: int) -> dict:
    """TFLOP/s of each SDPA kernel at one self-attention shape (random bf16, no mask)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, heads, tokens, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * tokens * tokens * 128 * heads
    res = {}
    for name, kernel in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                         ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([kernel]):
                ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), 5)
            res[name] = {"ms": round(ms, 2), "tflops": round(flops / ms / 1e9, 1)}
        except RuntimeError as exc:
            res[name] = {"error": str(exc)[:120]}
    if A.available("flash4"):  # FlashAttention-4 takes [B, L, N, C]
        fa4 = A._flash_module("flash4").flash_attn_func
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        ms = bench_ms(lambda: fa4(qt, kt, vt), 5)
        res["flash4"] = {"ms": round(ms, 2), "tflops": round(flops / ms / 1e9, 1)}
    return res


def forward_flops(cfg: dict, tokens: int, text_len: int = 512) -> dict:
    """Matmul FLOPs of one DiT forward: projections, FFN, self- and cross-attention."""
    d, f, layers = cfg["dim"], cfg["ffn_dim"], cfg["num_layers"]
    gemm = layers * (2 * tokens * d * d * 4 + 2 * tokens * d * d * 2 + 2 * text_len * d * d * 2 + 2 * tokens * d * f * 2)
    attn = layers * (4 * tokens * tokens * d + 4 * tokens * text_len * d)
    return {"gemm": gemm, "attention": attn, "total": gemm + attn}


def build(M, key: str):
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = M.WanModel(**CFG[key]).eval().requires_grad_(False)
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for b in model.blocks:
            b.self_attn.o.weight.mul_(0.05)
            b.cross_attn.o.weight.mul_(0.05)
            b.ffn[2].weight.mul_(0.05)
        torch.nn.init.normal_(model.head.head.weight, std=0.02)  # upstream zero-inits it
    return model


WIDE_TILE_ROWS = A.FA4_WIDE_TILE_ROWS


def set_variant(M, model, name: str, eager_rope):
    attention, once, rope, compiled, wide_tile = VARIANTS[name]
    A.FA4_WIDE_TILE_ROWS = WIDE_TILE_ROWS if wide_tile else float("inf")
    os.environ[A.ENV_VAR] = attention
    A.reset()
    S.remove_from_model(model)
    if once:
        S.apply_to_model(model)
    M.rope_apply = S.rope_apply if rope else eager_rope
    if compiled:
        S.compile_blocks(M)
    else:
        S.uncompile_blocks(M)


KERNEL_KINDS = (("attention", ("flash", "fmha", "attention", "attn")), ("gemm", ("gemm", "nvjet", "xmma", "cublas", "cutlass")),
                ("fused (compiled)", ("triton",)))


def profile_forward(model, x, t, ctx, tokens: int, top: int = 25) -> dict:
    """GPU kernel time of one forward by kind (attention / gemm / compiled fusions / other), plus the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.no_grad(), \
            torch.amp.autocast("cuda", dtype=torch.bfloat16):
        model(x, t=t, context=ctx, seq_len=tokens)
        torch.cuda.synchronize()
    kernels = {}
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        if us > 0:
            kernels[evt.key] = (kernels.get(evt.key, (0, 0))[0] + us, evt.count)
    kinds: dict[str, float] = {}
    for name, (us, _) in kernels.items():
        low = name.lower()
        kind = next((k for k, words in KERNEL_KINDS if any(w in low for w in words)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + us / 1e6
    topk = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return {"kinds_s": {k: round(v, 3) for k, v in kinds.items()}, "total_s": round(sum(kinds.values()), 3),
            "top": [{"kernel": n[:140], "s": round(us / 1e6, 4), "count": c} for n, (us, c) in topk]}


def case_inputs(case: str):
    """(x, context, t, tokens) of one forward at a SHAPES case: the same random tensors on every call."""
    c, f, h, w = SHAPES[case]
    g = torch.Generator(device="cuda").manual_seed(1)
    x = [torch.randn(c, f, h, w, device="cuda", generator=g)]
    ctx = [torch.randn(77, 4096, device="cuda", generator=g)]
    return x, ctx, torch.tensor([900.0], device="cuda"), f * (h // 2) * (w // 2)


def timed_calls(call, n: int):
    """`call()` n times, each timed between two CUDA synchronisations: yields (seconds, what it returned)."""
    for _ in range(n):
        torch.cuda.synchronize()
        s = time.perf_counter()
        out = call()
        torch.cuda.synchronize()
        yield time.perf_counter() - s, out


def run_case(M, model, case: str, variants: list[str], timed: int, eager_rope, profiled=()) -> dict:
    x, ctx, t, tokens = case_inputs(case)
    res = {"tokens": tokens, "variants": {}}
    outs = {}
    for name in variants:
        set_variant(M, model, name, eager_rope)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            for seconds, y in timed_calls(lambda: model(x, t=t, context=ctx, seq_len=tokens)[0], 1 + timed):
                times.append(seconds)
        outs[name] = y.float()
        row = {"first_s": round(times[0], 3), "forward_s": round(min(times[1:]), 3),
               "all_s": [round(v, 3) for v in times], "backend": A._resolved.get(torch.cuda.current_device()),
               "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
               "finite": bool(torch.isfinite(y).all())}
        kernel = VARIANTS[name][0]
        same_kernel = ("cudnn" if kernel == "sdpa-cudnn" and "cudnn" in outs
                       else "flash4" if kernel in ("flash4", "auto") and "flash4" in outs else None)
        for ref in ("fa2-equiv", "cudnn", same_kernel):
            if ref and ref in outs and ref != name:
                row[f"rel_diff_vs_{ref}"] = float((y.float() - outs[ref]).norm() / outs[ref].norm())
        if name in profiled:
            row["profile"] = profile_forward(model, x, t, ctx, tokens)
            print(f"{case:12s} {name:22s} kernel time by kind {row['profile']['kinds_s']}", flush=True)
            for k in row["profile"]["top"]:
                print(f"    {k['s']:8.4f} s  x{k['count']:<5d} {k['kernel']}", flush=True)
        res["variants"][name] = row
        print(f"{case:12s} {name:22s} {row['all_s']} backend={row['backend']} peak={row['peak_gib']}GiB "
              + " ".join(f"{k}={v:.2e}" for k, v in row.items() if k.startswith("rel_diff")), flush=True)
    S.uncompile_blocks(M)
    base = res["variants"].get("fa2-equiv", {}).get("forward_s")
    for row in res["variants"].values():
        if base:
            row["speedup_vs_fa2"] = round(base / row["forward_s"], 3)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a14b:480p,a14b:720p,5b:1280x704")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--timed", type=int, default=2, help="timed forwards after one warm-up")
    parser.add_argument("--profile", default="", help="variants to profile (one more forward each)")
    parser.add_argument("--wan-dir", default=os.environ.get("WAN22_DIR", os.path.join(REPO, ".devcarry", "wan2.2")))
    args = parser.parse_args()

    M = load_wan_model_module(args.wan_dir)
    eager_rope = M.rope_apply
    props = torch.cuda.get_device_properties(0)
    ceilings = card_ceilings()
    torch.cuda.empty_cache()
    out = {"gpu": props.name, "capability": list(torch.cuda.get_device_capability(0)), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": " ".join(sys.argv), **ceilings, "cases": {}}
    print(json.dumps({k: v for k, v in out.items() if k != "cases"}), flush=True)
    cases = args.cases.split(",")
    variants = args.variants.split(",")
    for key in dict.fromkeys(c.split(":")[0] for c in cases):
        model = build(M, key)
        for case in [c for c in cases if c.startswith(key + ":")]:
            res = run_case(M, model, case, variants, args.timed, eager_rope,
                           profiled=[p for p in args.profile.split(",") if p])
            heads = CFG[key]["num_heads"]
            res["attention_kernels"] = attention_kernels(res["tokens"], heads)
            torch.cuda.empty_cache()
            fl = forward_flops(CFG[key], res["tokens"])
            res["flops"] = fl
            res["floor_s"] = round(fl["total"] / (out["matmul_bf16_tflops"] * 1e12), 2)
            out["cases"][case] = res
            json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "dit_bench.json"), "w"), indent=1)
        del model
        torch.cuda.empty_cache()

    print(f"\n{out['gpu']}  torch {out['torch']}  matmul {out['matmul_bf16_tflops']} TFLOP/s  copy {out['copy_gbps']} GB/s")
    print(f"{'case':12s} {'variant':22s} {'backend':11s} {'s/forward':>9s} {'x fa2':>6s} {'first':>7s} {'peak GiB':>8s} {'rel diff':>9s}")
    for case, res in out["cases"].items():
        for name, row in res["variants"].items():
            diff = row.get("rel_diff_vs_flash4" if VARIANTS[name][0] in ("flash4", "auto") else "rel_diff_vs_cudnn",
                           row.get("rel_diff_vs_fa2-equiv", 0.0))
            print(f"{case:12s} {name:22s} {str(row['backend']):11s} {row['forward_s']:9.3f} "
                  f"{row.get('speedup_vs_fa2', 0):6.2f} {row['first_s']:7.1f} {row['peak_gib']:8.1f} {diff:9.1e}")
        ak = res["attention_kernels"]
        print(f"{case:12s} attention TFLOP/s: " + ", ".join(f"{k} {v.get('tflops', 'n/a')}" for k, v in ak.items())
              + f"; bf16 floor {res['floor_s']} s/forward ({res['flops']['total'] / 1e15:.2f} PFLOP)")


if __name__ == "__main__":
    main()
