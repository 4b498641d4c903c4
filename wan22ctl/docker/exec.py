"""Running a command in a container with its output streamed and its real exit code.

docker-py's `exec_run(stream=True)` never returns an exit code, so this uses the low-level
`exec_create` / `exec_start(stream=True, demux=True)` / `exec_inspect`. Lines are handed to a
callback as they arrive (stdout and stderr kept apart); agent events (`@@wan22ctl {...}`) are
parsed out for the caller. Ctrl-C or SIGTERM kills the whole process tree the exec started,
inside the container, before this returns.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from wan22ctl.protocol import parse_event

LineHandler = Callable[[str, str], None]  # (stream name "stdout"/"stderr", line without newline)
EventHandler = Callable[[dict], None]


@dataclass
class ExecResult:
    exit_code: int
    events: list[dict] = field(default_factory=list)
    interrupted: bool = False


TOKEN_VAR = "WAN22CTL_EXEC_TOKEN"

# Every process an exec starts (torchrun ranks included) inherits its token; exec_inspect's Pid
# is a host PID, useless inside the container, so the tree is found by the token instead.
_KILL_SCRIPT = r"""
sig() { for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "$TOKEN_VAR=$1"; then kill -"$2" "${p#/proc/}" 2>/dev/null; fi
done; }
sig "$T" TERM; i=0
while [ $i -lt 10 ]; do sleep 0.5; i=$((i+1)); left=0
  for p in /proc/[0-9]*; do tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "$TOKEN_VAR=$T" && left=1; done
  [ $left = 0 ] && exit 0; done
sig "$T" KILL
"""


def kill_exec_tree(container, token: str) -> None:
    """TERM every process of one exec inside the container, then KILL what is left after 5 s."""
    script = _KILL_SCRIPT.replace("$TOKEN_VAR", TOKEN_VAR)
    try:
        container.exec_run(["sh", "-c", script], environment={"T": token}, user="root")
    except Exception:
        pass


def run_exec(
    container,
    cmd: Sequence[str],
    *,
    environment: Mapping[str, str] | None = None,
    workdir: str | None = None,
    on_line: LineHandler | None = None,
    on_event: EventHandler | None = None,
) -> ExecResult:
    """Run `cmd` in `container`, stream its lines, return its exit code and events.

    `environment` reaches only this process (secrets such as HF_TOKEN travel this way: they
    never appear in the container's config or `docker inspect`).
    """
    import uuid

    api = container.client.api
    token = uuid.uuid4().hex
    env = {**dict(environment or {}), TOKEN_VAR: token}
    exec_id = api.exec_create(container.id, list(cmd), stdout=True, stderr=True, environment=env, workdir=workdir)["Id"]
    result = ExecResult(exit_code=-1)
    def _on_signal(signum, frame):
        raise KeyboardInterrupt

    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_signal)
    buffers = {"stdout": "", "stderr": ""}

    def feed(name: str, chunk: bytes) -> None:
        buffers[name] += chunk.decode("utf-8", "replace")
        # tqdm redraws with '\r'; treat it as a line end so progress is seen live.
        text = buffers[name].replace("\r", "\n")
        *lines, buffers[name] = text.split("\n")
        for line in lines:
            _dispatch(name, line)

    def _dispatch(name: str, line: str) -> None:
        event = parse_event(line) if name == "stdout" else None
        if event is not None:
            result.events.append(event)
            if on_event:
                on_event(event)
        elif on_line and line:
            on_line(name, line)

    try:
        stream = api.exec_start(exec_id, stream=True, demux=True)
        for out, err in stream:
            if out:
                feed("stdout", out)
            if err:
                feed("stderr", err)
        for name, rest in buffers.items():
            if rest:
                _dispatch(name, rest)
    except KeyboardInterrupt:
        result.interrupted = True
        kill_exec_tree(container, token)
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    info = api.exec_inspect(exec_id)
    result.exit_code = info.get("ExitCode")
    if result.exit_code is None:
        result.exit_code = -1
    return result
