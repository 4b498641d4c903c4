"""How commands speak: one `Output` per command, either a JSON document or lines and tables for people.

With `--json` stdout carries exactly one JSON document and everything said along the way goes
to stderr. Text for people never goes through rich markup, and control characters (escape
sequences, carriage returns, lone surrogates) in it are shown escaped: prompts, file names and
server messages are user-supplied and must not drive the terminal. rich is imported only when
something is drawn, so `wan22ctl --help` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Callable, Iterable, Sequence

_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe(text: Any) -> str:
    """`text` with every character that could drive a terminal shown as an escape (\\x1b, \\u202e)."""
    def escaped(m: re.Match) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _UNSAFE.sub(escaped, str(text))


def fmt_duration(seconds) -> str:
    """m:ss, or h:mm:ss from an hour on; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def _console(stderr: bool):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, emoji=False)


class Output:
    """One command's output: `result()` prints the command's data as JSON or through a human renderer;
    `say`, `warn` and `table` talk to people (on stderr when the result is JSON)."""

    def __init__(self, as_json: bool = False):
        self.json = as_json
        self._consoles: dict[bool, Any] = {}

    def _get(self, stderr: bool):
        if stderr not in self._consoles:
            self._consoles[stderr] = _console(stderr)
        return self._consoles[stderr]

    @property
    def console(self):
        """The rich console people read: stdout, or stderr when the result is JSON."""
        return self._get(self.json)

    @property
    def err(self):
        """A rich console on stderr (progress displays that never belong in the result)."""
        return self._get(True)

    def say(self, text: Any, style: str | None = None) -> None:
        """One line (or more) for people, escaped, never wrapped."""
        self.console.print(safe(text), style=style, markup=False, soft_wrap=True)

    def note(self, text: Any) -> None:
        """A line about the command's progress, on stderr whatever the result's format."""
        self.err.print(safe(text), markup=False, soft_wrap=True)

    def warn(self, text: Any) -> None:
        from rich.text import Text

        self.console.print(Text("warning: ", style="yellow") + Text(safe(text)), soft_wrap=True)

    def result(self, data: Any, human: Callable[[Any], None] | None = None) -> None:
        """The command's result: JSON on stdout with --json, else `human(data)` (nothing when None)."""
        if self.json:
            print_json(data)
        elif human is not None:
            human(data)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
        """A table; a cell is text or (text, style). Every cell is escaped, none is markup."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=safe(title) if title else None, show_header=True, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            cells = []
            for cell in row:
                text, style = cell if isinstance(cell, tuple) else (cell, None)
                cells.append(Text("" if text is None else safe(text), style=style or ""))
            table.add_row(*cells)
        self.console.print(table)

    def run_view(self, label: str) -> "RunView":
        return RunView(self.console, quiet=self.json, label=label)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------- one run, as it happens

PHASE_LABEL = {"load": "loading models", "text_encode": "encoding prompt", "denoise": "denoising",
               "decode": "decoding video", "save": "saving"}
# The resident server's phases -> the phase names above.
SERVER_PHASES = {"encoding": "text_encode", "denoising": "denoise", "decoding": "decode", "saving": "save"}


class RunView:
    """Draws one run: upstream's log lines, a progress bar with steps and ETA, a line per phase.
    Fed by the agent's events (`on_event`, `on_line`) or by a server job's updates (`on_job`)."""

    def __init__(self, console, quiet: bool, label: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.label = safe(label)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"), TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task(f"{self.label}: starting", total=None, eta="?")
        self._server_phase: str | None = None
        self._clip = 0  # the clip being denoised (s2v / animate run one bar a clip)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def say(self, text: str, style: str | None = None) -> None:
        self.progress.console.print(safe(text), markup=False, highlight=False, soft_wrap=True, style=style)

    def _describe(self, text: str) -> None:
        self.progress.update(self.task, description=f"{self.label}: {safe(text)}")

    def on_line(self, stream: str, line: str) -> None:
        if not self.quiet:
            self.say(line, style="dim" if stream == "stderr" else None)

    def on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "phase":
            name = event.get("name", "")
            if event.get("state") == "start":
                self._describe(PHASE_LABEL.get(name, name))
            else:
                self.say(f"{PHASE_LABEL.get(name, name)}: {event.get('seconds', 0):.1f} s")
        elif kind == "result":
            self._describe(event.get("status", "done"))
        elif kind == "progress":
            if event.get("clip") and event["clip"] != self._clip:
                self._clip = event["clip"]
                self.say(f"denoising clip {self._clip} of {event.get('clips') or '?'}")
            self.progress.update(self.task, total=event["total"], completed=event["step"],
                                 eta=fmt_duration(event.get("eta_s")))
        elif kind == "waiting":
            self.say(f"GPU(s) {', '.join(map(str, event.get('gpus', [])))} busy with {event.get('holder')}; waiting "
                     "(Ctrl-C to give up, --no-wait to fail at once)")
        elif kind == "lock_acquired":
            self.say("GPUs free; starting")
        elif kind == "plan_adjusted":
            self.say(f"the container ran the plan for its own runtime: {' '.join(event.get('argv') or [])}")

    def on_job(self, job: dict) -> None:
        """One server-sent update of a resident server's job."""
        p = job.get("progress_detail") or {}
        if job["state"] == "queued":
            self._describe(f"queued (position {p.get('queue_position', 0) + 1})")
        elif p.get("phase") in SERVER_PHASES and p["phase"] != self._server_phase:
            self._server_phase = p["phase"]
            self.on_event({"event": "phase", "name": SERVER_PHASES[p["phase"]], "state": "start"})
        if p.get("phase") in ("denoising", "decoding", "saving"):
            clips = {"clip": p["clip"], "clips": p["clips"]} if p.get("clips", 1) > 1 else {}  # steps count on across them
            self.on_event({"event": "progress", "step": p.get("step", 0), "total": p.get("total"),
                           "eta_s": p.get("eta_seconds"), **clips})
            if p.get("expert") and p["phase"] == "denoising":
                self._describe(f"denoising ({p['expert'].replace('_', '-')} expert)")


# --------------------------------------------------------------------------- a batch of runs


class BatchView:
    """`batch.Report` for people (and the JSON summary): skipped lines, a line per run, the summary."""

    def __init__(self, out: Output, to_host: Callable[[str | None], str | None]):
        self.out = out
        self.to_host = to_host

    def skipped(self, job) -> None:
        self.out.say(f"{job.label}: skipped: {job.error}", style="red")

    def finished(self, job) -> None:
        run = job.run
        if run.get("status") == "ok":
            size = f"{run['bytes']} bytes, " if "bytes" in run else ""
            self.out.say(f"saved {self.to_host(run['video'])} ({size}{run.get('total_s', 0):.1f} s)")
        elif run.get("status") in ("failed", "cancelled"):
            self.out.say(f"{run['status']}: {run.get('reason')}", style="red")

    def summary(self, jobs) -> None:
        from wan22ctl.batch import summary_rows

        rows = summary_rows(jobs, self.to_host)
        if self.out.json:
            print_json({"runs": rows, "failed": sum(r["status"] != "ok" for r in rows)})
            return
        self.out.table(("line", "status", "prompt", "video / error", "s"),
                       [(r["line"], r["status"], (r["prompt"] or "")[:40], r["video"] or r["error"] or "",
                         f"{r['seconds']:.1f}" if r["seconds"] is not None else "") for r in rows],
                       title="generate: summary")
