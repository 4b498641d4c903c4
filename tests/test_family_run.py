"""benchmarks/family_run.py's CPU-checkable parts: the inputs it makes are what the kit accepts, and
they give exactly the clips asked for; its plan is the kit's own (no GPU, no Wan2.2 code here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, clean_environ
from wan22ctl import catalog, media

sys.path.insert(0, str(REPO / "benchmarks"))
import family_run  # noqa: E402


@pytest.mark.parametrize("clips, frames", [(1, 80), (2, 80), (3, 48), (5, 4)])
def test_the_audio_it_writes_gives_the_clips_asked_for(tmp_path, clips, frames):
    path = family_run.write_wav(str(tmp_path / "a.wav"), family_run.s2v_seconds(clips, frames))
    seconds = media.audio_info(path).seconds
    assert catalog.s2v_clip_count(seconds, frames) == clips


def test_the_png_it_writes_is_an_image(tmp_path):
    path = family_run.write_png(str(tmp_path / "x.png"), 64, 48)
    assert media.image_kind(path) == "png"
    data = open(path, "rb").read()
    assert data[12:16] == b"IHDR" and int.from_bytes(data[16:20], "big") == 64 and data.endswith(b"IEND\xaeB`\x82")


def test_plan_only_plans_s2v_with_the_kits_own_rules(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "family_run.py"), "--task", "s2v-14B", "--plan-only",
                        "--gpu-count", "1", "--gpu-mem-gb", "141", "--out", str(tmp_path), "--clips", "3",
                        "--frames", "48", "--size", "832*480"], capture_output=True, text=True, env=clean_environ(),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout[r.stdout.index("{"):])
    assert data["request"]["clips"] == 3 and data["plan"]["offload_model"] is False
    argv = data["plan"]["argv"]
    assert argv[argv.index("--infer_frames") + 1] == "48" and argv[argv.index("--audio") + 1].endswith("/audio/talk.wav")
