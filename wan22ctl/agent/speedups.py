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
    WAN22_COMPILE (default 0)
        `torch.compile` of the transformer block (one graph shared by all blocks and both experts),
        with a graph break at the attention call. The first forward pays the compilation.
    WAN22_FORWARD_TIMES (default 0; measurement, not a speedup)
        Synchronize around every DiT forward and print a `forward` event (seconds, which model
        instance: the two A14B experts are told apart) for per-expert step times.

Wan's own Python process imports this file: it imports only the standard library and torch.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref

import torch

FLAGS = {"WAN22_TIME_EMBED_ONCE": "1", "WAN22_FAST_ROPE": "1", "WAN22_COMPILE": "0", "WAN22_FORWARD_TIMES": "0"}


def enabled(name: str) -> bool:
    """Whether switch `name` (a FLAGS key) is on in the environment."""
    value = os.environ.get(name, FLAGS[name]).strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
        raise ValueError(f"{name}={value!r}: use 1 or 0")
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


_disable = getattr(getattr(torch, "compiler", None), "disable", lambda f: f)
_rope_table_eager = _disable(_rope_table)


def _compiling() -> bool:
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check and check())


@torch.amp.autocast("cuda", enabled=False)
def rope_apply(x, grid_sizes, freqs):
    """Upstream `wan.modules.model.rope_apply` (x: [B, L, N, C], float32 out) in float32.

    Eager: one complex64 multiply. Under torch.compile: the same rotation in real arithmetic, which
    inductor fuses with its neighbours (it has no complex kernels).
    """
    n, c = x.size(2), x.size(3) // 2
    out = []
    for i, grid in enumerate(_grids(grid_sizes)):
        seq_len = grid[0] * grid[1] * grid[2]
        rot, cos, sin = _rope_table_eager(grid, freqs, c, x.device)
        xi = x[i, :seq_len].float().reshape(seq_len, n, c, 2)
        if _compiling():
            re, im = xi[..., 0], xi[..., 1]
            yi = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(2)
        else:
            yi = torch.view_as_real(torch.view_as_complex(xi) * rot).flatten(2)
        out.append(yi if seq_len == x.size(1) else torch.cat([yi, x[i, seq_len:].float()]))
    return out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)


@_disable
def _grids(grid_sizes) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in g) for g in grid_sizes.tolist()]


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
        compile_blocks(module)
    if flags["WAN22_FORWARD_TIMES"] and not getattr(cls, "_wan22_timed", False):
        _time_forwards(cls)


def _time_forwards(cls) -> None:
    """Wrap WanModel.forward: synchronized wall time of each call, printed as an event line."""
    import json
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
        print("@@wan22ctl " + json.dumps({"event": "forward", "model": model,
                                          "seconds": round(time.perf_counter() - start, 4)}), flush=True)
        return out

    cls.forward = forward
    cls._wan22_timed = True


def compile_blocks(module) -> None:
    """`torch.compile` WanAttentionBlock.forward of wan.modules.model `module` (class-wide, once)."""
    block = module.WanAttentionBlock
    if "_wan22_eager_forward" in block.__dict__:
        return
    import torch._dynamo

    # 40 blocks x 2 experts share one code object: leave room should guards be per instance
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 128)
    block._wan22_eager_forward = block.forward
    block.forward = torch.compile(block.forward, dynamic=False)


def uncompile_blocks(module) -> None:
    """Undo `compile_blocks` (benchmarks compare both in one process)."""
    block = module.WanAttentionBlock
    if "_wan22_eager_forward" in block.__dict__:
        block.forward = block.__dict__["_wan22_eager_forward"]
        del block._wan22_eager_forward


class _PatchAfterLoad:
    """Meta-path finder: patch wan.modules.model right after it executes, before pipelines use it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "wan.modules.model":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch_model_module(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> dict[str, bool]:
    """Install the switched-on speedups for the next `import wan`; returns the switches.

    If wan.modules.model is already imported it is patched in place (models built after this
    call get the timestep wrappers; existing instances can be passed to `apply_to_model`).
    """
    flags = active()
    if not any(isinstance(f, _PatchAfterLoad) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterLoad())
    loaded = sys.modules.get("wan.modules.model")
    if loaded is not None:
        _patch_model_module(loaded)
    return flags


def apply_to_model(model) -> None:
    """Give an already built WanModel the timestep-once forwards (benchmarks build models directly)."""
    _once_forwards(model)


def remove_from_model(model) -> None:
    """Undo `apply_to_model`: the class's own forwards again."""
    for sub in (model.time_embedding, model.time_projection):
        sub.__dict__.pop("forward", None)
