"""FP8 weights for the A14B DiT (`WAN22_DTYPE=fp8`): float8 linears quantized once at load.

Every `nn.Linear` inside the DiT's 40 transformer blocks (self- and cross-attention q/k/v/o, the two
FFN layers) becomes an `Fp8Linear`: its weight in float8 e4m3 with one float32 scale per output
channel, quantized from the bf16 checkpoint weights when the pipeline builds each expert (no new
download); the patch, text and time embeddings, the norms, the modulation tables and the head stay
in bf16. An expert drops from ~28.6 GB to ~14.7 GB. At run time each activation row (token) gets
its own scale from its absolute maximum, and the product runs as one row-wise scaled FP8 GEMM
(`torch._scaled_mm`, cuBLASLt/CUTLASS on sm_89 and sm_90) that returns bf16, as the bf16 linear
under upstream's autocast does.

The activation quantization (an absolute maximum per row, a divide and a cast) is plain tensor code:
inside the kit's compiled block (`WAN22_COMPILE`) inductor fuses it into the kernel that produces
the activation (norm and modulation), which is what makes FP8 pay; eagerly it is two extra passes
over the activation and most of the GEMM gain is lost (BENCHMARKS.md).

Why not torchao's float8 inference path (`Float8DynamicActivationFloat8WeightConfig(PerRow())`,
which computes the same thing with the same `torch._scaled_mm` call): its weights are tensor
subclasses, while the kit moves weights by repointing plain parameters at byte views of page-locked
host buffers (expert swapping, block streaming); each torchao release supports one torch minor
version, and Wan's process otherwise needs only torch. `benchmarks/lowmem_bench.py` has a torchao
row to compare the two on a GPU.

Wan's own Python process imports this file: standard library and torch only.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

ENV_VAR = "WAN22_DTYPE"
DTYPES = ("bf16", "fp8")
E4M3 = getattr(torch, "float8_e4m3fn", None)
E4M3_MAX = 448.0
# Ada (sm_89) and Hopper (sm_90) have FP8 tensor cores and torch's row-wise scaled GEMM; the image
# is built for 8.9 and 9.0 only.
CAPABILITIES = ((8, 9), (9, 0))


def requested() -> bool:
    """Whether WAN22_DTYPE asks for FP8 weights; ValueError (one line) on an unknown value."""
    value = os.environ.get(ENV_VAR, "bf16").strip().lower() or "bf16"
    if value not in DTYPES:
        raise ValueError(f"{ENV_VAR}={value!r}: use bf16 or fp8")
    return value == "fp8"


def device_problem(device: torch.device) -> str | None:
    """Why FP8 weights cannot run on `device`, or None when they can."""
    if E4M3 is None or not hasattr(torch, "_scaled_mm"):
        return f"{ENV_VAR}=fp8 needs torch >= 2.5 with float8 support (found {torch.__version__})"
    if device.type != "cuda":
        return f"{ENV_VAR}=fp8 needs a CUDA GPU"
    cap = torch.cuda.get_device_capability(device)
    if tuple(cap) not in CAPABILITIES:
        return (f"{ENV_VAR}=fp8 needs FP8 tensor cores (sm_89 Ada or sm_90 Hopper); "
                f"{torch.cuda.get_device_name(device)} is sm_{cap[0]}{cap[1]}: use {ENV_VAR}=bf16")
    return None


# ---- quantization ------------------------------------------------------------------------------

def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 weight [N, K], float32 scale [1, N]): one scale per output channel, amax / 448."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp(min=1e-12)
    q = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, scale[None, :].contiguous()


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 rows [M, K], float32 scale [M, 1]): one scale per activation row (token)."""
    x = x.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).clamp(min=1e-12)
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def scaled_mm_reference(xq, x_scale, wq, w_scale, bias=None, out_dtype=torch.bfloat16):
    """What the row-wise scaled GEMM computes, in float32 (the CPU path and the tests' yardstick)."""
    y = (xq.float() * x_scale) @ (wq.float() * w_scale.reshape(-1, 1)).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


class Fp8Linear(nn.Module):
    """`nn.Linear` with an e4m3 weight and per-channel scales; per-row dynamic activation scales.

    Buffers `weight` (float8_e4m3fn [out, in]) and `weight_scale` (float32 [1, out]); `bias` stays a
    bf16 parameter. Output is bf16 whatever the input dtype (upstream's blocks feed float32 and bf16
    activations under a bf16 autocast, whose linears return bf16).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=E4M3, device=device))
        self.register_buffer("weight_scale", torch.ones(1, out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=torch.bfloat16, device=device),
                                 requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, work_device: torch.device | None = None) -> "Fp8Linear":
        """Quantize `linear` (on `work_device` when given, e.g. the GPU, a CPU model's layer by layer);
        the result lives where `linear` lived."""
        home = linear.weight.device
        weight = linear.weight if work_device is None else linear.weight.to(work_device)
        q, scale = quantize_weight(weight)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        layer.weight, layer.weight_scale = q.to(home), scale.to(home)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        xq, x_scale = quantize_rows(rows)
        if x.is_cuda:
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=torch.bfloat16)
        else:
            y = scaled_mm_reference(xq, x_scale, self.weight, self.weight_scale, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, e4m3"


def quantize_blocks(model: nn.Module, work_device: torch.device | None = None) -> int:
    """Replace every nn.Linear inside `model.blocks` with an Fp8Linear; returns how many.

    Everything outside the blocks (embeddings, head) and every non-linear layer stays as it is.
    work_device: where to quantize (the GPU quantizes a CPU-resident expert layer by layer)."""
    count = 0
    for block in model.blocks:
        for parent in list(block.modules()):
            for name, child in list(parent._modules.items()):
                if type(child) is nn.Linear:
                    parent._modules[name] = Fp8Linear.from_linear(child, work_device)
                    count += 1
    return count


# ---- the pipeline hook -------------------------------------------------------------------------

def patch_pipeline(cls) -> None:
    """Quantize each DiT expert of pipeline class `cls` as `_configure_model` finishes it (bf16 by
    then with --convert_model_dtype), so the load never holds two bf16 experts beside each other.
    A no-op unless WAN22_DTYPE=fp8."""
    if getattr(cls, "_wan22_fp8", False) or not requested():
        return
    original = cls._configure_model

    @functools.wraps(original)
    def _configure_model(self, model, use_sp, dit_fsdp, shard_fn, convert_model_dtype):
        if dit_fsdp:
            raise RuntimeError(f"{ENV_VAR}=fp8 runs without FSDP (--dit_fsdp): the float8 weights are not sharded")
        problem = device_problem(self.device)
        if problem:
            raise RuntimeError(problem)
        model = original(self, model, use_sp, dit_fsdp, shard_fn, convert_model_dtype)
        quantize_blocks(model, work_device=self.device if self.device.type == "cuda" else None)
        model._wan22_dtype = "fp8"
        return model

    cls._configure_model = _configure_model
    cls._wan22_fp8 = True
