"""Block streaming (`WAN22_OFFLOAD=blocks`): the DiT's blocks live in page-locked host memory and
reach the GPU one copy ahead of the compute, so an A14B expert runs on a card that cannot hold it.

    WAN22_OFFLOAD=blocks        stream the MoE experts' transformer blocks (else: off)
    WAN22_RESIDENT_BLOCKS=N     the first N blocks of the active expert stay on the GPU (default 0);
                                the planner picks N from the card's memory (plan/launch.py)

Each block's weights are packed once, at load, into one fork-safe page-locked host buffer
(`hostmem.host_copy`: MADV_DONTFORK mmap + cudaHostRegister). Everything outside the blocks
(embeddings, head: ~0.5 GB) and the N resident blocks go to the GPU when the expert becomes active
and back to their host copies (a repoint, no copy) when the other expert takes over or upstream
offloads before the VAE decode. The other blocks share SLOTS GPU buffers laid out like a block's
host buffer: when block i starts, the copy of the next streamed block into the next free slot is
already queued on a side stream, ordered by CUDA events (a copy into a slot waits for the compute
that last read it; a block's compute waits for its copy). The queue wraps from the last block to the
first, so the next forward's first blocks arrive while this one finishes.

Measured on an H200 (BENCHMARKS.md): a 0.70 GB bf16 block copies in ~13 ms from page-locked
memory while its 720P forward takes ~250 ms, so two slots hide the copies.

Wan's own Python process imports this file: standard library and torch only.
"""

from __future__ import annotations

import collections
import os

import torch

from wan22ctl.agent import hostmem

MODE_VAR = "WAN22_OFFLOAD"
RESIDENT_VAR = "WAN22_RESIDENT_BLOCKS"
MODES = ("", "model", "blocks")  # "" / model: whole experts (speedups' swap); blocks: this module
SLOTS = 2  # GPU buffers the streamed blocks rotate through: one computing, one arriving


def requested() -> bool:
    """Whether WAN22_OFFLOAD asks for block streaming; ValueError (one line) on a bad value."""
    value = os.environ.get(MODE_VAR, "").strip().lower()
    if value not in MODES:
        raise ValueError(f"{MODE_VAR}={value!r}: use blocks (stream the DiT blocks) or leave it unset")
    resident_blocks()
    return value == "blocks"


def resident_blocks() -> int:
    value = os.environ.get(RESIDENT_VAR, "0").strip() or "0"
    if not value.isdigit():
        raise ValueError(f"{RESIDENT_VAR}={value!r}: use a whole number of blocks (0 or more)")
    return int(value)


class SlotPool:
    """SLOTS GPU buffers of one block's packed size, used in turn by whichever expert is active.

    On a CUDA device the copies run on a side stream; elsewhere (CPU tests) they are synchronous and
    the events are absent, the order of operations being the same."""

    def __init__(self, nbytes: int, device: torch.device, count: int = SLOTS):
        self.device = device
        self.cuda = device.type == "cuda"
        self.buffers = [torch.empty(nbytes, dtype=torch.uint8, device=device) for _ in range(count)]
        self.ready: list = [None] * count  # the copy into slot k finished
        self.free: list = [None] * count  # the last compute reading slot k finished
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.issued = 0  # copies issued so far: copy n goes to slot n % count
        self.log: list[tuple[int, int]] | None = None  # (block index, slot) per copy, when tests ask

    def copy_in(self, host_flat: torch.Tensor, block_index: int) -> int:
        """Queue the copy of one block's host buffer into the next slot; returns the slot."""
        k = self.issued % len(self.buffers)
        self.issued += 1
        target = self.buffers[k][: host_flat.numel()]
        if self.cuda:
            with torch.cuda.stream(self.stream):
                if self.free[k] is not None:
                    self.stream.wait_event(self.free[k])
                target.copy_(host_flat, non_blocking=True)
                self.ready[k] = torch.cuda.Event()
                self.ready[k].record(self.stream)
        else:
            target.copy_(host_flat)
        if self.log is not None:
            self.log.append((block_index, k))
        return k

    def wait_ready(self, k: int) -> None:
        """Make the compute stream wait for slot k's copy."""
        if self.cuda and self.ready[k] is not None:
            torch.cuda.current_stream(self.device).wait_event(self.ready[k])

    def release(self, k: int) -> None:
        """Mark slot k free once the compute queued so far (the block that read it) finishes."""
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self.free[k] = event

    def drain(self) -> None:
        """Wait for every queued copy (before another expert takes the slots over)."""
        if self.cuda:
            self.stream.synchronize()


class _Layout:
    """Where each tensor of a block sits in its packed host buffer: [(sub, kind, name, offset, dtype, shape)]."""

    def __init__(self, block):
        views = hostmem.host_copy(block)
        flat, self.pinned = block.__dict__["_wan22_host_flat"]
        base = flat.data_ptr()
        self.flat = flat
        self.host = views
        self.entries = [(view.data_ptr() - base, view.dtype, view.shape) for *_, view in views]
        self.nbytes = flat.numel()

    def signature(self):
        return tuple((off, dt, tuple(sh)) for off, dt, sh in self.entries)


def _point(entries, tensors, params) -> None:
    """Point a block's tensors (`entries`: its host copy's (sub, kind, name, view) list) at `tensors`
    (host or slot views), parameters through the pre-built Parameters `params`."""
    for (sub, kind, name, _), tensor, param in zip(entries, tensors, params):
        if kind == "_parameters":
            sub._parameters[name] = param
        else:
            sub._buffers[name] = tensor


class StreamedModel:
    """One DiT expert whose blocks stream through a shared SlotPool; see the module docstring."""

    def __init__(self, model, device: torch.device, resident: int, pool: SlotPool | None = None):
        self.model, self.device = model, torch.device(device)
        self.blocks = list(model.blocks)
        self.resident = max(0, min(resident, len(self.blocks)))
        self.streamed = list(range(self.resident, len(self.blocks)))
        self.rest = [m for name, m in model.named_children() if name != "blocks"]
        for module in self.rest:
            hostmem.pin(module)
        self.layouts = [_Layout(b) for b in self.blocks]
        for block in self.blocks:
            hostmem.place(block, torch.device("cpu"))  # the pageable originals are freed
        signatures = {layout.signature() for layout in self.layouts}
        if len(signatures) != 1:
            raise RuntimeError("block streaming needs identically shaped blocks")
        nbytes = self.layouts[0].nbytes
        self.pool = pool if pool is not None else SlotPool(nbytes, self.device)
        if self.pool.buffers[0].numel() < nbytes:
            raise RuntimeError("the slot pool is smaller than one block")
        # per block its host tensors as Parameters; per slot the same layout as views of that slot
        kinds = [kind for _, kind, _, _ in self.layouts[0].host]
        self.host_tensors = [[v for *_, v in layout.host] for layout in self.layouts]
        self.host_params = [_params(kinds, tensors) for tensors in self.host_tensors]
        self.slot_tensors = [[buf[off:off + _nbytes(dt, sh)].view(dt).view(sh) for off, dt, sh in self.layouts[0].entries]
                             for buf in self.pool.buffers]
        self.slot_params = [_params(kinds, tensors) for tensors in self.slot_tensors]
        self.position = {index: p for p, index in enumerate(self.streamed)}
        self.queue: collections.deque = collections.deque()  # (streamed position, slot) in copy order
        self.active = False
        self.hooks = [model.register_forward_pre_hook(self._begin)]
        for i in self.streamed:
            self.hooks.append(self.blocks[i].register_forward_pre_hook(self._before(i)))
            self.hooks.append(self.blocks[i].register_forward_hook(self._after(i)))
        model.__dict__["_wan22_stream"] = self
        model.__dict__["cpu"] = self.deactivate  # upstream's offload before the VAE decode
        model.__dict__["to"] = self._to

    # -- placement --------------------------------------------------------------------------------

    def activate(self) -> None:
        """Non-block weights and the resident blocks to the GPU; streamed blocks wait for their turn."""
        if self.active:
            return
        for module in self.rest:
            hostmem.place(module, self.device)
        for i in range(self.resident):
            hostmem.place(self.blocks[i], self.device)
        self.active = True

    def deactivate(self, *args, **kwargs):
        """Everything back to its host copy (a repoint); the slots are left to the next expert."""
        if self.active:
            self.pool.drain()
            self.queue.clear()
            for module in self.rest:
                hostmem.place(module, torch.device("cpu"))
            for i in range(self.resident):
                hostmem.place(self.blocks[i], torch.device("cpu"))
            for i in self.streamed:
                self._home(i)
            self.active = False
        return self.model

    def _to(self, *args, **kwargs):
        target = args[0] if len(args) == 1 and not kwargs else None
        if isinstance(target, (str, torch.device)):
            (self.deactivate if torch.device(target).type == "cpu" else self.activate)()
            return self.model
        return type(self.model).to(self.model, *args, **kwargs)

    # -- the schedule -----------------------------------------------------------------------------

    def _issue(self, position: int) -> None:
        index = self.streamed[position]
        k = self.pool.copy_in(self.layouts[index].flat, index)
        self.queue.append((position, k))

    def _refill(self, after: int) -> None:
        """Queue copies up to SLOTS ahead of streamed position `after` (wrapping into the next forward)."""
        if not self.streamed:
            return
        ahead = min(len(self.pool.buffers), len(self.streamed))
        nxt = (self.queue[-1][0] + 1) % len(self.streamed) if self.queue else (after + 1) % len(self.streamed)
        while len(self.queue) < ahead:
            self._issue(nxt)
            nxt = (nxt + 1) % len(self.streamed)

    def _begin(self, module, args):
        self.activate()
        if self.streamed and (not self.queue or self.queue[0][0] != 0):
            self.pool.drain()  # an interrupted forward left other copies queued
            self.queue.clear()
            self._refill(-1)

    def _home(self, index: int) -> None:
        _point(self.layouts[index].host, self.host_tensors[index], self.host_params[index])

    def _before(self, index: int):
        position = self.position[index]

        def hook(module, args):
            if not self.queue or self.queue[0][0] != position:
                self.pool.drain()  # out of order (an interrupted forward): start over from here
                self.queue.clear()
                self._refill(position - 1)
            _, k = self.queue[0]
            self.pool.wait_ready(k)
            _point(self.layouts[index].host, self.slot_tensors[k], self.slot_params[k])
        return hook

    def _after(self, index: int):
        position = self.position[index]

        def hook(module, args, output):
            _, k = self.queue.popleft()
            self.pool.release(k)
            self._home(index)
            self._refill(position)
        return hook

    def remove(self) -> None:
        """Take the hooks off (tests and benchmarks undo streaming)."""
        self.deactivate()
        for handle in self.hooks:
            handle.remove()
        for key in ("_wan22_stream", "cpu", "to"):
            self.model.__dict__.pop(key, None)


def _params(kinds, tensors):
    return [torch.nn.Parameter(t, requires_grad=False) if kind == "_parameters" else None
            for kind, t in zip(kinds, tensors)]


def _nbytes(dtype: torch.dtype, shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * torch.empty((), dtype=dtype).element_size()


def stream_experts(experts, device: torch.device, resident: int) -> list[StreamedModel]:
    """Streamed copies of MoE experts sharing one slot pool (one expert is active at a time)."""
    streamed, pool = [], None
    for model in experts:
        s = StreamedModel(model, device, resident, pool)
        pool = s.pool
        streamed.append(s)
    return streamed


def stage(pipe) -> str:
    """Place a just-built MoE pipeline's weights for block streaming; returns "streamed".

    T5 gets its page-locked host copy and visits the GPU only to encode (as with --offload_model)."""
    stream_experts((pipe.high_noise_model, pipe.low_noise_model), pipe.device, resident_blocks())
    if not pipe.t5_cpu:
        hostmem.pin(pipe.text_encoder.model, moves_to=True)
    pipe._wan22_streamed = True
    return "streamed"


def prepare(pipe, required, other):
    """The expert switch under streaming: the other expert's GPU copies go, this one's come."""
    other.__dict__["_wan22_stream"].deactivate()
    required.__dict__["_wan22_stream"].activate()
    return required
