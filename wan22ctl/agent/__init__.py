"""Container side of the kit: runs inside the image (`wan22ctl-agent ...`).

This package's own `__init__` imports nothing heavy: Wan2.2's Python process imports
`wan22ctl.agent.attention` with only torch available.
"""
