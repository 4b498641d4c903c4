"""Self-attention at A14B shapes: bf16 FlashAttention-4 / cuDNN against the kit's FP8 kernels, one GPU.

One process, one table: each row runs the same q/k/v ([1, L, 40, 128] bf16, L = 75,600 at 720P and
32,760 at 480P; keys with a per-channel offset and a score temperature that gives peaked rows, as
DiT attention has) and reports the median of `--iters` timed calls after a warm-up, TFLOP/s
(4 L^2 N C per call) and the relative difference of the output against bf16 FlashAttention-4
(or cuDNN where FA4 is absent):

- `flash4`, `sdpa-cudnn`: the kit's bf16 backends (agent/attention.py);
- `8-bit int8-qk BMxBNwWsS`: agent/fp8attn.py (INT8 Q K^T, FP8 P V) with that Triton tile
  (quantization included), and its attention kernel alone on pre-quantized inputs (`kernel only`);
  `fp8-qk`: the same with Q and K in e4m3;
- `cudnn-fp8`: cuDNN's own FP8 SDPA through cudnn-frontend (`fp8attn.attention_cudnn`: per-tensor
  scales, FP8 output, quantization and the bf16 key tail included), where the package imports; and
  the same with every key through cuDNN (`fp8attn.KEY_MULTIPLE = 1`, session 8's split).

    python3 benchmarks/attn_fp8_bench.py [--cases 720p,480p] [--configs 128x128w8s3,...]

Writes attn_fp8_bench.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.dit_bench import bench_ms  # noqa: E402
from wan22ctl.agent import attention, fp8attn  # noqa: E402

TOKENS = {"720p": 21 * 45 * 80, "480p": 21 * 30 * 52}
HEADS, DIM = 40, 128


def inputs(tokens: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    shape = (1, tokens, HEADS, DIM)
    q = torch.randn(shape, device="cuda", generator=g, dtype=torch.bfloat16) * 2.0
    k = (torch.randn(shape, device="cuda", generator=g, dtype=torch.bfloat16)
         + 4.0 * torch.randn((1, 1, HEADS, DIM), device="cuda", generator=g, dtype=torch.bfloat16))
    v = torch.randn(shape, device="cuda", generator=g, dtype=torch.bfloat16)
    return q, k, v


def timed(fn, iters: int):
    """(median seconds of `iters` calls after warm-ups, dit_bench's CUDA-event timing; the output)."""
    return bench_ms(fn, iters) / 1e3, fn()


def rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def parse_config(text: str) -> tuple[int, int, int, int]:
    tile, rest = text.split("w")
    bm, bn = tile.split("x")
    warps, stages = rest.split("s")
    return int(bm), int(bn), int(warps), int(stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="720p,480p")
    parser.add_argument("--configs", default="128x128w8s3,128x128w8s4,128x64w4s3,128x128w4s3,64x128w4s4,128x64w8s4")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--no-cudnn-fp8", action="store_true")
    args = parser.parse_args()

    props = torch.cuda.get_device_properties(0)
    res = {"gpu": props.name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": " ".join(sys.argv), "cases": {}}
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    path = os.path.join(os.environ.get("OUT", "/tmp"), "attn_fp8_bench.json")
    print(f"{props.name}; torch {torch.__version__}; triton {res['triton']}", flush=True)
    for case in args.cases.split(","):
        tokens = TOKENS[case]
        q, k, v = inputs(tokens)
        flop = fp8attn.flops(tokens, tokens, HEADS, DIM)
        rows, ref = {}, None

        def record(name, seconds, out, **extra):
            row = {"ms": round(seconds * 1e3, 2), "tflops": round(flop / seconds / 1e12, 1), **extra}
            if ref is not None and out is not None:
                row["rel_diff_vs_bf16"] = round(rel(out, ref), 5)
            rows[name] = row
            print(f"{case:5s} {name:32s} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)

        for backend in ("flash4", "sdpa-cudnn"):
            try:
                os.environ[attention.ENV_VAR] = backend
                attention.reset()
                seconds, out = timed(lambda: attention._flash_attention(q, k, v), args.iters)
                if ref is None:
                    ref = out.clone()
                    res.setdefault("reference", {})[case] = backend
                record(backend, seconds, out)
            except Exception as exc:  # noqa: BLE001 - a backend that is absent is a row with its reason
                rows[backend] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                print(case, backend, rows[backend], flush=True)
        variants = [("int8", text) for text in args.configs.split(",")] + [("fp8", args.configs.split(",")[0])]
        for fmt, text in variants:
            cfg = parse_config(text)
            name = f"8-bit {fmt}-qk {text}"
            try:
                fp8attn.set_config(cfg)
                fp8attn.set_qk_format(fmt)
                seconds, out = timed(lambda: fp8attn.attention(q, k, v), args.iters)
                record(name, seconds, out)
                # the attention kernel alone, inputs quantized once
                bm, bn, warps, stages = cfg
                kern = fp8attn._kernels()
                mean = k.mean(dim=1, dtype=torch.float32).contiguous()
                q8, sq = fp8attn._quantize(q, bm)
                k8, sk = fp8attn._quantize(k, bn, mean)
                sv = (torch.maximum(v.amax(dim=1), -v.amin(dim=1)).float() / 448.0).clamp_(min=1e-12).contiguous()
                nk = k8.size(2) // bn
                vt = torch.empty(1, HEADS, DIM, nk * bn, device="cuda", dtype=torch.float8_e4m3fn)
                kern.quantize_v_kernel[(nk, HEADS)](v, sv, vt, tokens, HEADS, v.stride(0), v.stride(1), v.stride(2),
                                                    nk * bn, BLOCK=bn, D=DIM)
                o = torch.empty_like(q)
                nq = q8.size(2) // bm

                def kernel_only():
                    kern.attn_kernel[(nq, HEADS)](q8, k8, vt, sq, sk, sv, o, DIM ** -0.5 * fp8attn.LOG2E, tokens,
                                                  tokens, HEADS, q8.size(2), k8.size(2), nq, nk, o.stride(0),
                                                  o.stride(1), o.stride(2), BLOCK_M=bm, BLOCK_N=bn, D=DIM,
                                                  P_SHIFT=fp8attn.P_SHIFT, INT8=fmt == "int8", num_warps=warps,
                                                  num_stages=stages)
                    return o

                seconds, out = timed(kernel_only, args.iters)
                record(name + " kernel only", seconds, out)
            except Exception as exc:  # noqa: BLE001
                rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                print(case, name, rows[name], flush=True)
            finally:
                fp8attn.set_config(None)
                fp8attn.set_qk_format("int8")
        cudnn_rows = (("cudnn-fp8 (per-tensor, fp8 out)", None),  # the kit's: bf16 key tail past a multiple of 256
                      ("cudnn-fp8 every key in cuDNN", 1))  # session 8's split
        for name, multiple in cudnn_rows if not args.no_cudnn_fp8 else ():
            default_multiple = fp8attn.KEY_MULTIPLE
            fp8attn.KEY_MULTIPLE = multiple or default_multiple
            try:
                seconds, out = timed(lambda: fp8attn.attention_cudnn(q, k, v), args.iters)
                record(name, seconds, out)
            except Exception as exc:  # noqa: BLE001
                rows[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                print(case, name, rows[name], flush=True)
            finally:
                fp8attn.KEY_MULTIPLE = default_multiple
        res["cases"][case] = {"tokens": tokens, "rows": rows}
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        q = k = v = ref = out = None
        torch.cuda.empty_cache()
    print("wrote", path)


if __name__ == "__main__":
    main()
