"""`python generate.py ...` typed by hand in Wan's Python, and wanrun where no GPU is visible.

The image puts docker/wan22ctl-generate.pth in its Python's site-packages; here the same file is
loaded through a sitecustomize (site.addsitedir), so the real interpreter start-up runs it with the
real argv. The Wan tree is a stand-in: `wan.modules.attention` shaped like upstream and a
generate.py that reports what it sees and saves where upstream saves without --save_file (a name
in the current folder). CPU torch; the image-level checks are in test_gpu_image.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]

GENERATE = textwrap.dedent("""
    import json, os, sys
    from datetime import datetime
    argv = sys.argv[1:]
    def flag(name, default=None):
        return argv[argv.index(name) + 1] if name in argv else default
    if "--need-gpu" in argv:
        import torch
        torch.cuda.current_device()  # what upstream's `import wan` does first (wan/modules/t5.py)
    import wan.modules.attention as upstream
    from wan22ctl.agent import attention
    print("SEEN " + json.dumps({"patched": upstream.flash_attention is attention.flash_attention}), flush=True)
    task, size, prompt = flag("--task", "t2v-A14B"), flag("--size", "1280*720"), flag("--prompt", "cats")
    when = os.environ.get("STANDIN_NOW") or f"{datetime.now():%Y%m%d_%H%M%S}"
    name = f"{task}_{size}_1_{prompt.replace(' ', '_')}_{when}.mp4"
    with open(flag("--save_file") or name, "wb") as f:
        f.write(b"video:" + prompt.encode())
    print("SAVED " + (flag("--save_file") or name), flush=True)
""")


@pytest.fixture
def typed(tmp_path):
    """Runs `python generate.py ARGS` in a Wan tree, the image's .pth hook active; returns a runner."""
    wan = tmp_path / "wan2.2"
    (wan / "wan" / "modules").mkdir(parents=True)
    (wan / "wan" / "__init__.py").write_text("")
    (wan / "wan" / "modules" / "__init__.py").write_text("")
    (wan / "wan" / "modules" / "attention.py").write_text("def flash_attention(*a, **k):\n    raise AssertionError('upstream')\n")
    (wan / "generate.py").write_text(GENERATE)
    (wan / "other.py").write_text("print('OTHER')\n")
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({str(REPO / 'docker')!r})\n")
    outputs = tmp_path / "outputs"
    outputs.mkdir()

    def run(*args, script="generate.py", **env):
        full = {k: v for k, v in os.environ.items() if not k.startswith("WAN22_")}
        full.update(PYTHONPATH=os.pathsep.join([str(site_dir), str(REPO)]), WAN22_OUTPUT_DIR=str(outputs))
        full.update(env)
        return subprocess.run([sys.executable, script, *args], cwd=wan, env=full, capture_output=True, text=True, timeout=120)

    run.wan, run.outputs = wan, outputs
    return run


def seen(res) -> dict:
    return json.loads(res.stdout.split("SEEN ", 1)[1].splitlines()[0])


def test_hand_typed_run_gets_the_backend_and_its_video_lands_in_outputs(typed):
    res = typed("--task", "ti2v-5B", "--size", "1280*704", "--prompt", "a fox")
    assert res.returncode == 0, res.stderr
    assert seen(res) == {"patched": True}
    notice = [line for line in res.stderr.splitlines() if line.startswith("wan22ctl: attention")]
    assert len(notice) == 1 and "WAN22_ATTENTION=auto" in notice[0] and "fast_rope" in notice[0], res.stderr
    saved = res.stdout.split("SAVED ", 1)[1].strip()
    assert not (typed.wan / saved).exists()
    assert (typed.outputs / saved).read_bytes() == b"video:a fox"
    assert f"moved the video to {typed.outputs / saved}" in res.stderr
    assert not list(typed.outputs.glob(".partial-*"))


def test_a_taken_name_is_never_overwritten(typed):
    first = typed("--task", "ti2v-5B", "--prompt", "same", STANDIN_NOW="20260101_000000")
    saved = first.stdout.split("SAVED ", 1)[1].strip()
    assert (typed.outputs / saved).read_bytes() == b"video:same"
    (typed.outputs / saved).write_bytes(b"keep me")  # the host changed it since
    again = typed("--task", "ti2v-5B", "--prompt", "same", STANDIN_NOW="20260101_000000")
    assert again.returncode == 0, again.stderr
    assert (typed.outputs / saved).read_bytes() == b"keep me"
    second = typed.outputs / saved.replace(".mp4", "-2.mp4")
    assert second.read_bytes() == b"video:same" and f"moved the video to {second}" in again.stderr


def test_an_explicit_save_file_stays_where_the_user_put_it(typed):
    res = typed("--task", "ti2v-5B", "--prompt", "mine", "--save_file", "mine.mp4")
    assert res.returncode == 0, res.stderr
    assert (typed.wan / "mine.mp4").exists() and not list(typed.outputs.iterdir())
    assert "moved" not in res.stderr


def test_bootstrap_0_runs_upstream_unchanged(typed):
    res = typed("--task", "ti2v-5B", "--prompt", "plain", WAN22_BOOTSTRAP="0")
    assert res.returncode == 0, res.stderr
    assert seen(res) == {"patched": False}
    assert "wan22ctl" not in res.stderr
    assert (typed.wan / res.stdout.split("SAVED ", 1)[1].strip()).exists()


def test_bootstrap_0_with_flash_attn_4_alone_is_refused_before_anything_loads(typed, tmp_path):
    only_fa4 = tmp_path / "fa4"
    (only_fa4 / "flash_attn" / "cute").mkdir(parents=True)  # what flash-attn-4 installs: no flash_attn/__init__.py
    (only_fa4 / "flash_attn" / "cute" / "__init__.py").write_text("")
    env = {"WAN22_BOOTSTRAP": "0", "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO), str(only_fa4)])}
    res = typed("--task", "ti2v-5B", **env)
    assert res.returncode == 3 and "SEEN" not in res.stdout
    assert res.stderr.startswith("error: WAN22_BOOTSTRAP=0 runs Wan2.2's own attention, which needs flash-attn 2")
    assert typed("--task", "ti2v-5B", **{**env, "WAN22_BOOTSTRAP": "1"}).returncode == 0  # the kit's backends


def test_other_scripts_are_left_alone(typed):
    res = typed(script="other.py")
    assert res.returncode == 0 and res.stdout == "OTHER\n" and res.stderr == ""


def test_hand_typed_lora_flags_are_the_kits_and_checked_before_generate_runs(typed):
    res = typed("--task", "ti2v-5B", "--prompt", "x", "--lora", "missing.safetensors:0.5")
    assert res.returncode == 2 and "SEEN" not in res.stdout
    assert res.stderr.strip() == "error: LoRA missing.safetensors does not exist"


def test_a_bad_switch_is_one_line_and_exit_2_before_generate_runs(typed):
    res = typed("--task", "ti2v-5B", WAN22_ATTENTION="fa9")
    assert res.returncode == 2
    assert "WAN22_ATTENTION='fa9'" in res.stderr and "SEEN" not in res.stdout
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a visible GPU")
def test_no_gpu_ends_a_hand_typed_run_with_the_kits_line(typed):
    res = typed("--task", "t2v-A14B", "--need-gpu")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Wan2.2 needs a CUDA GPU and this container sees none"), res.stderr
    assert "GPUS=all" in last and "NVIDIA Container Toolkit" in last and "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a visible GPU")
def test_wanrun_stops_where_a_gpu_is_needed_with_exit_3(typed):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN22_")}
    env.update(PYTHONPATH=str(REPO), WAN22_DIR=str(typed.wan))
    res = subprocess.run([sys.executable, "-m", "wan22ctl.agent.wanrun", "--task", "t2v-A14B", "--need-gpu"],
                         cwd=typed.wan, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: Wan2.2 needs a CUDA GPU and this container sees none")
    assert "Traceback" not in res.stderr and "SEEN" not in res.stdout
