"""Where weights live: page-locked, fork-safe host copies of a module's weights and repointing
its parameters between that copy and the GPU.

Shared by the expert swap (speedups), block streaming (streaming) and the LoRA merge's placement.
Inference never changes weights, so offloading repoints a parameter to its host copy (nothing is
copied back) and loading is one DMA copy from page-locked memory.

Wan's own Python process imports this file: standard library and torch only.
"""

from __future__ import annotations

import functools

import torch


def tensors(module):
    """(owner module, kind, name) of every parameter and buffer of `module`, in a fixed order."""
    for sub in module.modules():
        for kind in ("_parameters", "_buffers"):
            for name, t in getattr(sub, kind).items():
                if t is not None:
                    yield sub, kind, name


def register(buf: torch.Tensor) -> bool:
    """Page-lock `buf` in place (cudaHostRegister), so copies from it run at DMA speed."""
    if not torch.cuda.is_available():
        return False
    try:
        code = torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), buf.numel() * buf.element_size(), 0)
    except (RuntimeError, AttributeError):
        return False
    return int(code) == 0


def host_buffer(nbytes: int) -> tuple[torch.Tensor, bool]:
    """A page-locked host buffer of `nbytes` that forked children do not inherit: (uint8 tensor, pinned).

    Anonymous mmap marked MADV_DONTFORK, then cudaHostRegister. Linux copies DMA-pinned pages into a
    child at fork() (no copy-on-write for them): upstream's save_video starts ffmpeg through
    imageio-ffmpeg, which forks (preexec_fn), and with ~69 GB of pinned weights (two experts + T5)
    that copy took ~25 s per video and, past half the host RAM, got the run OOM-killed. Not torch's
    pinned allocator either: it rounds every allocation up to a power of two (a 28.6 GB expert would
    take 32 GB). If registration fails the buffer stays pageable and swapping still skips the
    GPU->host copy.
    """
    import mmap

    buf = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE)  # anonymous, page-aligned
    if hasattr(mmap, "MADV_DONTFORK"):
        buf.madvise(mmap.MADV_DONTFORK)
    flat = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes)  # keeps `buf` alive
    return flat, register(flat)


def host_copy(module) -> list:
    """The module's weights in one page-locked host buffer, made once: [(sub, kind, name, view)]."""
    views = module.__dict__.get("_wan22_host")
    if views is not None:
        return views
    entries = list(tensors(module))
    sizes, offset, offsets = [], 0, []
    for sub, kind, name in entries:
        t = getattr(sub, kind)[name]
        nbytes = t.numel() * t.element_size()
        offset = (offset + 255) // 256 * 256  # aligned views for fast copies
        offsets.append(offset)
        sizes.append(nbytes)
        offset += nbytes
    flat, pinned = host_buffer(offset)
    views = []
    for (sub, kind, name), start, nbytes in zip(entries, offsets, sizes):
        t = getattr(sub, kind)[name]
        view = flat[start:start + nbytes].view(t.dtype).view(t.shape)
        view.copy_(t.detach())
        views.append((sub, kind, name, view))
    module.__dict__["_wan22_host"] = views
    module.__dict__["_wan22_host_flat"] = (flat, pinned)
    return views


def place(module, device: torch.device) -> None:
    """Point every weight of `module` at its host copy (device cpu) or a fresh copy on `device`."""
    for sub, kind, name, view in host_copy(module):
        data = view if device.type == "cpu" else view.to(device, non_blocking=True)
        if kind == "_parameters":  # a new Parameter, as Module.to() makes with overwrite-on-conversion
            sub._parameters[name] = torch.nn.Parameter(data, requires_grad=sub._parameters[name].requires_grad)
        else:
            sub._buffers[name] = data


def on_gpu(module) -> bool:
    return next(module.parameters()).device.type != "cpu"


def offload(module) -> None:
    """Upstream's `.to('cpu')` / `.cpu()` of an expert, as a repoint to its host copy."""
    if on_gpu(module):
        place(module, torch.device("cpu"))


def move_to(module, original, *args, **kwargs):
    """`module.to(device)` through the host copy; any other `.to()` call goes to torch's."""
    target = args[0] if len(args) == 1 and not kwargs else None
    if not isinstance(target, (str, torch.device)):
        return original(*args, **kwargs)
    target = torch.device(target)
    if target.type == "cpu":
        offload(module)
    elif not on_gpu(module):
        place(module, target)
    return module


def pin(module, moves_to: bool = False) -> None:
    """Give `module` its page-locked host copy now and point its weights at it (the pageable
    originals are freed); its `.cpu()` becomes a repoint, and with `moves_to` also its `.to(device)`
    (T5, which upstream moves with `.to(self.device)` and `.cpu()` around every prompt)."""
    host_copy(module)
    place(module, torch.device("cpu"))
    module.__dict__["cpu"] = functools.partial(offload, module)
    if moves_to:
        module.__dict__["to"] = functools.partial(move_to, module, module.to)


def weight_bytes(module) -> int:
    return sum(getattr(sub, kind)[name].nbytes for sub, kind, name in tensors(module))
