"""One rich progress display for download/verify events, wherever they were produced.

The same events come from the agent inside the container (parsed out of the exec stream), from
`--local` runs on the host (handed over in-process), and from `download_model.sh` in a terminal.
One bar per phase (download, verify) with total bytes, rate and ETA; one line per notable event.
"""

from __future__ import annotations

from wan22ctl.plan.download import human_bytes


class DownloadView:
    """Context manager; feed it events with `handle(event_dict)` or `sink(name, **fields)`."""

    def __init__(self, console=None, quiet: bool = False, path_map: dict[str, str] | None = None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self.quiet = quiet
        # container path -> host path, so messages name the folders the user knows
        self.path_map = path_map or {}
        self.events: list[dict] = []
        self._progress = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "DownloadView":
        from rich.progress import (
            BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn,
        )

        if not self.quiet:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def sink(self, name: str, **fields) -> None:
        self.handle({"event": name, **fields})

    def log(self, line: str) -> None:
        """An ordinary output line (the agent's stderr, warnings) shown above the bar."""
        if not self.quiet:
            self.console.print(line, markup=False, highlight=False)

    def _say(self, text: str) -> None:
        for inside, outside in self.path_map.items():
            text = text.replace(inside + "/", outside + "/").replace(inside + ":", outside + ":")
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False)

    def handle(self, event: dict) -> None:
        self.events.append(event)
        name = event.get("event")
        if name == "progress":
            self._update(event)
        elif name == "plan":
            self._plan(event["plan"], event.get("dry_run", False))
        elif name == "retry":
            self._say(f"{event['endpoint']} unreachable ({event['reason']}); attempt {event['attempt']}/"
                      f"{event['attempts']} failed, retrying in {event['delay_s']:.1f}s")
        elif name == "warning":
            self._say(f"warning: {event['message']}")
        elif name == "file" and event.get("status") not in ("fetched", "verified"):
            self._say(f"{event['key']}: {event['path']}: {event['status']}")
        elif name == "model_done":
            self._say(f"{event['key']}: complete in {event['target_dir']} (commit {event['commit'][:12]}, "
                      f"{event['fetched']} files fetched)")
        elif name == "verified":
            detail = ""
            if event["bad"]:
                detail += f"; corrupt: {', '.join(event['bad'])}"
            if event["missing"]:
                detail += f"; missing: {', '.join(event['missing'][:8])}" + (" ..." if len(event["missing"]) > 8 else "")
            self._say(f"{event['key']}: {event['state']} ({event['files']} files checked in {event['target_dir']}){detail}")

    def _plan(self, plan: dict, dry_run: bool) -> None:
        for m in plan["models"]:
            counts: dict[str, int] = {}
            for f in m["files"]:
                counts[f["action"]] = counts.get(f["action"], 0) + 1
            what = ", ".join(f"{n} to {a}" for a, n in sorted(counts.items()))
            self._say(f"{m['key']}: {m['repo_id']}@{m['commit'][:12]} -> {m['target_dir']}: "
                      f"{human_bytes(m['total_bytes'])} in {len(m['files'])} files ({what}); "
                      f"{human_bytes(m['fetch_bytes'])} to download")
        for v in plan["space"]:
            verdict = "fits" if v["fits"] else "DOES NOT FIT"
            self._say(f"disk {v['path']}: {human_bytes(v['free_bytes'])} free, "
                      f"{human_bytes(v['needed_bytes'])} needed: {verdict}")
        for note in plan.get("notes", []):
            self._say(f"note: {note}")
        if dry_run:
            self._say("dry run: nothing was downloaded")

    def _update(self, event: dict) -> None:
        if self._progress is None:
            return
        phase = event["phase"]
        label = {"download": "downloading", "verify": "verifying"}.get(phase, phase)
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(label, total=event["total"] or None, completed=event["done"])
        else:
            self._progress.update(self._tasks[phase], total=event["total"] or None, completed=event["done"])
