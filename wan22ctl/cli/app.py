"""The `wan22ctl` command: global options, error rendering, and registration of every command group.

Usage examples:
    wan22ctl up                      # build or pull the image, start the GPU container
    wan22ctl status --json
    wan22ctl download ti2va          # T2V + I2V checkpoints into CHECKPOINT_DIR
    wan22ctl generate --task ti2v-5B --prompt "a red fox in snow"

Heavy libraries (docker, huggingface_hub, rich) are imported inside the commands that use
them, so `wan22ctl --help` starts fast.
"""

from __future__ import annotations

import os
import sys

import typer

from wan22ctl import __version__
from wan22ctl.errors import Wan22Error

app = typer.Typer(
    name="wan22ctl",
    help="Run Wan2.2 video generation in Docker: from a fresh clone to generated videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"wan22ctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    env_file: str = typer.Option(None, "--env-file", help="Settings file to read instead of ./.env."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for unexpected errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    if env_file:
        from wan22ctl.settings import find_env_file

        find_env_file(env_file, flag="--env-file")  # a missing file or a folder is named as the flag, not the variable
        os.environ["WAN22CTL_ENV_FILE"] = env_file
    if debug:
        os.environ["WAN22CTL_DEBUG"] = "1"


def _register() -> None:
    # Each module adds its commands to `app`; none of them imports heavy libraries at import time.
    from wan22ctl.cli import animate_prep, container, doctor, download, generate, kube, serve, ui

    for module in (container, download, generate, animate_prep, doctor, ui, serve, kube):
        module.register(app)


_register()


def main() -> None:
    """Entry point: run the app, turning kit errors into one line and their exit code."""
    try:
        # Outside standalone mode click returns typer.Exit's code instead of exiting.
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except Wan22Error as exc:
        from wan22ctl.cli.output import safe

        print(f"error: {safe(exc.render())}", file=sys.stderr)  # messages quote user input and servers
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors and real bugs
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(130)
        if os.environ.get("WAN22CTL_DEBUG"):
            raise
        from wan22ctl.cli.output import safe

        print(f"error: unexpected {type(exc).__name__}: {safe(exc)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
