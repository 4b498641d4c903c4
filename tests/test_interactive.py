"""The interactive flow of Wan2.2's guides, typed verbatim into `docker attach wan22-inference`.

The container is the kit's (`wan22ctl up`) on the test image, whose Wan2.2 is the stand-in
generate.py (upstream's flags and default save name); the hub is the test server. The test
attaches to the container's own shell, as `docker attach` does, and types the guide's lines: the
checkpoints `download_model.sh` fetches must be what `--ckpt_dir ./checkpoints/...` finds, and the
video must land in the host's OUTPUT_DIR.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from wan22ctl.agent.outputs import check_mp4

pytestmark = [pytest.mark.docker, pytest.mark.hub]

PROMPT = "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."
GUIDE = [
    "/workspace/download_model.sh ti2va",
    "cd /workspace/wan2.2 && python generate.py --task t2v-A14B --size 1280*720 --ckpt_dir "
    f'./checkpoints/Wan2.2-T2V-A14B --offload_model True --prompt "{PROMPT}"',
]


class AttachedShell:
    """The container's main process (bash on a TTY), as `docker attach` reaches it."""

    def __init__(self, container):
        self.io = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        self.sock = self.io._sock
        self.sock.settimeout(1.0)
        self.seen = ""
        self.transcript: list[str] = []

    def type(self, line: str, timeout: float = 300) -> int:
        """Type `line` and Enter; wait for it to finish; its exit status."""
        self.sock.sendall(line.encode() + b'; echo "@@""done:$?"\n')
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"@@done:(\d+)", self.seen)
            if match:
                self.seen = self.seen[match.end():]
                return int(match.group(1))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.transcript.append(chunk.decode("utf-8", "replace"))
            self.seen += self.transcript[-1]
        raise AssertionError(f"no answer to {line!r} within {timeout}s:\n{''.join(self.transcript)[-3000:]}")

    def close(self) -> None:
        self.io.close()


def test_the_guides_download_and_generate_lines_work_verbatim(cli, hub, docker_client, standin_image):
    cli.env.update(DOCKER_IMAGE=standin_image)
    r = cli("up", "--wait", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    shell = AttachedShell(docker_client.containers.get(cli.env["CONTAINER_NAME"]))
    try:
        # Set-up a user needs here only with a mirror; the test image runs generate.py without torch.
        assert shell.type(f"export HF_ENDPOINT={hub.container_endpoint}; unset WAN22_BOOTSTRAP") == 0
        for line in GUIDE:
            assert shell.type(line) == 0, "".join(shell.transcript)[-3000:]
    finally:
        shell.close()
    text = "".join(shell.transcript)
    checkpoints = Path(cli.env["CHECKPOINT_DIR"])
    for model in ("Wan2.2-T2V-A14B", "Wan2.2-I2V-A14B"):
        assert (checkpoints / model / ".wan22ctl-manifest.json").is_file(), text[-3000:]
    videos = list(Path(cli.env["OUTPUT_DIR"]).glob("t2v-A14B_1280*720_1_Two_anthropomorphic_cats_*.mp4"))
    assert len(videos) == 1, text[-3000:]
    assert check_mp4(str(videos[0])) is None
    assert f"moved the video to /opt/outputs/{videos[0].name} (OUTPUT_DIR on the host)" in text
