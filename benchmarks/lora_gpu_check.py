"""GPU checks of issue 20 against upstream Wan2.2 (pinned commit), synthetic weights, one table out.

1. parameter table: `wan22ctl.loras.wan_parameters(config)` equals upstream WanModel's own
   named_parameters for the t2v-A14B, i2v-A14B and ti2v-5B configs (built on the meta device);
2. guide 1.0: upstream `WanT2V.generate()` (its own loop, scheduler and expert switch) with two
   experts of real A14B width (dim 5120, 40 heads, ffn 13824) and LAYERS blocks each, run with
   the kit's skip of the unconditional forward and without it (the upstream loop as is), same seed:
   relative difference of the latents and forwards run, for unipc and euler at guide 1.0 and for a
   mixed pair (high-noise expert at 3.5, low-noise at 1.0);
3. LoRA: a rank-64 LoRA in the Wan2.2-Lightning file layout (`diffusion_model.blocks.N.*
   .lora_down/.lora_up/.alpha`, float32, every attention and FFN projection) merged into a bf16
   expert by `agent.lora.merge` (on the GPU), against the unmerged expert with each projection's
   output plus scale·(alpha/rank)·B·A·x added by a forward hook: relative difference of the
   forward outputs, beside how much the LoRA moves the output.

    python3 benchmarks/lora_gpu_check.py --wan-dir .devcarry/wan2.2 [--layers 4] [--size 832*480]

Writes lora_gpu_check.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks", "device_shim"))

import torch  # noqa: E402

DEVICE, DTYPE = "cuda", torch.bfloat16  # --device cpu --dtype float32: a smoke run of the script itself

A14B = dict(model_type="t2v", dim=5120, ffn_dim=13824, freq_dim=256, num_heads=40, in_dim=16, out_dim=16, text_len=512)
CONFIGS = {
    "t2v-A14B": dict(A14B, num_layers=40),
    "i2v-A14B": dict(A14B, model_type="i2v", in_dim=36, num_layers=40),
    "ti2v-5B": dict(model_type="ti2v", dim=3072, ffn_dim=14336, freq_dim=256, num_heads=24, in_dim=48, out_dim=48,
                    text_len=512, num_layers=30),
}


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check_table(WanModel) -> dict:
    from wan22ctl import loras

    out = {}
    for name, cfg in CONFIGS.items():
        with torch.device("meta"):
            model = WanModel(**cfg)
        real = {n: tuple(p.shape) for n, p in model.named_parameters()}
        out[name] = {"parameters": len(real), "equal": real == loras.wan_parameters(cfg)}
    return out


def expert(WanModel, layers: int, seed: int, dims: dict | None = None):
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        model = WanModel(**dict(dims or A14B, num_layers=layers)).to(DTYPE).eval().requires_grad_(False)
    with torch.no_grad():
        for b in model.blocks:  # as synth_checkpoints: bounded activations through random blocks
            b.self_attn.o.weight.mul_(0.05)
            b.cross_attn.o.weight.mul_(0.05)
            b.ffn[2].weight.mul_(0.05)
        torch.nn.init.normal_(model.head.head.weight, std=0.02)
    return model


class _TextStub:
    """Upstream's T5EncoderModel surface for generate(): a fixed embedding per prompt."""

    def __init__(self, device):
        self.device = device
        self.model = torch.nn.Linear(1, 1)

    def __call__(self, prompts, device):
        g = torch.Generator().manual_seed(abs(hash(prompts[0])) % 2**31)
        return [torch.randn(24, 4096, generator=g).to(device)]


class _VaeStub:
    def __init__(self):
        self.model = type("M", (), {"z_dim": 16})()

    def decode(self, x0):
        return [x.float().clone() for x in x0]


def pipeline(WanT2V, high, low, device):
    pipe = WanT2V.__new__(WanT2V)
    pipe.device, pipe.rank, pipe.t5_cpu, pipe.init_on_cpu = device, 0, False, False
    pipe.num_train_timesteps, pipe.boundary, pipe.param_dtype = 1000, 0.875, torch.bfloat16
    pipe.vae_stride, pipe.patch_size, pipe.sp_size = (4, 8, 8), (1, 2, 2), 1
    pipe.sample_neg_prompt = "negative"
    pipe.text_encoder, pipe.vae = _TextStub(device), _VaeStub()
    pipe.high_noise_model, pipe.low_noise_model = high, low
    return pipe


def check_skip(WanModel, WanT2V, layers: int, size: tuple[int, int], frames: int, dims) -> list[dict]:
    device = torch.device(DEVICE)
    high, low = expert(WanModel, layers, 1, dims), expert(WanModel, layers, 2, dims)
    pipe = pipeline(WanT2V, high, low, device)
    counts = {"high": 0, "low": 0}
    high.register_forward_pre_hook(lambda m, a, k=None: counts.__setitem__("high", counts["high"] + 1))
    low.register_forward_pre_hook(lambda m, a, k=None: counts.__setitem__("low", counts["low"] + 1))
    skip_call = WanModel.__dict__["__call__"]
    rows = []
    for label, solver, guide in (("guide 1.0, unipc, 4 steps", "unipc", 1.0),
                                 ("guide 1.0, euler (Lightning), 4 steps", "euler", 1.0),
                                 ("guide 3.5 high / 1.0 low, euler, 4 steps", "euler", (1.0, 3.5))):
        results = {}
        for mode in ("upstream", "skip"):
            if mode == "upstream":
                del WanModel.__call__  # the upstream loop as is: both forwards every step
            counts.update(high=0, low=0)
            sync()
            t0 = time.perf_counter()
            out = pipe.generate("a fox in the snow", size=size, frame_num=frames, shift=5.0, sample_solver=solver,
                                sampling_steps=4, guide_scale=guide, seed=42, offload_model=False)
            sync()
            results[mode] = (out, dict(counts), time.perf_counter() - t0)
            WanModel.__call__ = skip_call
        (ref, ref_counts, ref_s), (got, got_counts, got_s) = results["upstream"], results["skip"]
        rows.append({"case": label, "rel_diff": rel(got, ref), "finite": bool(torch.isfinite(got).all()),
                     "forwards_upstream": ref_counts, "forwards_skip": got_counts,
                     "seconds_upstream": round(ref_s, 3), "seconds_skip": round(got_s, 3)})
    del pipe, high, low
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return rows


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def lightning_lora(path: str, config: dict, rank: int, alpha: float, seed: int) -> None:
    """A LoRA in the Wan2.2-Lightning file layout for every block projection of `config`."""
    from safetensors.torch import save_file

    g = torch.Generator(device=DEVICE).manual_seed(seed)
    dim, ffn = config["dim"], config["ffn_dim"]
    tensors = {}
    for i in range(config["num_layers"]):
        shapes = {f"{a}.{p}": (dim, dim) for a in ("self_attn", "cross_attn") for p in "qkvo"}
        shapes.update({"ffn.0": (dim, ffn), "ffn.2": (ffn, dim)})
        for module, (fan_in, fan_out) in shapes.items():
            base = f"diffusion_model.blocks.{i}.{module}"
            tensors[f"{base}.lora_down.weight"] = (torch.randn(rank, fan_in, device=DEVICE, generator=g)
                                                   / fan_in ** 0.5).cpu()
            tensors[f"{base}.lora_up.weight"] = (torch.randn(fan_out, rank, device=DEVICE, generator=g)
                                                 * 0.02 / rank ** 0.5).cpu()
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
    save_file(tensors, path)


def check_lora(WanModel, layers: int, size: tuple[int, int], frames: int, rank: int, dims) -> dict:
    from wan22ctl import loras
    from wan22ctl.agent import lora

    cfg = dict(dims, num_layers=layers)
    path = os.path.join(tempfile.mkdtemp(), "high_noise_model.safetensors")
    alpha, scale = 32.0, 0.8
    lightning_lora(path, cfg, rank, alpha, seed=7)
    lf = loras.check(path, loras.wan_parameters(cfg))
    base = expert(WanModel, layers, 1, dims)
    merged = expert(WanModel, layers, 1, dims)
    t0 = time.perf_counter()
    records = lora.merge(merged, [(loras.LoraSpec(path, scale, "high"), lf)])
    sync()
    merge_s = time.perf_counter() - t0

    # the unmerged reference: each projection's output + scale·(alpha/rank)·B·A·x, in float32
    from safetensors.torch import load_file

    factors = load_file(path, device=DEVICE)
    modules = dict(base.named_modules())
    hooks = []
    for term in lf.terms:
        module = modules[term.target[: -len(".weight")]]
        a = factors[term.keys["down"]].float()
        b = factors[term.keys["up"]].float()
        k = scale * alpha / term.rank

        def hook(mod, inputs, output, a=a, b=b, k=k):
            with torch.autocast(DEVICE, enabled=False):
                return output + (k * (inputs[0].float() @ a.t() @ b.t())).to(output.dtype)

        hooks.append(module.register_forward_hook(hook))
    w, h = size
    lat = (16, (frames - 1) // 4 + 1, h // 8, w // 8)
    seq_len = lat[1] * lat[2] * lat[3] // 4
    g = torch.Generator(device=DEVICE).manual_seed(3)
    x = [torch.randn(*lat, device=DEVICE, generator=g)]
    ctx = [torch.randn(24, 4096, device=DEVICE, generator=g)]
    t = torch.tensor([937.5], device=DEVICE)
    with torch.no_grad(), torch.amp.autocast("cuda", dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
        ref = base(x, t=t, context=ctx, seq_len=seq_len)[0]
        for hk in hooks:
            hk.remove()
        plain = base(x, t=t, context=ctx, seq_len=seq_len)[0]
        got = merged(x, t=t, context=ctx, seq_len=seq_len)[0]
    return {"rank": rank, "alpha": alpha, "scale": scale, "layers": layers, "keys": lf.keys,
            "parameters_merged": records[0]["merged"], "merge_s_gpu": round(merge_s, 3),
            "rel_diff_merged_vs_reference": rel(got, ref), "lora_effect_rel": rel(ref, plain),
            "finite": bool(torch.isfinite(got).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wan-dir", default=os.environ.get("WAN22_DIR", ".devcarry/wan2.2"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--size", default="832*480")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--dim", type=int, default=A14B["dim"], help="model width (5120 = A14B; smaller for a smoke run)")
    args = parser.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = args.device, getattr(torch, args.dtype)
    dims = dict(A14B, dim=args.dim, num_heads=args.dim // 128, ffn_dim=args.dim * 27 // 10)
    os.environ.setdefault("WAN22_COMPILE", "0")
    sys.path.insert(0, os.path.abspath(args.wan_dir))
    from wan22ctl.agent import attention, euler, speedups

    attention.install()
    speedups.install(steps=4, offload=False)
    euler.install()
    import wan  # noqa: F401
    from wan.modules.model import WanModel
    from wan.text2video import WanT2V

    size = tuple(int(v) for v in args.size.split("*"))
    result = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "torch": torch.__version__,
              "speedups": speedups.active(), "table": check_table(WanModel),
              "skip": check_skip(WanModel, WanT2V, args.layers, size, args.frames, dims),
              "lora": check_lora(WanModel, args.layers, size, args.frames, args.rank, dims)}
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "lora_gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["table"]))
    print(f"{'case':44} {'rel diff':>10} {'forwards upstream':>22} {'forwards skip':>20} {'s up':>7} {'s skip':>7}")
    for r in result["skip"]:
        print(f"{r['case']:44} {r['rel_diff']:10.2e} {str(r['forwards_upstream']):>22} {str(r['forwards_skip']):>20} "
              f"{r['seconds_upstream']:7.2f} {r['seconds_skip']:7.2f}")
    lo = result["lora"]
    print(f"LoRA rank {lo['rank']} (Lightning layout, {lo['keys']} keys, {lo['parameters_merged']} parameters): merged vs "
          f"x + scale*BAx rel diff {lo['rel_diff_merged_vs_reference']:.2e}; the LoRA moves the output by "
          f"{lo['lora_effect_rel']:.2e}; GPU merge {lo['merge_s_gpu']} s; finite {lo['finite']}")


if __name__ == "__main__":
    main()
