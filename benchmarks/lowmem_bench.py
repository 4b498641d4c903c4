"""Per-forward time and peak memory of the A14B DiT in bf16, FP8 and block streaming, on one GPU.

One process, one upstream `WanModel` (A14B config, random bf16 weights as in dit_bench.py), the
kit's defaults (auto attention, timestep once, fp32 RoPE, compiled block), real 480P/720P shapes:

- bf16 resident, the reference output per case;
- FP8 (`wan22ctl.agent.fp8.quantize_blocks`): time, peak, relative difference against bf16, with
  bf16 attention (`fp8`) and with the FP8 self-attention of agent/fp8attn.py (`fp8attn`, what
  WAN22_DTYPE=fp8 runs);
- torchao's float8 path on the same linears (`Float8DynamicActivationFloat8WeightConfig(PerRow())`),
  when torchao imports (--torchao);
- block streaming (`wan22ctl.agent.streaming`) under GPU-memory caps that emulate smaller cards
  (`torch.cuda.set_per_process_memory_fraction`), with the resident block count the planner picks
  (`wan22ctl.plan.lowmem.placement`), peak allocated/reserved checked against the cap;
- diffusers' `WanTransformer3DModel` (A14B config, its default attention, no compile) at 720P.

    python3 benchmarks/lowmem_bench.py --cases a14b:720p,a14b:480p --caps 24,48 [--torchao] [--diffusers]

Needs upstream Wan2.2 (`WAN22_DIR`, default .devcarry/wan2.2) and diffusers importable; writes
lowmem_bench.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from benchmarks import dit_bench as D  # noqa: E402
from wan22ctl.agent import fp8, fp8attn, speedups as S, streaming  # noqa: E402
from wan22ctl.plan import lowmem  # noqa: E402

SIZES = {"a14b:720p": "1280*720", "a14b:480p": "832*480"}


def run(model, case: str, timed: int = 1) -> dict:
    """First forward (compilation, FA4 kernels) and `timed` more; peak memory; the last output."""
    x, ctx, t, tokens = D.case_inputs(case)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, y = [], None
    try:
        with torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
            for seconds, y in D.timed_calls(lambda: model(x, t=t, context=ctx, seq_len=tokens)[0], 1 + timed):
                times.append(seconds)
    except torch.OutOfMemoryError as exc:
        return {"error": "out of memory: " + str(exc).splitlines()[0][:160], "all_s": [round(v, 3) for v in times]}
    return {"first_s": round(times[0], 3), "forward_s": round(min(times[1:]), 3), "all_s": [round(v, 3) for v in times],
            "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
            "finite": bool(torch.isfinite(y).all()), "out": y.float()}


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def diffusers_forward(case: str, timed: int) -> dict:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WanTransformer3DModel().to(torch.bfloat16).eval().requires_grad_(False)  # A14B defaults
    c, f, h, w = D.SHAPES[case]
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(1, c, f, h, w, device="cuda", generator=g, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, 4096, device="cuda", generator=g, dtype=torch.bfloat16)
    t = torch.tensor([900], device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        forward = functools.partial(model, hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)
        for seconds, _ in D.timed_calls(forward, 1 + timed):
            times.append(seconds)
    row = {"first_s": round(times[0], 3), "forward_s": round(min(times[1:]), 3),
           "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    del model, forward
    return row


class Bench:
    """The rows of one run, in priority order, each skipped once the time budget is spent; the JSON
    is rewritten after every row so a run cut short still reports what it measured."""

    def __init__(self, args, M, eager_rope):
        self.args, self.M = args, M
        self.started = time.monotonic()
        props = torch.cuda.get_device_properties(0)
        self.total_gib = props.total_memory / 2**30
        self.res = {"gpu": props.name, "total_gib": round(self.total_gib, 1), "torch": torch.__version__,
                    "attention": os.environ.get("WAN22_ATTENTION", "auto"),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
                    "rows": {}, "skipped": []}
        self.path = os.path.join(os.environ.get("OUT", "/tmp"), "lowmem_bench.json")
        if args.layers:
            D.CFG["a14b"] = dict(D.CFG["a14b"], num_layers=args.layers)
        self.model = D.build(M, "a14b")
        D.set_variant(M, self.model, "kit-default", eager_rope)
        self.refs: dict = {}
        self.fp8_model = None
        self.stream = None

    def left(self) -> bool:
        return time.monotonic() - self.started < self.args.budget_s

    def record(self, key: str, row: dict, case: str | None = None) -> None:
        out = row.pop("out", None)
        ref = self.refs.get(case, {}).get("out") if case else None
        if ref is not None and out is not None and out is not ref:
            row["rel_diff_vs_bf16"] = rel(out, ref)
        row["t_s"] = round(time.monotonic() - self.started, 1)
        self.res["rows"][key] = row
        print(f"{key:40s} " + " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        with open(self.path, "w") as f:
            json.dump(self.res, f, indent=1)

    def streamed(self, model, resident: int):
        if self.stream is not None:
            self.stream.remove()
        self.stream = streaming.StreamedModel(model, torch.device("cuda", 0), resident)
        gc.collect()
        torch.cuda.empty_cache()
        return self.stream

    # -- rows ---------------------------------------------------------------------------------------

    def bf16(self, case: str) -> None:
        if self.stream is not None:  # the model lives in host memory by now: all 40 blocks resident
            self.streamed(self.model, lowmem.BLOCKS)
        row = run(self.model, case, self.args.timed)
        self.refs[case] = dict(row)
        if self.stream is not None:
            self.stream.deactivate()
        self.record(f"bf16 resident {case}", row)

    def fp8(self, case: str, fp8_attention: str = "0", key_multiple: int | None = None) -> None:
        """FP8 block linears; `fp8_attention` is WAN22_FP8_ATTENTION for the row: "0" bf16 attention,
        "triton" the 8-bit self-attention of agent/fp8attn.py, "cudnn" cuDNN's FP8 SDPA (with
        `key_multiple` 1: every key through cuDNN, no bf16 key tail, as in session 8)."""
        if self.fp8_model is None:
            q = copy.deepcopy(self.model)
            S.remove_from_model(q)  # deepcopy shares the timestep-once closures with the original
            S.apply_to_model(q)
            self.res["fp8_linears"] = fp8.quantize_blocks(q)
            self.fp8_model = q
        self.fp8_model.to("cuda")
        saved = {name: os.environ.get(name) for name in ("WAN22_DTYPE", fp8attn.ENV_VAR)}
        os.environ.update({"WAN22_DTYPE": "fp8", fp8attn.ENV_VAR: fp8_attention})  # read at each call
        default_multiple = fp8attn.KEY_MULTIPLE
        fp8attn.KEY_MULTIPLE = key_multiple or default_multiple
        try:
            row = run(self.fp8_model, case, self.args.timed)
        finally:
            fp8attn.KEY_MULTIPLE = default_multiple
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.fp8_model.to("cpu")  # off the GPU while other rows run under caps
        torch.cuda.empty_cache()
        label = {"0": "", "triton": "+8bit-attn", "cudnn": "+cudnn-fp8-attn"}[fp8_attention]
        label += " all-keys" if key_multiple == 1 else ""
        self.record(f"fp8{label} resident {case}", row, case)

    def capped(self, dtype: str, cap: float, case: str) -> None:
        p = lowmem.placement(cap, SIZES[case], dtype)
        if self.args.resident is not None:
            p = dataclasses.replace(p, resident_blocks=self.args.resident)
        model = self.model if dtype == "bf16" else self.fp8_model
        s = self.streamed(model, p.resident_blocks)
        torch.cuda.set_per_process_memory_fraction(cap / self.total_gib)
        try:
            row = run(model, case, self.args.timed)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            s.deactivate()
        row.update(cap_gib=cap, mode=p.mode, resident_blocks=p.resident_blocks, planned_peak_gib=p.peak_gib,
                   under_cap=row.get("peak_reserved_gib", cap + 1) <= cap)
        ref = self.res["rows"].get(f"{dtype} resident {case}", {})
        if "forward_s" in row and "forward_s" in ref:
            row["vs_resident"] = round(row["forward_s"] / ref["forward_s"], 3)
        self.record(f"{dtype} cap {cap:g} GiB {case}", row, case)

    def torchao(self, case: str) -> None:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

        if self.stream is not None:
            self.stream.remove()
            self.stream = None
        q = D.build(self.M, "a14b")  # the same weights (seeded), fresh: the bf16 model is streamed by now
        S.apply_to_model(q)
        quantize_(q, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.startswith("blocks."))
        row = run(q, case, self.args.timed)
        del q
        self.record(f"torchao-fp8 resident {case}", row, case)

    def diffusers(self, case: str) -> None:
        row = diffusers_forward(case, self.args.timed)
        ref = self.res["rows"].get(f"bf16 resident {case}", {})
        if "forward_s" in ref:
            row["kit_bf16_speedup"] = round(row["forward_s"] / ref["forward_s"], 3)
        self.record(f"diffusers {case}", row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="bf16:a14b:720p,fp8:a14b:720p,fp8attn:a14b:720p,cap24:a14b:720p,"
                        "diffusers:a14b:720p,"
                        "bf16:a14b:480p,cap24:a14b:480p,cap48:a14b:720p,cap48:a14b:480p,fp8:a14b:480p,"
                        "fp8cap24:a14b:720p,torchao:a14b:720p",
                        help="rows in priority order: bf16|fp8|fp8attn|fp8cudnn|fp8cudnnall|capN|fp8capN|torchao|diffusers : case")
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no row after this many seconds")
    parser.add_argument("--timed", type=int, default=1)
    parser.add_argument("--layers", type=int, help="fewer blocks than A14B's 40 (a quick check of the harness)")
    parser.add_argument("--resident", type=int, help="resident blocks instead of the planner's choice")
    parser.add_argument("--wan-dir", default=os.environ.get("WAN22_DIR", os.path.join(REPO, ".devcarry", "wan2.2")))
    args = parser.parse_args()

    M = D.load_wan_model_module(args.wan_dir)
    bench = Bench(args, M, M.rope_apply)
    print(f"{bench.res['gpu']}, {bench.total_gib:.1f} GiB; attention {bench.res['attention']}", flush=True)
    for step in args.steps.split(","):
        kind, case = step.split(":", 1)
        if not bench.left():
            bench.res["skipped"].append(step)
            continue
        try:
            if kind in ("bf16", "fp8", "torchao", "diffusers"):
                getattr(bench, kind)(case)
            elif kind == "fp8attn":
                bench.fp8(case, fp8_attention="triton")
            elif kind == "fp8cudnn":
                bench.fp8(case, fp8_attention="cudnn")
            elif kind == "fp8cudnnall":
                bench.fp8(case, fp8_attention="cudnn", key_multiple=1)
            elif kind.startswith("fp8cap"):
                bench.capped("fp8", float(kind[6:]), case)
            elif kind.startswith("cap"):
                bench.capped("bf16", float(kind[3:]), case)
            else:
                raise ValueError(f"unknown row {kind}")
        except Exception as exc:  # noqa: BLE001 - report the row and go on
            import traceback

            traceback.print_exc()
            bench.record(f"{kind} {case}", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            gc.collect()
            torch.cuda.empty_cache()
    with open(bench.path, "w") as f:
        json.dump(bench.res, f, indent=1)
    print("wrote", bench.path, "skipped:", bench.res["skipped"])


if __name__ == "__main__":
    main()
