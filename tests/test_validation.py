"""One table of bad requests, refused the same way by every entry point.

`plan`, `generate --dry-run` and `generate` run as a user runs them (the real CLI, no Docker
daemon behind DOCKER_HOST): each must exit 2 with the same single line, before Docker is
touched. The resident server's request check (`agent.server.requests.validate`, what `POST
/v1/videos` answers with a 422) must give the same reason where the input applies to it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_environ
from wan22ctl.agent.server.requests import RequestInvalid, validate

HERE = str(Path(__file__).resolve())
ENTRY_POINTS = (["plan"], ["generate", "--dry-run"], ["generate"])

# (CLI arguments, (server task, body) or None where the input has no server form, the one line)
BAD_INPUTS = [
    (["--task", "ti2v-5B", "--size", "1280*720"], ("ti2v-5B", {"size": "1280*720"}),
     "size 1280*720 is not supported by ti2v-5B; choose one of 704*1280, 1280*704"),
    (["--task", "t2v-A14B", "--frame-num", "80"], ("t2v-A14B", {"frame_num": 80}),
     "--frame-num 80 is not of the form 4n+1; use 77 or 81"),
    (["--task", "t2v-A14B", "--steps", "0"], ("t2v-A14B", {"sample_steps": 0}), "--steps 0 must be at least 1"),
    (["--task", "t2v-A14B", "--shift", "0"], ("t2v-A14B", {"sample_shift": 0}), "--shift 0.0 must be greater than 0"),
    (["--task", "t2v-A14B", "--guide-scale", "-1"], ("t2v-A14B", {"sample_guide_scale": -1}),
     "--guide-scale -1.0 must be 0 or more"),
    (["--task", "t2v-A14B", "--solver", "euler"], ("t2v-A14B", {"sample_solver": "euler"}),
     "unknown solver 'euler'; choose one of unipc, dpm++"),
    (["--task", "t2v-A14B", "--prompt", "   "], ("t2v-A14B", {"prompt": "   "}),
     "a prompt is required (--prompt or --prompt-file); upstream would silently use its example prompt"),
    (["--task", "i2v-A14B"], ("i2v-A14B", {}), "i2v-A14B needs --image PATH (upstream would silently use its example image)"),
    (["--task", "t2v-A14B", "--image", HERE], ("t2v-A14B", {"image": "aGk="}),
     "t2v-A14B takes no image; use i2v-A14B or ti2v-5B for image-to-video"),
    (["--task", "i2v-A14B", "--image", "/nonexistent/x.jpg"], None, "image /nonexistent/x.jpg does not exist or is not a file"),
    (["--task", "t2v-A14B", "--seed", "-5"], None, "--seed -5 must be between 0 and 2**63-1"),
    (["--task", "t2v-A14B", "--offload", "maybe"], None, "--offload 'maybe'; choose auto, on or off"),
    (["--task", "t2v-A14B", "--gpus", "x"], None, "--gpus 'x': must be all, a count (e.g. 2) or indices (e.g. 0,2 or device=1)"),
    (["--task", "wan"], None, "unknown task 'wan'; choose one of t2v-A14B, i2v-A14B, ti2v-5B"),
]


def _cli(tmp_path, *args):
    env = clean_environ()
    env.update(DOCKER_HOST="unix:///nonexistent/docker.sock", CHECKPOINT_DIR=str(tmp_path / "ckpt"),
               OUTPUT_DIR=str(tmp_path / "out"))
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args, server, message", BAD_INPUTS, ids=[" ".join(row[0]) for row in BAD_INPUTS])
def test_every_entry_point_refuses_the_same_input_the_same_way(tmp_path, args, server, message):
    if "--prompt" not in args:
        args = [*args, "--prompt", "a red fox"]
    for entry in ENTRY_POINTS:
        r = _cli(tmp_path, *entry, *args)
        assert r.returncode == 2, (entry, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [f"error: {message}"], (entry, r.stderr)
        assert r.stdout == "", (entry, r.stdout)
    if server is not None:
        task, body = server
        with pytest.raises(RequestInvalid) as refused:
            validate({"prompt": "a red fox", **body}, task)
        assert refused.value.reason == message
