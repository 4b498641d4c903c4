"""FlashAttention-4 forward tile configurations on Hopper at Wan2.2's self-attention shapes.

FA4 picks its sm_90 forward tile from a table (`_tile_size_fwd_sm90`: 128 x 128 for head dim 128);
FlashAttention-3's C++ uses 128 x 176 there. This sweeps the feasible configurations (tile_m,
tile_n, P in registers for the PV matmul, intra-warpgroup overlap) at each case's shape
[1, tokens, heads, 128] bf16, in rounds so clock drift hits every configuration alike, and prints
TFLOP/s per configuration beside cuDNN SDPA and SDPA's FA2 kernels measured in the same run, with
each configuration's error against a float32 reference on a slice of the queries.

    python3 benchmarks/fa4_tiles.py --cases a14b:720p,a14b:480p,5b:1280x704 [--rounds 2]

Writes fa4_tiles.json under $OUT (or /tmp). Needs flash-attn-4 and a Hopper GPU.
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
import torch.nn.functional as F  # noqa: E402

from benchmarks.dit_bench import CFG, SHAPES, bench_ms  # noqa: E402

# (tile_m, tile_n, mma_pv_is_rs, intra_wg_overlap); None = FA4's own choice
CONFIGS = [None, (128, 144, True, True), (128, 160, True, True), (128, 176, True, True),
           (128, 192, True, True), (128, 160, True, False), (128, 176, True, False), (128, 192, True, False),
           (128, 112, True, True), (128, 96, True, True), (128, 144, False, True),
           (192, 128, True, False), (192, 112, True, False), (192, 96, True, False), (192, 128, False, False)]


def label(cfg) -> str:
    if cfg is None:
        return "fa4-default"
    m, n, rs, ol = cfg
    return f"{m}x{n}{'-rs' if rs else ''}{'-ol' if ol else ''}"


def fa4_call(cfg):
    from flash_attn.cute.interface import _flash_attn_fwd

    if cfg is None:
        return lambda q, k, v: _flash_attn_fwd(q, k, v)[0]
    m, n, rs, ol = cfg
    return lambda q, k, v: _flash_attn_fwd(q, k, v, tile_mn=(m, n), mma_pv_is_rs=rs, intra_wg_overlap=ol,
                                           num_threads=128 * (m // 64 + 1))[0]


def reference(q, k, v, rows: int):
    """float32 attention of the first `rows` queries (all keys), [rows, heads, 128]."""
    qs, kf, vf = (t[0].transpose(0, 1).float() for t in (q[:, :rows], k, v))
    return F.scaled_dot_product_attention(qs, kf, vf).transpose(0, 1)


def sweep(case: str, rounds: int, rows: int) -> dict:
    key = case.split(":")[0]
    _, f, h, w = SHAPES[case]
    tokens, heads = f * (h // 2) * (w // 2), CFG[key]["num_heads"]
    flops = 4 * tokens * tokens * 128 * heads
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    ref = reference(q, k, v, rows)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def sdpa(backend):
        def run(*_):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)
        return run

    calls = {"sdpa-flash (FA2)": sdpa(SDPBackend.FLASH_ATTENTION), "sdpa-cudnn": sdpa(SDPBackend.CUDNN_ATTENTION)}
    calls.update({label(c): fa4_call(c) for c in CONFIGS})
    rows_out: dict[str, dict] = {}
    for name, fn in calls.items():  # first call compiles FA4's kernel; check it against the reference
        s = time.perf_counter()
        try:
            out = fn(q, k, v)
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - an infeasible tile is a row, not a crash
            rows_out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
            print(f"{case:12s} {name:18s} error {rows_out[name]['error']}", flush=True)
            continue
        err = (out[0, :rows].float() - ref).abs()
        rows_out[name] = {"first_call_s": round(time.perf_counter() - s, 1), "max_err": float(err.max()),
                          "mean_err": float(err.mean()), "finite": bool(torch.isfinite(out).all()), "ms": []}
        del out
    for _ in range(rounds):
        for name, fn in calls.items():
            if "ms" in rows_out[name]:
                rows_out[name]["ms"].append(bench_ms(lambda: fn(q, k, v), 5))
    for name, row in rows_out.items():
        if row.get("ms"):
            row["best_ms"] = round(min(row["ms"]), 3)
            row["tflops"] = round(flops / row["best_ms"] / 1e9, 1)
            print(f"{case:12s} {name:18s} {row['tflops']:7.1f} TFLOP/s  {row['best_ms']:8.2f} ms  "
                  f"max err {row['max_err']:.1e}  rounds {[round(m, 2) for m in row['ms']]}", flush=True)
    return {"tokens": tokens, "heads": heads, "configs": rows_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="a14b:720p,a14b:480p,5b:1280x704")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ref-rows", type=int, default=256, help="queries checked against float32")
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    out = {"gpu": props.name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": " ".join(sys.argv), "cases": {}}
    for case in args.cases.split(","):
        out["cases"][case] = sweep(case, args.rounds, args.ref_rows)
        torch.cuda.empty_cache()
        json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "fa4_tiles.json"), "w"), indent=1)
    print(f"\n{out['gpu']}  torch {out['torch']}")
    for case, res in out["cases"].items():
        ranked = sorted(((r["tflops"], n) for n, r in res["configs"].items() if "tflops" in r), reverse=True)
        print(f"{case:12s} " + ", ".join(f"{n} {t}" for t, n in ranked[:6]))


if __name__ == "__main__":
    main()
