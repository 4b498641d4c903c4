"""Memory model of the A14B low-memory paths: FP8 weights and DiT block streaming.

Pure functions over measured figures, in GiB (what nvidia-smi reports for a card and what torch's
allocator counts), used by `plan/launch.py` for one process on one GPU:

- `expert_gib(dtype)`: one expert's weights, bf16 or fp8 (block linears in e4m3, the rest bf16);
- `placement(...)`: where the active expert lives on a card of `mem` GiB: whole on the GPU
  ("model": the kit swaps whole experts through page-locked host copies) or streamed block by block
  with N blocks resident ("blocks"), with the estimated peak of each phase and the reason;
- `pinned_host_gib(...)`: the page-locked host copies a run keeps (both experts, T5).

Figures (A14B: 40 blocks of dim 5120, FFN 13824; BENCHMARKS.md):
- a block holds 352 M parameters: 0.656 GiB in bf16, 0.330 GiB with e4m3 linears; the rest of an
  expert (patch/text/time embeddings, head) 232 M: 0.43 GiB, kept bf16;
- one kit forward (timestep once, eager; compiled needs about half) adds 11.8 GiB at 720P and 5.5
  GiB at 480P over the weights (H100/H200 peaks 38.4 and 32.1 GiB with a 26.6 GiB expert);
- the VAE decode peaks at 19.4 GiB at 720P (vae_bench, H200); 480P scaled by pixels: 8.4 GiB;
- T5 (umt5-xxl encoder, bf16) 10.6 GiB, on the GPU only while it encodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BLOCKS = 40
BLOCK_GIB = {"bf16": 0.656, "fp8": 0.330}
REST_GIB = 0.43
SLOTS = 2  # streamed blocks in flight: agent.streaming.SLOTS
ACTIVATIONS_GIB = {"720p": 11.8, "480p": 5.5}
# On top under --dtype fp8: self-attention through cuDNN's FP8 SDPA (WAN22_FP8_ATTENTION=auto on
# Hopper) holds e4m3 copies of q/k/v and its FP8 output beside the bf16 tensors: +1.14 GiB peak in a
# 720P A14B forward (H200, BENCHMARKS.md session 9); 480P scaled by its token count.
FP8_ATTENTION_GIB = {"720p": 1.2, "480p": 0.5}
VAE_DECODE_GIB = {"720p": 19.4, "480p": 8.4}
T5_GIB = 10.6
# CUDA context, cuBLAS/attention workspaces and allocator fragmentation left free beside the estimate
MARGIN_GIB = 1.5
# Streamed blocks come and go every forward, so the caching allocator's free-but-reserved pieces grow:
# an eager 720P Lightning video under a 24 GiB cap with 13 resident blocks (the plan before this
# allowance) ran out of memory in its first forward with 20.3 GiB allocated, 2.9 GiB reserved but
# unallocated, asking for 1.44 GiB (H200, 2026-12-01, BENCHMARKS.md). Streamed plans keep this much
# more free and run with PYTORCH_CUDA_ALLOC_CONF=STREAM_ALLOC_CONF.
FRAGMENTATION_GIB = 3.0
STREAM_ALLOC_CONF = "expandable_segments:True"
# Page-locked host memory measured on an H200: 55.5 GB/s into the GPU; one block's 720P forward
# takes ~245 ms, 480P ~64 ms (kit defaults, compiled, 9.8 s and 2.57 s per 40-block forward).
COPY_GBPS = 55.5
BLOCK_FORWARD_S = {"720p": 0.245, "480p": 0.064}
# Streamed / resident, measured side by side on an H200 under a 24 GiB cap with this planner's
# resident counts (9 at 720P, 18 at 480P; bf16, compiled, through the launcher; BENCHMARKS.md,
# session 8): (whole 4-step T2V-A14B video after load, median forward)
MEASURED_STREAM_COST = {"720p": (1.030, 1.001), "480p": (1.041, 1.003)}
MEASURED_RESIDENT = {"720p": 9, "480p": 18}
DTYPES = ("bf16", "fp8")


def resolution(size: str) -> str:
    w, h = (int(x) for x in size.split("*"))
    return "720p" if w * h >= 704 * 1280 else "480p"


def expert_gib(dtype: str) -> float:
    return round(BLOCKS * BLOCK_GIB[dtype] + REST_GIB, 2)


@dataclass(frozen=True)
class Placement:
    """How one process on one GPU holds the active A14B expert."""

    mode: str  # "model": the whole expert on the GPU; "blocks": streamed
    resident_blocks: int  # blocks kept on the GPU (BLOCKS when mode == "model")
    peak_gib: float  # the largest of the phases below
    phases_gib: dict  # text encode, denoise, VAE decode
    copy_gib_per_forward: float  # host->GPU bytes each forward streams
    copy_s_per_forward: float  # at COPY_GBPS, overlapped with compute when it is shorter
    compute_s_per_forward: float  # the forward's compute on an H100/H200 (kit defaults)
    fits: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def placement(mem_gib: float, size: str, dtype: str = "bf16", *, force_blocks: bool = False,
              t5_on_gpu: bool = True) -> Placement:
    """Whole expert or streamed blocks on a card of `mem_gib`, and how many blocks stay resident."""
    res = resolution(size)
    block, act = BLOCK_GIB[dtype], ACTIVATIONS_GIB[res] + (FP8_ATTENTION_GIB[res] if dtype == "fp8" else 0.0)
    whole = expert_gib(dtype)
    encode = (T5_GIB if t5_on_gpu else 0.0) + 0.3  # + the VAE's weights, always on the GPU
    decode = VAE_DECODE_GIB[res]
    compute = BLOCKS * BLOCK_FORWARD_S[res]
    if not force_blocks and whole + act + MARGIN_GIB <= mem_gib:
        denoise = whole + act
        peak = max(encode, denoise, decode)
        return Placement("model", BLOCKS, round(peak, 1), _phases(encode, denoise, decode), 0.0, 0.0, compute,
                         peak + MARGIN_GIB <= mem_gib,
                         f"the active {dtype} expert ({whole:.1f} GB) and {res} activations (~{act:.0f} GB) fit "
                         f"in {mem_gib:.0f} GB: experts swap whole through page-locked host copies")
    room = mem_gib - MARGIN_GIB - FRAGMENTATION_GIB - act - REST_GIB - SLOTS * block
    resident = max(0, min(BLOCKS, int(room // block)))
    streamed = BLOCKS - resident
    denoise = REST_GIB + (resident + min(SLOTS, streamed)) * block + act
    peak = max(encode, denoise, decode)
    copy_gib = streamed * block
    copy_s = copy_gib * 2**30 / (COPY_GBPS * 1e9)
    fits = peak + MARGIN_GIB <= mem_gib and room >= 0
    if fits:
        reason = (f"--offload blocks: the {dtype} expert ({whole:.1f} GB) and {res} activations (~{act:.0f} GB) "
                  f"exceed {mem_gib:.0f} GB; {resident} of {BLOCKS} blocks stay on the GPU, the other {streamed} "
                  f"stream from page-locked host memory two at a time ({copy_gib:.1f} GB per forward, "
                  f"~{copy_s:.2f} s at {COPY_GBPS:.0f} GB/s, hidden behind ~{compute:.1f} s of compute; "
                  f"measured on an H200 under a 24 GB cap with {MEASURED_RESIDENT[res]} resident: a whole "
                  f"4-step video took {MEASURED_STREAM_COST[res][0]:.2f}x the resident run's time, a forward "
                  f"{MEASURED_STREAM_COST[res][1]:.3f}x)")
    else:
        reason = (f"--offload blocks: even streamed, {res} needs about {peak + MARGIN_GIB:.0f} GB "
                  f"(activations ~{act:.0f} GB, VAE decode {decode:.0f} GB); {mem_gib:.0f} GB is too little")
    return Placement("blocks", resident, round(peak, 1), _phases(encode, denoise, decode), round(copy_gib, 2),
                     round(copy_s, 3), compute, fits, reason)


def _phases(encode: float, denoise: float, decode: float) -> dict:
    return {"text_encode": round(encode, 1), "denoise": round(denoise, 1), "vae_decode": round(decode, 1)}


def pinned_host_gib(dtype: str, *, t5_pinned: bool) -> float:
    """Page-locked host memory a one-GPU A14B run keeps: both experts' copies, and T5's when it moves."""
    return round(2 * expert_gib(dtype) + (T5_GIB if t5_pinned else 0.0), 1)
