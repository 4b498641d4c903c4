"""What every command group shares: settings loading, JSON/human output, option aliases."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Mapping

import typer
from typing import Annotated

from wan22ctl.settings import Settings, load_settings, print_warnings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop; nothing is changed.")]
StackOpt = Annotated[str, typer.Option("--stack", help="Which stack: main (Wan2.2) or videox-fun.")]


def settings_from(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load settings once for a command, print warnings (misspelt keys) on stderr."""
    settings = load_settings(overrides={k: (None if v is None else str(v)) for k, v in (overrides or {}).items()})
    print_warnings(settings)
    return settings


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print `data` as JSON (stdout, one document) or through the human renderer."""
    if as_json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        human(data)


def console(stderr: bool = False):
    """A rich console, imported only by the commands that draw."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
