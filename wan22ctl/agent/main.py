"""`wan22ctl-agent`: the container-side entry point that the host calls through `docker exec`.

Subcommands are added by the modules that own them (health, download, generate, ...); each
module exposes `add_parser(subparsers)` that sets `func` on its parser.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wan22ctl-agent", description="wan22ctl container side")
    sub = parser.add_subparsers(dest="command", required=True)
    from wan22ctl.agent import health

    for module in (health,):
        module.add_parser(sub)
    for name in ("downloads", "launcher", "animate_prep", "server", "videox", "inventory"):
        try:
            module = __import__(f"wan22ctl.agent.{name}", fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name == f"wan22ctl.agent.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    from wan22ctl.errors import Wan22Error

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except Wan22Error as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
