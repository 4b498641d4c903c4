"""Upstream's output read as progress: log lines and tqdm redraws in, `phase` and `progress` events out.

Upstream prints log lines on stdout (rank 0) and draws its denoising bar with tqdm on stderr,
redrawing it with a carriage return and no line end. `read_lines` splits such a stream as it
arrives; `ProgressTracker` turns the lines into events (load, text_encode, denoise, decode,
save, with seconds; steps with the ETA) and keeps what the sidecar records.

s2v-14B and animate-14B denoise once per clip: each clip draws a fresh bar (0/N .. N/N) after
the previous clip's decode. A bar that starts again at 0 after a finished one is the next clip;
its steps are reported with `clip` (and `clips`, when the plan knows how many), the phases
alternate denoise/decode and the sidecar's phase seconds are their sums.
"""

from __future__ import annotations

import os
import re
import time

from wan22ctl.protocol import emit, parse_event

TQDM_RE = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<(?:(?:(\d+):)?(\d+):(\d+)|\?)")
# Upstream's denoising bar has no description ("  50%|...| 20/40 [...]"); bars with one, such as
# diffusers' "Loading checkpoint shards: 100%|...| 6/6" during load, are not denoising steps.
DENOISE_BAR_RE = re.compile(r"^\s*\d+%\|")
PHASES = ("load", "text_encode", "denoise", "decode", "save")


def _seconds(h, m, s) -> int:
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


class ProgressTracker:
    """Turns upstream's log lines (rank 0, stdout) and tqdm redraws (stderr) into events."""

    def __init__(self, clock=time.monotonic, clips: int | None = None):
        self.clock = clock
        self.clips = clips  # how many clips the plan expects (None: one video, or not known)
        self.clip = 1
        self.started = clock()
        self.current: str | None = None
        self.phase_started = self.started
        self.phases: dict[str, float] = {}
        self.step = -1
        self.total = 0
        self.save_error: str | None = None
        self.merge_error: str | None = None  # s2v: upstream's merge_video_audio logged a failure
        self.last_lines: list[str] = []
        self.attention: dict | None = None  # wanrun's `attention` event: backend, GPU, speedups
        self.gpu_memory: list[dict] = []  # wanrun's `gpu_memory` events, one per rank
        self.weights: str | None = None  # speedups' `weights` event: where the MoE experts live
        self.loras: list[dict] = []  # agent.lora's `lora` events: each merged file, its sha256 and scale
        self._begin("load")

    def _begin(self, name: str) -> None:
        now = self.clock()
        if self.current is not None:
            if self.current == name:
                return
            self._end(now)
        self.current, self.phase_started = name, now
        emit("phase", name=name, state="start")

    def _end(self, now: float) -> None:
        seconds = round(now - self.phase_started, 3)
        self.phases[self.current] = round(self.phases.get(self.current, 0.0) + seconds, 3)
        emit("phase", name=self.current, state="end", seconds=seconds)

    def finish(self) -> None:
        if self.current is not None:
            self._end(self.clock())
            self.current = None

    def _remember(self, line: str) -> None:
        self.last_lines = (self.last_lines + [line])[-30:]

    def on_stdout(self, line: str) -> None:
        self._remember(line)
        event = parse_event(line) if line.startswith("@@") else None
        if event is not None:
            fields = {k: v for k, v in event.items() if k != "event"}
            if event.get("event") == "attention":
                self.attention = fields
            elif event.get("event") == "gpu_memory":
                self.gpu_memory.append(fields)
            elif event.get("event") == "weights":
                self.weights = fields.get("placement")
            elif event.get("event") == "lora":
                self.loras.append(fields)
            return
        if "Generating video" in line and self.current == "load":
            self._begin("text_encode")
        elif "Saving generated video to" in line:
            self._begin("save")
        elif "save_video failed" in line:
            self.save_error = line.split("save_video failed", 1)[1].lstrip(",: ")
        elif "merge_video_audio failed" in line:
            self.merge_error = line.split("merge_video_audio failed", 1)[1].lstrip(",: ")
        elif line.rstrip().endswith("Finished."):
            self.finish()

    def on_stderr(self, line: str) -> bool:
        """Handle one stderr line; True when it was a progress redraw (not worth echoing)."""
        m = TQDM_RE.search(line)
        if not m:
            self._remember(line)
            return False
        if not DENOISE_BAR_RE.match(line):
            return True  # another bar (loading shards): a redraw, not a step
        step, total = int(m.group(1)), int(m.group(2))
        finished = self.step == self.total == total
        if finished and step == 0:  # a fresh bar after a finished one: the next clip
            self.clip += 1
            self.step = -1
            self._begin("denoise")
        elif finished or (self.clip > 1 and step == total and self.step <= min(1, total - 2)):
            # another rank's redraw of the last clip's finished bar, early in this clip (with 2 steps a
            # clip, the end after step 1 is this clip's own last step)
            return True
        if self.current in ("load", "text_encode"):
            self._begin("denoise")
        # Under torchrun every rank draws a bar; report each step once, in order.
        if total != self.total or step > self.step:
            self.step, self.total = step, total
            elapsed = _seconds(m.group(3), m.group(4), m.group(5))
            eta = _seconds(m.group(6), m.group(7), m.group(8)) if m.group(7) else None
            clip = {"clip": self.clip, "clips": self.clips} if (self.clips or self.clip > 1) else {}
            if clip and eta is not None and self.clips:
                eta += (self.clips - self.clip) * (elapsed + eta)  # the clips still to come, at this clip's pace
            emit("progress", step=step, total=total, elapsed_s=elapsed, eta_s=eta, **clip)
            if step == total and self.current == "denoise":
                self._begin("decode")
        return True


# A whole tqdm redraw: tqdm writes "\r" + the bar and no line end, so the bar is complete when
# it ends in its rate bracket ("... 1.20it/s]"), not when the next redraw arrives.
_BAR_DONE = re.compile(rb"\d+/\d+ \[[^\]]*\]\s*$")


def read_lines(stream, handle) -> None:
    """Split a byte stream on \\n and \\r (tqdm redraws with \\r) and hand each line on, a
    progress bar as soon as it is drawn (else every step would show one redraw late)."""
    buf = b""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        if buf and _BAR_DONE.search(buf):
            parts.append(buf)
            buf = b""
        for part in parts:
            if part:
                handle(part.decode("utf-8", "replace"))
    if buf:
        handle(buf.decode("utf-8", "replace"))
