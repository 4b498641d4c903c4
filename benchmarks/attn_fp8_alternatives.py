"""Other FP8 attention kernels at A14B shapes, and cuDNN's FP8 SDPA against the key count, one GPU.

What chose the kit's `WAN22_FP8_ATTENTION=cudnn` split (BENCHMARKS.md, session 9). On keys and
queries cut to a multiple of 128 (L128: 75,520 at 720P, 32,640 at 480P; [1, L, 40, 128] bf16 from
attn_fp8_bench.inputs), the median of 5 calls after a warm-up, TFLOP/s = 4 Lq Lk 40 128 / time, the
relative difference against bf16 FlashAttention-4:

- `fa4 bf16`, `cudnn graph fp8` (`fp8attn.attention_cudnn`);
- cudnn-frontend's Sage FP8 block-sparse attention (CuTe DSL; `cudnn.block_sparse_attention`) with
  every block listed, i.e. dense attention: blk128 and blk64 with its quantization, blk128's kernel
  alone, and its row log-sum-exp checked against smoothed-key and raw scores;
- `--key-lengths`: `fp8attn.attention_cudnn` with every key through cuDNN (KEY_MULTIPLE = 1) for
  Lq = 75,600 and each key count given.

    python3 benchmarks/attn_fp8_alternatives.py [--key-lengths 75600,75520,75648,75264]

Writes attn_fp8_alternatives.json under $OUT (or /tmp). Needs nvidia-cudnn-frontend (and
nvidia-cutlass-dsl for the Sage rows).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks.attn_fp8_bench import DIM, HEADS, inputs, rel  # noqa: E402
from benchmarks.dit_bench import bench_ms  # noqa: E402
from wan22ctl.agent import attention, fp8attn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-lengths", default="", help="comma-separated key counts for the cuDNN sweep")
    parser.add_argument("--no-sage", action="store_true")
    args = parser.parse_args()
    import cudnn

    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv), "rows": {}}

    def row(name, ms, flop, out=None, ref=None):
        r = {"ms": round(ms, 2), "tflops": round(flop / ms / 1e9, 1)}
        if out is not None and ref is not None:
            r["rel"] = round(rel(out, ref), 5)
        res["rows"][name] = r
        print(f"{name:50s} {r}", flush=True)

    for case, length in (("720p", 75600), ("480p", 32760)) if not args.no_sage else ():
        q, k, v = inputs(length)
        l128 = length // 128 * 128
        qs, ks, vs = q[:, :l128], k[:, :l128], v[:, :l128]
        flop = fp8attn.flops(l128, l128, HEADS, DIM)
        os.environ[attention.ENV_VAR] = "flash4"
        attention.reset()
        ref = attention._flash_attention(qs, ks, vs).clone()
        row(f"{case} L{l128} fa4 bf16", bench_ms(lambda: attention._flash_attention(qs, ks, vs), 5), flop)
        row(f"{case} cudnn graph fp8", bench_ms(lambda: fp8attn.attention_cudnn(qs, ks, vs), 5), flop,
            fp8attn.attention_cudnn(qs, ks, vs), ref)
        try:
            from cudnn.block_sparse_attention import _interface as bsa
            from cudnn.block_sparse_attention import block_sparse_attention_fp8_forward
            from cudnn.block_sparse_attention._fp8_quant import _quantize_sage_bhsd
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            continue
        qb, kb, vb = (t.transpose(1, 2).contiguous() for t in (qs, ks, vs))
        for blk in (128, 64):
            n = l128 // blk
            idx = torch.arange(n, device="cuda", dtype=torch.int32).expand(1, HEADS, n, n)  # every block: dense

            def sage(blk=blk, n=n, idx=idx):
                return block_sparse_attention_fp8_forward(qb, kb, vb, idx, n, softmax_scale=DIM ** -0.5,
                                                          sparse_block_size=blk)["o_tensor"]

            out = sage()
            row(f"{case} sage fp8 blk{blk} (quantize incl)", bench_ms(sage, 5), flop, out.transpose(1, 2), ref)
        n = l128 // 128
        idx = torch.arange(n, device="cuda", dtype=torch.int32).expand(1, HEADS, n, n)
        quantized = _quantize_sage_bhsd(qb, kb, vb, v_layout="bhds")
        out, lse = bsa._bsa_attn_fwd_sm90_fp8_blk128(*quantized, idx, n, DIM ** -0.5)
        row(f"{case} sage fp8 blk128 kernel only",
            bench_ms(lambda: bsa._bsa_attn_fwd_sm90_fp8_blk128(*quantized, idx, n, DIM ** -0.5), 5), flop,
            out.transpose(1, 2), ref)
        rows = torch.arange(0, l128, l128 // 64, device="cuda")[:64]
        kf = kb[0].float()
        s_smooth = torch.einsum("hqd,hkd->hqk", qb[0][:, rows].float(), kf - kf.mean(dim=1, keepdim=True)) * DIM ** -0.5
        s_raw = torch.einsum("hqd,hkd->hqk", qb[0][:, rows].float(), kf) * DIM ** -0.5
        got = lse[0][:, rows]
        res["rows"][f"{case} sage lse max abs diff"] = {
            "smoothed": float((got - torch.logsumexp(s_smooth, -1)).abs().max()),
            "raw": float((got - torch.logsumexp(s_raw, -1)).abs().max())}
        print(case, "sage lse max abs diff", res["rows"][f"{case} sage lse max abs diff"], flush=True)
        q = k = v = qs = ks = vs = qb = kb = vb = ref = out = quantized = None
        torch.cuda.empty_cache()

    lengths = [int(x) for x in args.key_lengths.split(",") if x]
    if lengths:
        q, k, v = inputs(max(lengths + [75600]))
        default_multiple, fp8attn.KEY_MULTIPLE = fp8attn.KEY_MULTIPLE, 1
        try:
            for lk in lengths:
                qq, kk, vv = q[:, :75600], k[:, :lk], v[:, :lk]
                row(f"cudnn fp8 every key, Lq 75600 Lk {lk} (Lk % 256 = {lk % 256})",
                    bench_ms(lambda: fp8attn.attention_cudnn(qq, kk, vv), 5), fp8attn.flops(75600, lk, HEADS, DIM))
        finally:
            fp8attn.KEY_MULTIPLE = default_multiple
    path = os.path.join(os.environ.get("OUT", "/tmp"), "attn_fp8_alternatives.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
