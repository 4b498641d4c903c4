"""LoRAs merged into Wan2.2's DiT once, at load: W' = W + scale · (alpha / rank) · B · A.

The sum of every update of a parameter is computed in float32 and stored in the parameter's
dtype. The merge runs where upstream builds each DiT (`WanModel.from_pretrained`, through the
kit's import hook), before dtype conversion, FSDP sharding or placement, so every process and
every parallel layout sees the same merged weights and the pipelines run unmodified. New tensors
are written; the loaded ones (possibly mappings of the checkpoint files) are never modified.
Which files, which keys and which expert: `wan22ctl.loras` (checked before the load).

Each merged file is reported as a `lora` event (file, sha256, scale, expert, format, keys,
parameters, seconds), which the launcher writes into the sidecar.

Wan's own Python imports this module: standard library and torch only.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time

from wan22ctl.loras import DTYPES, EXPERT_SUBFOLDERS, LoraError, LoraFile, LoraSpec

# --------------------------------------------------------------------------- merging


def _read_all(path: str) -> tuple[bytearray, str]:
    """The whole file and its sha256, read in one pass."""
    size = os.path.getsize(path)
    buf = bytearray(size)
    view = memoryview(buf)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            n = f.readinto(view[pos:pos + (64 << 20)])
            if not n:
                raise LoraError(f"LoRA {path} got shorter while it was read")
            h.update(view[pos:pos + n])
            pos += n
    return buf, h.hexdigest()


def _tensor(buf: bytearray, info: dict):
    import torch

    dtype = getattr(torch, DTYPES[info["dtype"]])
    start, end = info["offsets"]
    itemsize = torch.empty((), dtype=dtype).element_size()
    data = buf if start % itemsize == 0 else bytearray(buf[start:end])
    offset = start if data is buf else 0
    count = (end - start) // itemsize
    t = torch.frombuffer(data, dtype=dtype, count=count, offset=offset) if count else torch.empty(0, dtype=dtype)
    return t.reshape(info["shape"])




def _updates(model, items: list[tuple[LoraSpec, LoraFile]]):
    """{parameter name: [(factor, kind, A or diff, B)]} for `model`, and one record per file."""
    import torch

    params = dict(model.named_parameters())
    updates: dict[str, list] = {}
    records = []
    for spec, lf in items:
        buf, digest = _read_all(spec.path)
        for term in lf.terms:
            if term.target not in params:
                raise LoraError(f"LoRA {spec.path}: {term.target} is not a parameter of the model being built")
            if term.kind == "diff":
                diff = _tensor(buf, lf.header[term.keys["diff"]])
                updates.setdefault(term.target, []).append((spec.scale, "diff", diff, None))
                continue
            down = _tensor(buf, lf.header[term.keys["down"]]).flatten(1)
            up = _tensor(buf, lf.header[term.keys["up"]]).flatten(1)
            alpha = float(_tensor(buf, lf.header[term.keys["alpha"]]).float().flatten()[0]) if "alpha" in term.keys \
                else float(term.rank)
            factor = spec.scale * alpha / term.rank
            updates.setdefault(term.target, []).append((factor, "lora", down.to(torch.float32), up.to(torch.float32)))
        records.append({"file": spec.path, "sha256": digest, "scale": spec.scale, "expert": spec.expert,
                        "format": lf.format, "keys": lf.keys, "parameters": len({t.target for t in lf.terms}),
                        "alpha": "file" if lf.has_alpha else "rank (no alpha keys)"})
    return params, updates, records


# Rows merged at once (float32 bytes): cache-sized on the CPU, large on a GPU (few launches).
CHUNK_BYTES = {"cpu": 32 << 20, "cuda": 512 << 20}


def merge_into(param, terms) -> None:
    """Replace `param`'s data by W + Σ factor·(B·A or diff), summed in float32, stored in W's dtype."""
    import torch

    w = param.data
    out = torch.empty_like(w)
    rows = w.shape[0] if w.dim() >= 2 else 1
    w2, out2 = w.reshape(rows, -1), out.reshape(rows, -1)
    device = w.device
    moved = [(f, k, a.to(device), None if b is None else b.to(device)) for f, k, a, b in terms]
    moved = [(f, k, a.reshape(rows, -1) if k == "diff" else a, b) for f, k, a, b in moved]
    step = max(1, CHUNK_BYTES.get(device.type, CHUNK_BYTES["cpu"]) // (4 * max(1, w2.shape[1])))
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, not TF32, also on a GPU
    try:
        _accumulate(w2, out2, moved, step)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    param.data = out


def _accumulate(w2, out2, moved, step) -> None:
    import torch

    rows = w2.shape[0]
    with torch.no_grad():
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            acc = w2[r0:r1].to(torch.float32, copy=True)
            for factor, kind, a, b in moved:
                if kind == "lora":
                    acc.addmm_(b[r0:r1], a, alpha=factor)
                else:
                    acc.add_(a[r0:r1].to(torch.float32), alpha=factor)
            out2[r0:r1] = acc


def merge(model, items: list[tuple[LoraSpec, LoraFile]]) -> list[dict]:
    """Merge the checked LoRAs into `model` (each parameter rewritten once); one record per file,
    with `merged` = parameters updated and `seconds`."""
    started = time.monotonic()
    params, updates, records = _updates(model, items)
    for name, terms in updates.items():
        merge_into(params[name], terms)
    seconds = round(time.monotonic() - started, 3)
    device = next(iter(params.values())).device.type if params else "cpu"
    for r in records:
        r["merged"], r["seconds"], r["device"] = r["parameters"], seconds, device
    return records


# --------------------------------------------------------------------------- the load hook

_state: dict = {"items": {}, "records": []}  # expert ("high"/"low"/None) -> [(spec, LoraFile)]


def install(checked: list[tuple[LoraSpec, LoraFile]]) -> None:
    """Merge these LoRAs into each DiT as upstream builds it (wan.modules.model's WanModel.from_pretrained)."""
    items: dict = {}
    for spec, lf in checked:
        items.setdefault(spec.expert, []).append((spec, lf))
    _state["items"], _state["records"] = items, []
    if not items:
        return
    from wan22ctl.agent import speedups

    speedups.after_load("wan.modules.model", patch_model_module)
    speedups.on_placed(apply_pending)


def records() -> list[dict]:
    """What was merged in this process so far: file, sha256, scale, expert, format, counts."""
    return list(_state["records"])


def patch_model_module(module) -> None:
    """Wrap WanModel.from_pretrained: merge the expert's LoRAs into the model it returns."""
    cls = module.WanModel
    if "_wan22_lora" in cls.__dict__:
        return
    original = cls.from_pretrained.__func__

    @functools.wraps(original)
    def from_pretrained(klass, *args, **kwargs):
        model = original(klass, *args, **kwargs)
        expert = EXPERT_SUBFOLDERS.get(os.path.basename(str(kwargs.get("subfolder") or "").rstrip("/")))
        items = _state["items"].get(expert)
        if items:
            model.__dict__["_wan22_lora_pending"] = items
            if not _staged_later(expert):
                apply_pending(model)
        return model

    cls.from_pretrained = classmethod(from_pretrained)
    cls._wan22_lora = True


def _staged_later(expert: str | None) -> bool:
    """Whether speedups places this expert at the end of the pipeline's construction (one process,
    WAN22_FAST_SWAP) and merges there (`apply_pending`): on the GPU when the expert goes there, in
    milliseconds instead of a CPU pass over every weight; before its page-locked copy otherwise.
    Not with FP8 weights or block streaming: those rebuild the block linears first, so the merge
    runs here, on the loaded weights."""
    from wan22ctl.agent import fp8, speedups, streaming

    return expert in ("high", "low") and int(os.environ.get("WORLD_SIZE", "1")) == 1 \
        and speedups.enabled("WAN22_FAST_SWAP") and not fp8.requested() and not streaming.requested()


def apply_pending(model) -> None:
    """Merge the LoRAs waiting on `model` (from its from_pretrained) where its weights are now."""
    items = model.__dict__.pop("_wan22_lora_pending", None)
    if not items:
        return
    done = merge(model, items)
    _state["records"] += done
    if int(os.environ.get("RANK", "0")) == 0:
        from wan22ctl.protocol import emit

        for r in done:
            emit("lora", **r)
