"""`python -m wan22ctl` is the CLI."""

from wan22ctl.cli.app import main

main()
