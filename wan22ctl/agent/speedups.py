"""Speedups for Wan2.2's DiT that leave upstream files untouched and results within bf16 noise.

Each is switched by an environment variable (1 = on, 0 = off) and installed by `install()` before
`import wan`, through an import hook on `wan.modules.model`:

    WAN22_TIME_EMBED_ONCE (default 1)
        Upstream expands the timestep to every token and runs the timestep MLP and its 6-way
        projection per token in float32 (75,600 rows at 720P) although all tokens of a t2v/i2v
        sample share one timestep. Here the two MLPs run once per distinct timestep; the result is
        broadcast (a [B, 1, ...] tensor that every upstream use broadcasts, or a stride-0 expand when
        the sequence-parallel forward must chunk it per rank). TI2V's per-token timesteps (first
        frame at t=0) go through the same path with one row per distinct value.
    WAN22_FAST_ROPE (default 1)
        Rotary embedding in float32 real arithmetic with a cached cos/sin table per grid, instead
        of upstream's float64 complex multiply and copies (same function; rounding differs ~1e-7).
    WAN22_COMPILE (default auto)
        `torch.compile` of the transformer block: one graph per block shape, shared by all blocks
        and both experts; attention and the rotary tables enter it as opaque operators
        (`wan22::flash_attention`, `wan22::rope_tables`), so inductor fuses everything between the
        GEMMs (norms, modulation, rotation, residuals, casts). The first forward pays the
        compilation (H100: ~10 s at 480P, ~17 s at 720P, once per shape). `auto` compiles in a one-process run of at least
        COMPILE_MIN_STEPS denoising steps (the defaults: 40 for A14B, 50 for TI2V-5B) and in the
        one-process server, and falls back to eager if compilation fails; torchrun runs stay eager
        unless set to 1 (not measured under FSDP/Ulysses).
    WAN22_FAST_SWAP (default 1)
        On one GPU upstream builds the A14B pipelines with `init_on_cpu=True`, so even without
        --offload_model the expert needed next is copied to the GPU with `.to(device)` and the other
        one back with `.to('cpu')`, which allocates fresh pageable host memory for 28.6 GB of bf16
        weights each time (measured: ~37 s per video on an H200, first step plus the high->low
        switch). Here the weights are placed once, at the end of the pipeline's construction (the
        load phase), not in the first steps of a video:
        - without --offload_model, when the GPU holds both experts and T5 with RESIDENT_FREE_BYTES
          left over (an H200: yes; an 80 GB H100: no), all three move to the GPU and stay: no swap
          at the high->low switch, no T5 move;
        - otherwise each expert (and, with --offload_model, T5) gets one page-locked host copy of
          its weights; offloading repoints the parameters to that copy (inference never changes
          weights, so nothing is copied back) and loading is one DMA copy from page-locked memory.
        Same weights, same results; only where the bytes live and how they move changes.
    WAN22_DTYPE=fp8, WAN22_OFFLOAD=blocks (agent/fp8.py, agent/streaming.py; set by the plan)
        FP8 block linears are quantized as each expert is built; block streaming replaces the
        placement below (`_stage` and the expert switch hand over to agent.streaming), whatever
        WAN22_FAST_SWAP says.
    WAN22_SKIP_UNCOND (default 1)
        Upstream runs the conditional and the unconditional forward at every step and mixes them as
        `uncond + g·(cond − uncond)`, also at g = 1.0, where that is the conditional prediction
        alone (the distilled Lightning LoRAs run at 1.0). Where the guide scale of the DiT that
        runs a step is exactly 1.0 (per A14B expert: the (low, high) pair), the unconditional call
        returns the conditional output instead of running: the mix is then `cond` exactly (upstream
        differs by fp32 rounding), and each such step costs one forward instead of two.
    WAN22_FAST_T5_LOAD (default 1)
        Upstream's `T5EncoderModel` builds umt5-xxl's encoder (5.7 B parameters) on the CPU in
        float32, fills every weight with random numbers (`init_weights`), casts it to bf16 and only
        then loads the checkpoint over all of it. Here the encoder is built on the meta device and
        materialized uninitialized in the requested dtype before the same `load_state_dict` (strict:
        every parameter comes from the checkpoint, as before): same weights, tens of seconds less load.
    WAN22_STREAM_SAVE (default 1)
        The MP4 is encoded while the VAE decodes (agent/videosave.py): each decoded chunk goes to
        upstream's imageio/libx264 writer on a thread, and `save_video` moves the streamed file into
        place only when the returned video converts to exactly the streamed frames (else it writes
        the video itself, as upstream). t2v / i2v / ti2v; the same file, ~3 s sooner at 720P.
    WAN22_FORWARD_TIMES (default 0; measurement, not a speedup)
        Synchronize around every DiT forward and print a `forward` event (seconds, which model
        instance: the two A14B experts are told apart) for per-expert step times.

Wan's own Python process imports this file: it imports only the standard library, torch and the
kit's attention module and `wan22ctl.protocol` (same rule).
"""

from __future__ import annotations

import functools
import os
import sys
import weakref

import torch

from wan22ctl.agent import hostmem
from wan22ctl.agent.attention import _compiling
from wan22ctl.protocol import emit

FLAGS = {"WAN22_TIME_EMBED_ONCE": "1", "WAN22_FAST_ROPE": "1", "WAN22_COMPILE": "auto", "WAN22_FAST_SWAP": "1",
         "WAN22_SKIP_UNCOND": "1", "WAN22_FAST_T5_LOAD": "1", "WAN22_STREAM_SAVE": "1", "WAN22_FORWARD_TIMES": "0"}
# WAN22_COMPILE=auto: compile when a run denoises at least this many steps. Measured on an H100
# (BENCHMARKS.md): 720P pays ~17 s once and saves 1.4 s per forward (back within 7 steps), 480P
# ~10 s and 0.6 s (back within 9 steps); 20 leaves room for slower compilers.
COMPILE_MIN_STEPS = 20
# the run's --sample_steps and --offload_model when known (wanrun and the server pass them to install)
_run: dict = {"steps": None, "offload": None, "placement": None}
# pipeline modules whose MoE classes swap the two experts (WanT2V, WanI2V)
SWAP_MODULES = {"wan.text2video": "WanT2V", "wan.image2video": "WanI2V"}
# pipeline modules whose generate() runs classifier-free guidance: conditional, then unconditional forward
GUIDED_MODULES = {"wan.text2video": "WanT2V", "wan.image2video": "WanI2V", "wan.textimage2video": "WanTI2V"}
# further patches other kit modules ask for (lora, euler): module name -> functions run after it loads
_after_load: dict[str, list] = {}
# what other kit modules run on an expert once its weights are where they stay (lora's merge)
_on_placed: list = []


def _value(name: str) -> str:
    value = os.environ.get(name, FLAGS[name]).strip().lower()
    allowed = ("0", "1", "true", "false", "yes", "no", "on", "off", "")
    if name == "WAN22_COMPILE" and value == "auto":
        return value
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: use 1 or 0" + (" or auto" if name == "WAN22_COMPILE" else ""))
    return value


def enabled(name: str) -> bool:
    """Whether switch `name` (a FLAGS key) is on in the environment (`auto` decided for this run)."""
    value = _value(name)
    if value == "auto":
        steps = _run["steps"]
        return int(os.environ.get("WORLD_SIZE", "1")) == 1 and (steps is None or steps >= COMPILE_MIN_STEPS)
    return value in ("1", "true", "yes", "on")


def active() -> dict[str, bool]:
    """Every switch and whether it is on (validates them all)."""
    return {name: enabled(name) for name in FLAGS}


# ---- timestep embedding once per distinct timestep ---------------------------------------------

def _once_forwards(model) -> None:
    """Rebind the forward of `model.time_embedding` / `.time_projection` (state-dict keys unchanged)."""
    emb, proj = model.time_embedding, model.time_projection
    emb_forward, proj_forward = emb.forward, proj.forward
    owner = weakref.ref(model)
    last = {}  # the embedding's output -> (distinct rows' embedding, inverse index)

    def sequence_parallel() -> bool:
        # wan.distributed.sequence_parallel sets an instance-level forward that chunks e/e0 per rank
        m = owner()
        return m is not None and "forward" in m.__dict__

    def emb_once(x):
        last.clear()
        if x.dim() != 3 or x.size(1) == 1:
            return emb_forward(x)
        b, n = x.size(0), x.size(1)
        if bool((x == x[:, :1]).all()):
            y = emb_forward(x[:, :1])
            out = y.expand(b, n, y.size(-1)) if sequence_parallel() else y
            last["out"] = (out, y, None)
            return out
        rows, inverse = torch.unique(x.reshape(b * n, -1), dim=0, return_inverse=True)
        y = emb_forward(rows)
        out = y[inverse].view(b, n, -1)
        last["out"] = (out, y, inverse)
        return out

    def proj_once(e):
        hit = last.get("out")
        if hit is None or hit[0] is not e:
            return proj_forward(e)
        _, y, inverse = hit
        p = proj_forward(y)
        if inverse is None:
            return p.expand(e.size(0), e.size(1), p.size(-1)) if e.size(1) != p.size(1) else p
        return p[inverse].view(e.size(0), e.size(1), -1)

    emb.forward, proj.forward = emb_once, proj_once


# ---- rotary embedding in float32 ----------------------------------------------------------------

_rope_tables: dict = {}


def _rope_table(grid: tuple[int, int, int], freqs: torch.Tensor, c: int, device):
    """Rotation factors [f*h*w, 1, c] for one (f, h, w) grid as (complex64, cos, sin), cached."""
    key = (grid, c, freqs.data_ptr(), str(device))
    table = _rope_tables.get(key)
    if table is None:
        f, h, w = grid
        parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
        full = torch.cat([
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(f * h * w, 1, -1)
        full = full.to(device=device, dtype=torch.complex64)
        table = (full, full.real.contiguous(), full.imag.contiguous())
        if len(_rope_tables) > 16:
            _rope_tables.clear()
        _rope_tables[key] = table
    return table


def _grids(grid_sizes) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in g) for g in grid_sizes.tolist()]


def _rope_cos_sin(grid_sizes, freqs, seq_len, c):
    """cos / sin [B, seq_len, 1, c, 2] (float32) for an interleaved rotation; positions past a
    sample's grid get cos 1, sin 0, so they pass through unchanged as upstream leaves them."""
    grids = _grids(grid_sizes)
    cos = torch.ones(len(grids), seq_len, 1, c, 2, device=freqs.device)
    sin = torch.zeros(len(grids), seq_len, 1, c, 2, device=freqs.device)
    for i, grid in enumerate(grids):
        n = grid[0] * grid[1] * grid[2]
        _, re, im = _rope_table(grid, freqs, c, freqs.device)
        cos[i, :n] = re.unsqueeze(-1)
        sin[i, :n, ..., 0], sin[i, :n, ..., 1] = -im, im
    return cos, sin


def _register_rope_op():
    """`torch.ops.wan22.rope_tables`: the grid's tables as one opaque operator, so that a compiled
    block has no graph break at the rotary embedding and inductor fuses the rotation with the
    q/k norms and the cast. None where torch has no custom_op."""
    custom_op = getattr(getattr(torch, "library", None), "custom_op", None)
    if custom_op is None:
        return None
    try:
        op = custom_op("wan22::rope_tables", _rope_cos_sin, mutates_args=(),
                       schema="(Tensor grid_sizes, Tensor freqs, int seq_len, int c) -> (Tensor, Tensor)")
    except RuntimeError:  # registered already
        return torch.ops.wan22.rope_tables

    def fake(grid_sizes, freqs, seq_len, c):
        shape = (grid_sizes.size(0), seq_len, 1, c, 2)
        return freqs.new_empty(shape, dtype=torch.float32), freqs.new_empty(shape, dtype=torch.float32)

    op.register_fake(fake)
    return op


_rope_op = _register_rope_op()


@torch.amp.autocast("cuda", enabled=False)
def rope_apply(x, grid_sizes, freqs):
    """Upstream `wan.modules.model.rope_apply` (x: [B, L, N, C], float32 out) in float32.

    Eager: one complex64 multiply per sample. Under torch.compile: the same rotation as real
    arithmetic on an interleaved cos/sin table (`x * cos + swap(x) * sin`), which inductor fuses
    with the q/k norm; it returns bf16 when x is bf16, the cast the attention call makes anyway.
    """
    n, c = x.size(2), x.size(3) // 2
    if _rope_op is not None and _compiling():
        cos, sin = _rope_op(grid_sizes, freqs, x.size(1), c)
        xv = x.float().unflatten(3, (c, 2))
        y = (xv * cos + xv.flip(-1) * sin).flatten(3)
        return y.to(x.dtype) if x.dtype == torch.bfloat16 else y
    out = []
    for i, grid in enumerate(_grids(grid_sizes)):
        seq_len = grid[0] * grid[1] * grid[2]
        rot = _rope_table(grid, freqs, c, x.device)[0]
        xi = x[i, :seq_len].float().reshape(seq_len, n, c, 2)
        yi = torch.view_as_real(torch.view_as_complex(xi) * rot).flatten(2)
        out.append(yi if seq_len == x.size(1) else torch.cat([yi, x[i, seq_len:].float()]))
    return out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)


# Both experts and T5 stay on the GPU only if this much is left beside them for activations and the
# VAE decode: the planner's 720P one-GPU activation term (31.2 GB) plus margin. An H200 (~150 GB)
# keeps 80 GB free; an 80 GB H100 would keep 17 GB and swaps instead.
RESIDENT_FREE_BYTES = 40e9


def _resident_fits(pipe, free_bytes: int) -> bool:
    need = hostmem.weight_bytes(pipe.high_noise_model) + hostmem.weight_bytes(pipe.low_noise_model)
    if not pipe.t5_cpu:
        need += hostmem.weight_bytes(pipe.text_encoder.model)
    return free_bytes - need >= RESIDENT_FREE_BYTES


def _stage(pipe, free_bytes: int | None = None) -> str:
    """Place the weights of a just-built MoE pipeline for the whole process (see WAN22_FAST_SWAP).

    Returns "resident" (everything on the GPU), "pinned" (page-locked host copies) or "upstream"
    (FSDP/sequence-parallel pipelines, which upstream keeps on the GPU itself).
    """
    if not pipe.init_on_cpu:
        for model in (pipe.high_noise_model, pipe.low_noise_model):
            _placed(model)
        return "upstream"
    from wan22ctl.agent import streaming

    if streaming.requested():
        return streaming.stage(pipe)
    offload = _run["offload"]
    if offload is None:  # generate.py's default: offload on one process
        offload = int(os.environ.get("WORLD_SIZE", "1")) == 1
    experts = (pipe.high_noise_model, pipe.low_noise_model)
    if free_bytes is None and torch.cuda.is_available():
        free_bytes = torch.cuda.mem_get_info(pipe.device)[0]
    if not offload and free_bytes is not None and _resident_fits(pipe, free_bytes):
        for model in experts:
            model.to(pipe.device)
            _placed(model)
        if not pipe.t5_cpu:
            pipe.text_encoder.model.to(pipe.device)
        pipe._wan22_resident = True
        return "resident"
    for model in experts:
        _placed(model)
        hostmem.pin(model)
    if offload and not pipe.t5_cpu:
        hostmem.pin(pipe.text_encoder.model, moves_to=True)
    return "pinned"


def _placed(model) -> None:
    """Run the `on_placed` hooks on an expert whose weights are now where they stay."""
    for hook in _on_placed:
        hook(model)


def on_placed(hook) -> None:
    """Run `hook(expert)` once `_stage` has placed each expert (agent.lora merges there)."""
    if hook not in _on_placed:
        _on_placed.append(hook)


def _patch_swap(cls) -> None:
    """Stage the weights at the end of `cls.__init__` and replace `cls._prepare_model_for_timestep`
    (same contract) with swapping through the host copies."""
    if getattr(cls, "_wan22_swap", False):
        return
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        _run["placement"] = self._wan22_staged = _stage(self)
        if _run["placement"] != "upstream" and int(os.environ.get("RANK", "0")) == 0:
            emit("weights", placement=_run["placement"])

    def _prepare_model_for_timestep(self, t, boundary, offload_model):
        if t.item() >= boundary:
            required, other = self.high_noise_model, self.low_noise_model
        else:
            required, other = self.low_noise_model, self.high_noise_model
        if getattr(self, "_wan22_streamed", False):
            from wan22ctl.agent import streaming

            return streaming.prepare(self, required, other)
        if getattr(self, "_wan22_resident", False) and not offload_model:
            if not hostmem.on_gpu(required):  # a run with offload_model moved it off
                required.to(self.device)
        elif offload_model or self.init_on_cpu:
            for model in (self.high_noise_model, self.low_noise_model):
                # upstream's end-of-run `.cpu()` (offload_model) must not copy back either
                model.__dict__.setdefault("cpu", functools.partial(hostmem.offload, model))
            hostmem.offload(other)
            if not hostmem.on_gpu(required):
                hostmem.place(required, self.device)
        return required

    _prepare_model_for_timestep.__doc__ = cls._prepare_model_for_timestep.__doc__
    cls.__init__ = __init__
    cls._prepare_model_for_timestep = _prepare_model_for_timestep
    cls._wan22_swap = True


# ---- guide scale 1.0: one forward per step -------------------------------------------------------

# during a pipeline's generate(): {id(WanModel): its guide scale}, and the last forward to reuse
_guide: dict = {"scales": None, "last": None}


def _unwrapped(model):
    return getattr(model, "module", model)  # FSDP keeps the WanModel as .module


def guide_scales(pipe, guide) -> dict[int, float]:
    """{id(DiT): guide scale} as upstream's generate() applies `guide` (MoE: a float for both
    experts, or the (low-noise, high-noise) pair)."""
    if hasattr(pipe, "low_noise_model"):
        low, high = (guide, guide) if isinstance(guide, (int, float)) else tuple(guide)
        return {id(_unwrapped(pipe.low_noise_model)): float(low), id(_unwrapped(pipe.high_noise_model)): float(high)}
    return {id(_unwrapped(pipe.model)): float(guide)}


def wrap_generate(cls, marker: str, around) -> None:
    """Wrap a pipeline's `cls.generate` once (`marker`: the class attribute that records it). Each call
    runs `around(original, call, bound)`: `call()` makes the call as it was made, `bound` holds its
    arguments with the defaults applied (`original(*bound.args, **bound.kwargs)` after changing some)."""
    if marker in cls.__dict__:
        return
    import inspect

    original = cls.generate
    signature = inspect.signature(original)

    @functools.wraps(original)
    def generate(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        return around(original, lambda: original(self, *args, **kwargs), bound)

    cls.generate = generate
    setattr(cls, marker, True)


def _patch_guided(cls) -> None:
    """Wrap `cls.generate`: note each DiT's guide scale for the call (see WAN22_SKIP_UNCOND)."""

    def guided(original, call, bound):
        before = dict(_guide)
        _guide.update(scales=guide_scales(bound.args[0], bound.arguments["guide_scale"]), last=None)
        try:
            return call()
        finally:
            _guide.update(before)

    wrap_generate(cls, "_wan22_guided", guided)


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _skip_unconditional(cls) -> None:
    """WanModel calls: at guide 1.0, the second call of a step (same latents, same timestep: the
    unconditional one, which every upstream loop makes right after the conditional one) returns
    the first call's output. FSDP and sequence parallelism call through here too, on every rank alike."""
    if "_wan22_skip" in cls.__dict__:
        return
    module_call = torch.nn.Module.__call__

    def __call__(self, *args, **kwargs):
        scales = _guide["scales"]
        if not scales or scales.get(id(self)) != 1.0:
            return module_call(self, *args, **kwargs)
        x, t = (args[0] if args else kwargs.get("x")), kwargs.get("t", args[1] if len(args) > 1 else None)
        last = _guide["last"]
        if last is not None and last[0] is self and _same(last[1], t) and _same(last[2], x):
            _guide["last"] = None
            return last[3]
        out = module_call(self, *args, **kwargs)
        _guide["last"] = (self, t, x, out)
        return out

    cls.__call__ = __call__
    cls._wan22_skip = True


def _patch_guided_module(module) -> None:
    if enabled("WAN22_SKIP_UNCOND"):
        _patch_guided(getattr(module, GUIDED_MODULES[module.__name__]))


def after_load(fullname: str, patch) -> None:
    """Run `patch(module)` right after module `fullname` executes (now, if it already has)."""
    hooks = _after_load.setdefault(fullname, [])
    if patch not in hooks:
        hooks.append(patch)
    if not any(isinstance(f, _PatchAfterLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterLoad())
    loaded = sys.modules.get(fullname)
    if loaded is not None:
        patch(loaded)


# ---- install ------------------------------------------------------------------------------------

def _patch_model_module(module) -> None:
    flags = active()
    cls = module.WanModel
    if flags["WAN22_TIME_EMBED_ONCE"] and not getattr(cls, "_wan22_once", False):
        original_init = cls.__init__

        # wraps keeps the signature that diffusers' ConfigMixin reads to build the config
        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            _once_forwards(self)

        cls.__init__ = __init__
        cls._wan22_once = True
    if flags["WAN22_FAST_ROPE"]:
        module.rope_apply = rope_apply
    if flags["WAN22_COMPILE"]:
        compile_blocks(module, fall_back=_value("WAN22_COMPILE") == "auto")
    if flags["WAN22_FORWARD_TIMES"] and not getattr(cls, "_wan22_timed", False):
        _time_forwards(cls)
    if flags["WAN22_SKIP_UNCOND"]:
        _skip_unconditional(cls)


def placement() -> str | None:
    """Where the last MoE pipeline built in this process put its weights (resident, pinned, upstream)."""
    return _run["placement"]


def _time_forwards(cls) -> None:
    """Wrap WanModel.forward: synchronized wall time of each call, printed as an event line."""
    import time

    original = cls.forward
    seen: dict[int, int] = {}

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        torch.cuda.synchronize()
        model = seen.setdefault(id(self), len(seen))
        emit("forward", model=model, seconds=round(time.perf_counter() - start, 4))
        return out

    cls.forward = forward
    cls._wan22_timed = True


def compile_blocks(module, fall_back: bool = False) -> None:
    """`torch.compile` WanAttentionBlock.forward of wan.modules.model `module` (class-wide, once).

    fall_back: a compilation error runs that block eagerly (with torch's warning) instead of raising.
    """
    block = module.WanAttentionBlock
    if "_wan22_eager_forward" in block.__dict__:
        return
    import torch._dynamo

    # 40 blocks x 2 experts share one code object: leave room should guards be per instance
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
    if fall_back:
        torch._dynamo.config.suppress_errors = True
    block._wan22_eager_forward = block.forward
    block.forward = torch.compile(block.forward, dynamic=False)


def uncompile_blocks(module) -> None:
    """Undo `compile_blocks` (benchmarks compare both in one process)."""
    block = module.WanAttentionBlock
    if "_wan22_eager_forward" in block.__dict__:
        block.forward = block.__dict__["_wan22_eager_forward"]
        del block._wan22_eager_forward


def _patch_pipeline_module(module) -> None:
    from wan22ctl.agent import fp8, streaming

    cls = getattr(module, SWAP_MODULES[module.__name__])
    fp8.patch_pipeline(cls)  # WAN22_DTYPE=fp8: quantize each expert as it is built
    # block streaming stages through the same patch, whatever WAN22_FAST_SWAP says
    if enabled("WAN22_FAST_SWAP") or streaming.requested():
        _patch_swap(cls)


def _patch_t5_module(module) -> None:
    """WAN22_FAST_T5_LOAD: `T5EncoderModel` builds its encoder uninitialized (meta, then `to_empty`)
    since its `__init__` loads the checkpoint over every weight right after (strict load_state_dict)."""
    cls, build = module.T5EncoderModel, getattr(module, "umt5_xxl", None)
    if build is None or not enabled("WAN22_FAST_T5_LOAD") or "_wan22_init" in cls.__dict__:
        return
    init = cls._wan22_init = cls.__init__

    def build_empty(**kwargs):
        device = kwargs.pop("device", "cpu")
        return build(device="meta", **kwargs).to_empty(device=device)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        module.umt5_xxl = build_empty
        try:
            init(self, *args, **kwargs)
        finally:
            module.umt5_xxl = build

    cls.__init__ = __init__


def _patcher(fullname: str):
    patches = []
    if fullname == "wan.modules.model":
        patches.append(_patch_model_module)
    if fullname == "wan.modules.t5":
        patches.append(_patch_t5_module)
    if fullname in SWAP_MODULES:
        patches.append(_patch_pipeline_module)
    if fullname in GUIDED_MODULES:
        patches.append(_patch_guided_module)
    patches += _after_load.get(fullname, [])
    if not patches:
        return None

    def patch(module):
        for p in patches:
            p(module)

    return patch


class _PatchAfterLoad:
    """Meta-path finder: patch wan.modules.model and the MoE pipeline modules right after each
    executes, before anything uses them."""

    def find_spec(self, fullname, path=None, target=None):
        patch = _patcher(fullname)
        if patch is None:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _install_stream_save() -> None:
    """WAN22_STREAM_SAVE: agent/videosave's patches on Wan's VAE decode, `save_video` and the
    t2v/i2v/ti2v pipelines (their generate() decodes inside `videosave.streaming`)."""
    from wan22ctl.agent import videosave

    def patch_pipeline(module):
        def streamed(original, call, bound):
            with videosave.streaming(bound.args[0].config.sample_fps):
                return call()

        wrap_generate(getattr(module, videosave.STREAMED_PIPELINES[module.__name__]), "_wan22_stream_save", streamed)

    for name in videosave.VAE_MODULES:
        after_load(name, videosave.patch_vae)
    for name in videosave.STREAMED_PIPELINES:
        after_load(name, patch_pipeline)
    after_load("wan.utils.utils", videosave.patch_utils)


def install(steps: int | None = None, offload: bool | None = None) -> dict[str, bool]:
    """Install the switched-on speedups for the next `import wan`; returns the switches.

    steps: the run's denoising steps when known (WAN22_COMPILE=auto); None = a long or open-ended
    run (the task's default steps, or the server). If wan.modules.model is already imported it is
    patched in place (models built after this call get the timestep wrappers; existing instances
    can be passed to `apply_to_model`).
    """
    _run["steps"], _run["offload"] = steps, offload
    flags = active()
    if not any(isinstance(f, _PatchAfterLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterLoad())
    if flags["WAN22_STREAM_SAVE"]:
        _install_stream_save()
    for name in ("wan.modules.model", "wan.modules.t5", *SWAP_MODULES, *GUIDED_MODULES):
        loaded = sys.modules.get(name)
        if loaded is not None:
            _patcher(name)(loaded)
    return flags


def apply_to_model(model) -> None:
    """Give an already built WanModel the timestep-once forwards (benchmarks build models directly)."""
    _once_forwards(model)


def remove_from_model(model) -> None:
    """Undo `apply_to_model`: the class's own forwards again."""
    for sub in (model.time_embedding, model.time_projection):
        sub.__dict__.pop("forward", None)
