"""wan22ctl: run Wan2.2 video generation in Docker, from a fresh clone to an MP4.

The host side (the `wan22ctl` CLI) reads settings, plans, and drives the Docker Engine;
the container side (`wan22ctl.agent`, the same package installed in the image) downloads
checkpoints and launches Wan2.2. See ARCHITECTURE.md.
"""

__version__ = "0.1.0"
