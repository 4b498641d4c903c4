"""Rank-0 hand-off under torchrun: rank 0 owns HTTP and the queue, every rank runs each job.

Jobs travel over a *control* process group: gloo, created with a timeout of a year, so a
server that sits idle for hours is not killed the way an idle collective on NCCL's default
10-minute timeout would be. Followers block in a broadcast until rank 0 sends the next
message; during a job every rank asks the control group before each denoising step whether
to stop, so a cancel takes effect on all ranks at the same step. After a job every rank
reports its outcome, so rank 0 marks the job failed when any rank failed.

On one process (`WORLD_SIZE` unset or 1) the same interface runs without torch.distributed.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

CONTROL_TIMEOUT = timedelta(days=365)


def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class Control:
    """The control channel between rank 0 and the other ranks."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank = rank
        self.world_size = world_size
        self.group = None

    @classmethod
    def start(cls, rank: int, world_size: int, local_rank: int, backend=None) -> "Control":
        """Initialise torch.distributed as generate.py does (NCCL on GPUs), then the gloo control group.

        The default group carries the pipeline's own collectives (FSDP, Ulysses); on a machine
        without CUDA it is gloo too (the CPU tests). `backend` is the pipeline backend, whose
        `init_distributed_group` sets up Ulysses' groups like generate.py does.
        """
        control = cls(rank, world_size)
        if world_size <= 1:
            return control
        import torch
        import torch.distributed as dist

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            kwargs = {}
            if os.environ.get("WAN22_DIST_TIMEOUT_S"):
                # The pipeline's own collectives (a very slow step may need more than NCCL's 10 minutes).
                kwargs["timeout"] = timedelta(seconds=float(os.environ["WAN22_DIST_TIMEOUT_S"]))
            dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://",
                                    rank=rank, world_size=world_size, **kwargs)
        control.group = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        return control

    def init_sequence_parallel(self, backend, ulysses_size: int) -> None:
        """Ulysses groups, as generate.py sets them up when --ulysses_size > 1."""
        if ulysses_size > 1:
            if ulysses_size != self.world_size:
                raise SystemExit(f"ulysses size {ulysses_size} must equal the world size {self.world_size}")
            if backend.init_distributed_group is not None:
                backend.init_distributed_group()

    def broadcast(self, message=None):
        """Rank 0 sends `message` (JSON-able); every other rank blocks until it arrives and returns it."""
        if self.world_size <= 1:
            return message
        import torch
        import torch.distributed as dist

        # JSON over two tensor broadcasts: broadcast_object_list would need numpy and pickle.
        data = json.dumps(message).encode() if self.rank == 0 else b""
        size = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(size, src=0, group=self.group)
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.rank == 0 else \
            torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(buf, src=0, group=self.group)
        return message if self.rank == 0 else json.loads(bytes(buf.tolist()))

    def step_decision(self, decision: str | None) -> str | None:
        """Rank 0's stop decision for this step, known to every rank (None: go on)."""
        if self.world_size <= 1:
            return decision
        import torch
        import torch.distributed as dist

        codes = {None: 0, "cancel": 1, "shutdown": 2}
        flag = torch.tensor([codes[decision] if self.rank == 0 else 0], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=self.group)
        return {v: k for k, v in codes.items()}[int(flag.item())]

    def gather(self, outcome) -> list:
        """Every rank's outcome (JSON-able) of the last job, in rank order, on every rank."""
        if self.world_size <= 1:
            return [outcome]
        import torch
        import torch.distributed as dist

        data = json.dumps(outcome).encode()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64), group=self.group)
        longest = max(int(t.item()) for t in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else mine[:0]
        bufs = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(bufs, mine, group=self.group)
        return [json.loads(bytes(b[: int(n.item())].tolist())) for b, n in zip(bufs, sizes)]

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
