"""One timed forward of the Wan2.2-Fun-A14B-Control DiT (one expert) through VideoX-Fun's own model code.

Random bf16 weights (nothing downloaded): the transformer is built on the meta device, materialized
with `to_empty`, and filled deterministically (normal std 0.02, biases 0, norm weights 1). The inputs
have the shapes VideoX-Fun's Fun-Control pipeline gives the transformer. Prints a table and one JSON
line, and writes videox-forward.json under $OUT (or /tmp).

    python3 benchmarks/videox_forward.py --videox-dir .devcarry/vx --size 832*480 --frames 81 [--attention auto] [--cfg]
    python3 benchmarks/videox_forward.py --videox-dir .devcarry/vx --tiny --device cpu   # seconds, on a CPU

Where the shapes come from (VideoX-Fun @ 804a4258e2608f855ccaec8fffa279e75a3b89c6):
- examples/wan2.2_fun/predict_v2v_control.py:149-161 loads both experts of Wan2.2-Fun-A14B-Control as
  `Wan2_2Transformer3DModel` (config/wan2.2/wan_civitai_i2v.yaml: moe, boundary 0.900; its
  `dict_mapping` only copies in_dim/dim into the in_channels/hidden_size aliases) and :239 wraps them
  in `Wan2_2FunControlPipeline`. The experts share one architecture, so one is built here.
- videox_fun/models/wan_transformer3d.py:1420 `Wan2_2Transformer3DModel`, :1528 cross_attn_type
  "cross_attn" (no CLIP branch); :906 concatenates `y` to `x` on channels before the patch embedding;
  :741/:925-928 `ref_conv` turns `full_ref` into (H/2)*(W/2) extra tokens put before the video tokens.
- in_dim 52 = 16 noise latents + y's 36, y as built by videox_fun/pipeline/pipeline_wan2_2_fun_control.py:
  :804-806 control-video latents (16), then :814-816 `cat([mask_latents, masked_video_latents])` with
  :645-648 mask latents tiled to 4 channels and masked-video latents (16). predict_v2v_control.py:333
  always passes `video` (videox_fun/utils/utils.py:361-364: zeros and an all-255 mask without a start
  image), so this branch is the one taken: 16 + 4 + 16 = 36. The other one (:817-822, no `video`)
  would give 32. DiffSynth-Studio's config for these weights agrees: in_dim 52, has_ref_conv True.
- :748-768 with add_ref_conv the pipeline always passes `full_ref` (zeros [B, 16, H, W] without a
  reference image); :782 seq_len = ceil(H*W/(2*2)*F) on the latent grid; :852-861 the call, under
  autocast to the weight dtype; with guidance > 1 (6.0 in the example) the batch is 2, which the
  model's `cfg_skip` wrapper (wan_transformer3d.py:854) runs as two batch-1 passes (--cfg).

Needs diffusers and a VideoX-Fun tree (`--videox-dir`, env VIDEOX_DIR, default .devcarry/vx): only the
model file and what it imports are loaded (see load_videox), not VideoX-Fun's package __init__ files.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
import types
import warnings

import torch
import torch.nn as nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wan2.2-Fun-A14B-Control transformer (either expert); --tiny keeps the channels, shrinks the rest
A14B = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=52, dim=5120, ffn_dim=13824,
            freq_dim=256, text_dim=4096, out_dim=16, num_heads=40, num_layers=40, eps=1e-6,
            in_channels=52, hidden_size=5120, add_ref_conv=True, in_dim_ref_conv=16)
TINY = {**A14B, "dim": 128, "hidden_size": 128, "ffn_dim": 256, "num_heads": 2, "num_layers": 2}
ATTENTION = {"flash": "FLASH_ATTENTION", "sdpa": "SDPA", "sage": "SAGE_ATTENTION"}  # VIDEOX_ATTENTION_TYPE
# What wan_transformer3d.py takes from the packages whose __init__ is skipped (it does `from ..dist import ...`).
PACKAGE_NAMES = {"videox_fun.dist": {"fuser": ("get_sequence_parallel_rank", "get_sequence_parallel_world_size",
                                                "get_sp_group", "xFuserLongContextAttention"),
                                      "wan_xfuser": ("usp_attn_forward",)},
                 "videox_fun.utils": {"cfg_optimization": ("cfg_skip",)}}


def sla_stub() -> types.ModuleType:
    """models/attention_kernel.py holds triton kernels for sparse linear attention (SLA), which
    attention_utils imports by name and this model never calls. CUDA torch wheels ship triton; with a
    CPU-only torch (no triton) the file is replaced by a module whose two names raise if called."""
    def unavailable(*_, **__):
        raise RuntimeError("sparse linear attention needs triton")

    stub = types.ModuleType("videox_fun.models.attention_kernel")
    stub.get_block_map = unavailable
    stub._sparse_linear_attention = types.SimpleNamespace(apply=unavailable)
    return stub


def load_videox(videox_dir: str):
    """Import videox_fun/models/wan_transformer3d.py with VideoX-Fun's model code untouched: register
    videox_fun, .models, .dist and .utils as bare packages (their __init__ files import every model,
    pipeline, sampler and LoRA helper), then give .dist and .utils the names the model file imports,
    taken from the real submodules that define them (dist/fuser.py, dist/wan_xfuser.py,
    utils/cfg_optimization.py); fuser.py falls back to None without xfuser, as upstream."""
    for name in ("videox_fun", "videox_fun.models", "videox_fun.dist", "videox_fun.utils"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [os.path.join(videox_dir, *name.split("."))]
            sys.modules[name] = pkg
    if importlib.util.find_spec("triton") is None:
        sys.modules["videox_fun.models.attention_kernel"] = sla_stub()
    for pkg, subs in PACKAGE_NAMES.items():
        for sub, names in subs.items():
            mod = importlib.import_module(f"{pkg}.{sub}")
            for n in names:
                setattr(sys.modules[pkg], n, getattr(mod, n))
    return importlib.import_module("videox_fun.models.wan_transformer3d")


def build(M, cfg: dict, device: torch.device, seed: int):
    with torch.device("meta"):
        model = M.Wan2_2Transformer3DModel(**cfg)
    model = model.to(torch.bfloat16).to_empty(device=device).eval().requires_grad_(False)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            for name, p in mod.named_parameters(recurse=False):
                if name == "bias":
                    p.zero_()
                elif isinstance(mod, (nn.LayerNorm, M.WanRMSNorm)):
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=g)
    d = cfg["dim"] // cfg["num_heads"]  # `freqs` is a plain attribute, left on meta: rebuilt as :723-730 does
    model.freqs = torch.cat([M.rope_params(1024, d - 4 * (d // 6)), M.rope_params(1024, 2 * (d // 6)),
                             M.rope_params(1024, 2 * (d // 6))], dim=1).to(device)
    return model


def inputs(width: int, height: int, frames: int, batch: int, device, seed: int) -> dict:
    """The transformer's kwargs for one denoising step, as pipeline_wan2_2_fun_control.py:853-861 passes them."""
    f, h, w = (frames - 1) // 4 + 1, height // 8, width // 8  # Wan2.1 VAE: 4x temporal, 8x spatial
    g = torch.Generator(device=device).manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=device, dtype=torch.bfloat16)  # noqa: E731
    zeros = lambda *shape: torch.zeros(*shape, device=device, dtype=torch.bfloat16)  # noqa: E731
    y = torch.cat([randn(batch, 16, f, h, w),                            # control-video latents
                   zeros(batch, 4, f, h, w), zeros(batch, 16, f, h, w)],  # mask, masked video (all-255 mask)
                  dim=1)
    return dict(x=randn(batch, 16, f, h, w), context=[randn(512, 4096) for _ in range(batch)],
                t=torch.full((batch,), 950.0, device=device),  # >= 900: a high-noise-expert step
                seq_len=math.ceil(h * w / (2 * 2) * f), y=y, y_camera=None, full_ref=zeros(batch, 16, h, w))


def attention_path(A, kind: str) -> str:
    """Which kernel attention_utils.attention() runs for VIDEOX_ATTENTION_TYPE=kind."""
    if kind == "SAGE_ATTENTION" and A.SAGE_ATTENTION_AVAILABLE:
        return "sageattention"
    if kind == "FLASH_ATTENTION":
        for v in (4, 3, 2):
            if getattr(A, f"FLASH_ATTN_{v}_AVAILABLE"):
                return f"flash-attn {v}"
    return "torch sdpa"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videox-dir", default=os.environ.get("VIDEOX_DIR", os.path.join(REPO, ".devcarry", "vx")))
    parser.add_argument("--size", default=None, help="W*H in pixels (832*480; 128*128 with --tiny)")
    parser.add_argument("--frames", type=int, default=None, help="video frames (81; 9 with --tiny)")
    parser.add_argument("--attention", default="auto", choices=["auto", *ATTENTION],
                        help="auto: VideoX-Fun's default (flash-attn if installed, else SDPA); SDPA on a CPU")
    parser.add_argument("--cfg", action="store_true", help="batch 2 (cond + uncond), as with guidance > 1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="2 layers, dim 128: the code path in seconds on a CPU")
    args = parser.parse_args()
    width, height = map(int, (args.size or ("128*128" if args.tiny else "832*480")).split("*"))
    frames = args.frames or (9 if args.tiny else 81)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    cfg = TINY if args.tiny else A14B

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp.autocast in the model file
    M = load_videox(os.path.abspath(args.videox_dir))
    A = sys.modules["videox_fun.models.attention_utils"]
    kind = ATTENTION.get(args.attention) or ("FLASH_ATTENTION" if cuda else "SDPA")
    os.environ["VIDEOX_ATTENTION_TYPE"] = kind  # read by attention_utils.attention() on every call
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    s = time.perf_counter()
    model = build(M, cfg, device, args.seed)
    sync()
    build_s = time.perf_counter() - s
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    kw = inputs(width, height, frames, 2 if args.cfg else 1, device, args.seed + 1)
    tokens = kw["seq_len"] + (height // 16) * (width // 16)  # + the ref_conv tokens of full_ref
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        for _ in range(2):  # warm-up, timed
            sync()
            s = time.perf_counter()
            out = model(**kw)
            sync()
            times.append(time.perf_counter() - s)
    ref = os.path.join(args.videox_dir, "VIDEOX_REF")
    res = {"class": type(model).__name__, "module": M.__name__, "file": M.__file__,
           "videox_ref": open(ref).read().strip() if os.path.exists(ref) else None,
           "config": cfg, "tiny": args.tiny, "size": f"{width}*{height}",
           "frames": frames, "latent": list(kw["x"].shape[1:]), "batch": kw["x"].shape[0],
           "seq_len": kw["seq_len"], "tokens": tokens, "attention": args.attention,
           "videox_attention_type": kind, "attention_path": attention_path(A, kind),
           "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "weights_gib": round(weights_gib, 2),
           "build_s": round(build_s, 2), "warmup_s": round(times[0], 3), "forward_s": round(times[1], 3),
           "peak_alloc_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
           "out_shape": list(out.shape), "out_dtype": str(out.dtype).replace("torch.", ""),
           "finite": bool(torch.isfinite(out).all()), "out_std": round(float(out.float().std()), 4),
           "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
           "diffusers": importlib.import_module("diffusers").__version__, "command": " ".join(sys.argv),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for key in ("class", "module", "videox_ref", "device", "size", "frames", "latent", "batch", "tokens",
                "attention_path", "params_b", "weights_gib", "build_s", "warmup_s", "forward_s",
                "peak_alloc_gib", "peak_reserved_gib", "out_shape", "finite"):
        print(f"{key:18s} {res[key]}")
    print(json.dumps(res), flush=True)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "videox-forward.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    if not res["finite"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
