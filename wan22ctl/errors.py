"""The two kinds of failure a user can meet, each with its exit code and its fix.

A `UserError` is a mistake in what the user asked (bad value, unknown selector): one line,
exit code 2, before anything slow starts. An `EnvError` is the machine lacking something
(daemon down, no NVIDIA runtime, disk full): it names the missing piece and the command or
setting that fixes it, exit code 3. Anything else is a bug and shows a traceback with --debug.
"""

from __future__ import annotations


class Wan22Error(Exception):
    """Base of every error the CLI reports as one line instead of a traceback."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def render(self) -> str:
        """The text shown to the user: the message, then the fix when there is one."""
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class UserError(Wan22Error):
    """The request itself is wrong; nothing was started."""

    exit_code = 2


class EnvError(Wan22Error):
    """The environment lacks something the request needs."""

    exit_code = 3


class RunFailed(Wan22Error):
    """A long step (build, download, generation) ran and failed; its own output was shown."""

    exit_code = 1
