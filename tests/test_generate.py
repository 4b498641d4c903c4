"""`wan22ctl generate` end to end: real Docker Engine, the kit image with stand-ins for Wan2.2's
generate.py, torchrun and nvidia-smi (tests/standins/), real files and exit codes.

One container serves the whole module; each test writes the fake GPU inventory it needs into
/etc/wan22-fake-gpus and reads what the stand-in generate.py was started with from its call log.
"""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import BASE_IMAGE, Cli, clean_environ, read_until, unique
from wan22ctl import catalog
from wan22ctl.agent.outputs import check_mp4, final_stem
from wan22ctl.hub.state import MANIFEST_NAME

pytestmark = pytest.mark.docker

CALLS = "/tmp/wan22-standin-calls.jsonl"
H100 = "NVIDIA H100 80GB HBM3"


def fake_checkpoints(root: Path) -> None:
    """Every required file of the Wan models (and CosyVoice's), tiny, with a manifest: what `download` leaves."""
    for model in [catalog.model_for_task(task) for task in catalog.TASKS] + [catalog.COSYVOICE]:
        base = root / model.subdir
        files = {}
        for entry in model.required:
            rel = entry + "tokenizer.json" if entry.endswith("/") else entry
            path = base / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            files[rel] = {"size": 1}
        (base / MANIFEST_NAME).write_text(json.dumps({"files": files}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_client, standin_image):
    root = tmp_path_factory.mktemp("generate")
    (root / "work").mkdir()
    fake_checkpoints(root / "checkpoints")
    name = unique("wan22gen")
    env = clean_environ()
    env.update(
        CONTAINER_NAME=name, VIDEOX_CONTAINER_NAME=name + "-vx", DOCKER_IMAGE=standin_image, IMAGE_MODE="pull",
        BASE_IMAGE=BASE_IMAGE, GPU_STACK="false", GPUS="none", PRIVILEGED="false", MEMLOCK="off",
        RESTART_POLICY="no", OUTPUT_DIR=str(root / "outputs"), CHECKPOINT_DIR=str(root / "checkpoints"),
        HF_HOME=str(root / "hf-home"), VIDEOX_MODELS_DIR=str(root / "videox-models"),
        HF_TOKEN="hf_SECRETtoken1234567890",
    )
    cli = Cli(root / "work", env, [name])
    try:  # a failed `up` may leave a created container behind: removed all the same
        r = cli("up", "--wait", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        container = docker_client.containers.get(name)
        yield SimpleNamespace(cli=cli, container=container, out=root / "outputs", root=root)
    finally:
        cli.remove_created(docker_client)


def sh(container, script: str) -> str:
    code, out = container.exec_run(["sh", "-c", script])
    assert code == 0, out
    return out.decode()


def gpus(stack, spec: str) -> None:
    sh(stack.container, f"echo '{spec}' > /etc/wan22-fake-gpus && rm -f {CALLS}")


def calls(stack) -> list[dict]:
    text = sh(stack.container, f"cat {CALLS} 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def videos(stack) -> list[Path]:
    return sorted(stack.out.glob("*.mp4"))


def leftovers(stack) -> list[str]:
    """Partial files, sidecar temporaries and staged inputs: none may survive a run."""
    found = [p.name for p in stack.out.glob(".partial-*")] + [p.name for p in stack.out.glob("*.partial")]
    staging = stack.out / ".staging"
    if staging.exists():
        found += [str(p) for p in staging.rglob("*")]
    return found


def processes(stack) -> list[str]:
    """Command lines of the stand-in's processes still alive in the container."""
    text = sh(stack.container, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done")
    return [line for line in text.splitlines() if "generate.py" in line or "torchrun" in line]


def generate(stack, *args, **kw):
    return stack.cli("generate", *args, timeout=120, **kw)


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- happy path


def test_single_gpu_run_progress_output_and_sidecar(stack):
    gpus(stack, f"1x80:9.0:{H100}")
    before = set(videos(stack))
    r = generate(stack, "--task", "ti2v-5B", "--prompt", "A red fox / runs * in snow", "--steps", "8",
                 "--seed", "1234", "--frame-num", "41")
    assert r.returncode == 0, r.stdout + r.stderr
    new = sorted(set(videos(stack)) - before)
    assert len(new) == 1
    video = new[0]
    assert re.fullmatch(r"ti2v-5B_1280x704_a-red-fox-runs-in-snow_\d{8}-\d{6}\.mp4", video.name)
    assert check_mp4(str(video)) is None and video.stat().st_size > 0
    assert f"saved {video}" in r.stdout
    # progress: the bar's final state and one line per phase, parsed from upstream's own output
    assert "8/8 steps" in r.stdout
    for label in ("loading models:", "encoding prompt:", "denoising:", "decoding video:", "saving:"):
        assert label in r.stdout, r.stdout
    assert "INFO: Generating video ..." in r.stdout

    side = json.loads(video.with_suffix(".json").read_text())
    assert side["task"] == "ti2v-5B" and side["prompt"] == "A red fox / runs * in snow"
    assert side["negative_prompt"] == catalog.SAMPLE_NEG_PROMPT
    assert (side["size"], side["width"], side["height"], side["frame_num"]) == ("1280*704", 1280, 704, 41)
    assert (side["sample_steps"], side["sample_shift"], side["guide_scale"], side["seed"], side["solver"]) == \
        (8, 5.0, 5.0, 1234, "unipc")
    assert side["gpus"] == [H100] and side["exit_code"] == 0 and side["status"] == "ok"
    assert set(side["phases_s"]) == {"load", "text_encode", "denoise", "decode", "save"}
    assert side["wan22_commit"] == "42bf4cfaa384bc21833865abc2f9e6c0e67233dc"
    assert side["docker_image_digest"].startswith("sha256:")
    assert side["wan22ctl_version"] and side["plan"]["argv"] and side["argv"][0] == "python3"
    assert "SECRET" not in video.with_suffix(".json").read_text()

    # the argv generate.py really received: the plan's, upstream flags, temp name under /opt/outputs
    (call,) = calls(stack)
    argv = call["argv"]
    assert argv == side["argv"][2:]
    assert argv[argv.index("--save_file") + 1].startswith("/opt/outputs/.partial-")
    assert argv[argv.index("--ckpt_dir") + 1] == "/opt/checkpoints/Wan2.2-TI2V-5B"
    assert argv[argv.index("--offload_model") + 1] == "False" and "--ulysses_size" not in argv
    assert call["cwd"] == "/workspace/wan2.2" and call["CUDA_VISIBLE_DEVICES"] == "0"
    assert call["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert leftovers(stack) == []


def test_multi_gpu_uses_torchrun_with_ulysses(stack):
    gpus(stack, "3x141:9.0:NVIDIA H200")
    r = generate(stack, "--task", "t2v-A14B", "--prompt", "two cats boxing", "--steps", "4", "--size", "832*480")
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = calls(stack)
    # 3 GPUs visible, 40 heads: two ranks (3 does not divide 40)
    assert sorted(c["RANK"] for c in ranks) == ["0", "1"] and {c["WORLD_SIZE"] for c in ranks} == {"2"}
    argv = ranks[0]["argv"]
    assert argv[argv.index("--ulysses_size") + 1] == "2" and "--dit_fsdp" in argv and "--t5_fsdp" in argv
    assert argv[argv.index("--size") + 1] == "832*480"
    assert {c["CUDA_VISIBLE_DEVICES"] for c in ranks} == {"0,1"}
    r = stack.cli("plan", "--task", "ti2v-5B", "--json")  # inventory read from the container
    plan = json.loads(r.stdout)["plans"][0]["plan"]
    assert plan["nproc"] == 3 and plan["gpu_names"] == ["NVIDIA H200"] * 3 and plan["host_ram_gb"] > 0


def test_i2v_image_is_staged_and_removed(stack, tmp_path):
    gpus(stack, f"1x80:9.0:{H100}")
    image = tmp_path / "my cat.jpg"
    image.write_bytes(b"\xff\xd8\xff fake jpeg")
    r = generate(stack, "--task", "i2v-A14B", "--image", str(image), "--prompt", "the cat blinks", "--steps", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    (call,) = calls(stack)
    staged = call["argv"][call["argv"].index("--image") + 1]
    assert re.fullmatch(r"/opt/outputs/\.staging/[0-9a-f]+/my_cat\.jpg", staged)
    video = max(videos(stack), key=lambda p: p.stat().st_mtime)
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["image"]["source"] == str(image) and side["guide_scale"] == [3.5, 3.5]
    assert leftovers(stack) == []


def write_wav(path: Path, seconds: float) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return path


TINY_MP4 = Path(__file__).parent / "standins" / "tiny.mp4"  # 8 frames, 64x48


def animate_folder(root: Path, replace: bool = False) -> Path:
    """What animate-prep writes: pose, face (and background, mask) videos of one length, the reference PNG."""
    root.mkdir(parents=True, exist_ok=True)
    for name in catalog.ANIMATE_SOURCE_FILES + (catalog.ANIMATE_REPLACE_FILES if replace else ()):
        if name.endswith(".mp4"):
            (root / name).write_bytes(TINY_MP4.read_bytes())
    (root / "src_ref.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x30" + b"\0" * 16)
    (root / "video.mp4").write_bytes(b"the driving video: never copied in")
    return root


def test_s2v_runs_every_clip_its_audio_needs(stack, tmp_path):
    """s2v-14B: image and audio staged, the clip frames as --infer_frames, one bar a clip followed
    to the end, the sidecar naming the inputs and the clips."""
    gpus(stack, f"1x80:9.0:{H100}")
    image, audio = tmp_path / "face.png", write_wav(tmp_path / "my talk.wav", 7.0)
    image.write_bytes(b"\x89PNG fake")
    r = generate(stack, "--task", "s2v-14B", "--image", str(image), "--audio", str(audio), "--prompt", "she speaks",
                 "--frame-num", "48", "--steps", "3", "--seed", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    (call,) = calls(stack)
    argv = call["argv"]
    assert re.fullmatch(r"/opt/outputs/\.staging/[0-9a-f]+/audio/my_talk\.wav", argv[argv.index("--audio") + 1])
    assert argv[argv.index("--infer_frames") + 1] == "48" and "--frame_num" not in argv
    assert argv[argv.index("--offload_model") + 1] == "True" and "--convert_model_dtype" in argv
    # 7 s of audio at 16 fps is 112 frames: three clips of 48 (WanS2V's own count)
    assert "denoising clip 3 of 3" in r.stdout and "3/3 steps" in r.stdout
    video = max(videos(stack), key=lambda p: p.stat().st_mtime)
    assert video.name.startswith("s2v-14B_1024x704_she-speaks_")
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["audio"]["source"] == str(audio) and side["image"]["source"] == str(image)
    assert (side["frames_per_clip"], side["clips_expected"], side["clips_run"], side["num_clip"]) == (48, 3, 3, None)
    assert side["negative_prompt"] == catalog.S2V_NEG_PROMPT and side["fps"] == 16 and side["guide_scale"] == 4.5
    assert side["speech_merged"] is True
    assert leftovers(stack) == []

    # Upstream's merge_video_audio logs its failure (ffmpeg missing) and exits 0 with a silent video:
    # the run fails, saying so, and the generated video stays published with its sidecar.
    r = generate(stack, "--task", "s2v-14B", "--image", str(image), "--audio", str(audio),
                 "--prompt", "she speaks @@nomerge", "--frame-num", "48", "--steps", "3", "--seed", "5")
    assert r.returncode == 1, r.stdout + r.stderr
    silent = max(videos(stack), key=lambda p: p.stat().st_mtime)
    assert silent != video and silent.name.startswith("s2v-14B_1024x704_she-speaks-nomerge_")
    assert "the speech was not merged into the video" in r.stderr and "'ffmpeg'" in r.stderr
    assert silent.name in r.stderr
    assert json.loads(silent.with_suffix(".json").read_text())["speech_merged"] is False


def test_animate_runs_the_prepared_folder_without_a_prompt(stack, tmp_path):
    """animate-14B: only the files Wan-Animate opens are staged, --refert_num is always passed (its
    default 77 fails upstream), no --prompt; the video is named after the folder."""
    gpus(stack, f"1x141:9.0:NVIDIA H200")
    folder = animate_folder(tmp_path / "dancer", replace=True)
    r = generate(stack, "--task", "animate-14B", "--src-root", str(folder), "--replace", "--frame-num", "5",
                 "--steps", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    (call,) = calls(stack)
    argv = call["argv"]
    staged = argv[argv.index("--src_root_path") + 1]
    assert re.fullmatch(r"/opt/outputs/\.staging/[0-9a-f]+/src_root/dancer", staged)
    assert argv[argv.index("--refert_num") + 1] == "1" and "--replace_flag" in argv and "--prompt" not in argv
    assert "denoising clip 2 of 2" in r.stdout  # 8 pose frames in clips of 5 overlapping by 1
    video = max(videos(stack), key=lambda p: p.stat().st_mtime)
    assert video.name.startswith("animate-14B_1280x720_dancer_")
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["prompt"] == catalog.ANIMATE_PROMPT and side["fps"] == 30 and (side["width"], side["height"]) == (64, 48)
    assert side["src_root"] == {"source": str(folder), "staged_as": staged}
    assert (side["refert_num"], side["replace"], side["clips_run"]) == (1, True, 2)
    assert leftovers(stack) == []


def test_animate_prep_publishes_a_whole_folder_that_generate_reads(stack, tmp_path):
    """Upstream's preprocessing (a stand-in with its flags) runs in the container on staged inputs;
    the folder appears complete under OUTPUT_DIR/animate-prep, a second one never replaces it, and
    animate-14B runs from it. A failed run publishes nothing and leaves nothing behind."""
    gpus(stack, f"1x80:9.0:{H100}")
    video, image = tmp_path / "dance.mp4", tmp_path / "me.png"
    video.write_bytes(TINY_MP4.read_bytes())
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 24)
    first = stack.cli("animate-prep", "--video", str(video), "--image", str(image), "--replace", "--json", timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    folder = Path(json.loads(first.stdout)["folder"])
    assert folder == stack.out / "animate-prep" / "dance"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*catalog.ANIMATE_SOURCE_FILES, *catalog.ANIMATE_REPLACE_FILES, "prep.json"])
    assert (folder / "src_ref.png").read_bytes() == image.read_bytes()
    argv = json.loads((folder / "prep.json").read_text())["argv"]
    assert argv[1] == "/workspace/wan2.2/wan/modules/animate/preprocess/preprocess_data.py"
    assert argv[argv.index("--resolution_area") + 1:argv.index("--resolution_area") + 3] == ["1280", "720"]
    assert "--replace_flag" in argv and argv[argv.index("--k") + 1] == "7"
    second = stack.cli("animate-prep", "--video", str(video), "--image", str(image), "--json", timeout=120)
    assert second.returncode == 0 and json.loads(second.stdout)["folder"].endswith("/animate-prep/dance-2")
    r = generate(stack, "--task", "animate-14B", "--src-root", str(folder), "--replace", "--steps", "2")
    assert r.returncode == 0, r.stdout + r.stderr

    broken = tmp_path / "standin-fail.mp4"
    broken.write_bytes(TINY_MP4.read_bytes())
    r = stack.cli("animate-prep", "--video", str(broken), "--image", str(image), timeout=120)
    assert r.returncode == 1 and "preprocess_data.py exited with code 1" in r.stderr, r.stdout + r.stderr
    short = tmp_path / "standin-short.mp4"
    short.write_bytes(TINY_MP4.read_bytes())
    r = stack.cli("animate-prep", "--video", str(short), "--image", str(image), timeout=120)
    assert r.returncode == 1 and "src_face.mp4: box" in r.stderr and "the folder is incomplete" in r.stderr, r.stderr
    assert sorted(p.name for p in (stack.out / "animate-prep").iterdir()) == ["dance", "dance-2"]
    assert leftovers(stack) == []


# --------------------------------------------------------------------------- outputs are never lost


@pytest.mark.parametrize("marker, message", [
    ("@@nosave", "save_video failed"),
    ("@@badsave", "runs past the end of the file"),
])
def test_exit_zero_without_a_good_video_is_a_failure(stack, marker, message):
    gpus(stack, f"1x80:9.0:{H100}")
    before = set(videos(stack))
    r = generate(stack, "--task", "ti2v-5B", "--prompt", f"fox {marker}", "--steps", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "exited 0 but the video is bad" in r.stderr and message in r.stderr
    assert set(videos(stack)) == before and leftovers(stack) == []


def test_failed_run_reports_the_cause(stack):
    gpus(stack, f"1x80:9.0:{H100}")
    r = generate(stack, "--task", "ti2v-5B", "--prompt", "fox @@fail", "--steps", "4")
    assert r.returncode == 1
    assert "RuntimeError: CUDA out of memory" in r.stderr.splitlines()[-1], r.stderr
    assert leftovers(stack) == []


def test_an_existing_file_is_never_overwritten(stack):
    gpus(stack, f"1x80:9.0:{H100}")
    prompt = "no overwrite please"
    now = datetime.now(timezone.utc)
    precious = []
    for second in range(-2, 60):  # every name this run could pick in the next minute
        stem = final_stem("ti2v-5B", "1280*704", prompt, now + timedelta(seconds=second))
        path = stack.out / f"{stem}.mp4"
        path.write_bytes(b"precious")
        precious.append(path)
    r = generate(stack, "--task", "ti2v-5B", "--prompt", prompt, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert all(p.read_bytes() == b"precious" for p in precious)
    made = [p for p in stack.out.glob("ti2v-5B_1280x704_no-overwrite-please_*-2.mp4")]
    assert len(made) == 1 and check_mp4(str(made[0])) is None and made[0].with_suffix(".json").exists()
    for p in precious:
        p.unlink()


# --------------------------------------------------------------------------- interrupt, lock, batch


def test_ctrl_c_stops_every_process_in_the_container(stack):
    gpus(stack, f"2x80:9.0:{H100}")
    proc = stack.cli.popen("generate", "--task", "ti2v-5B", "--prompt", "hang @@hang", "--steps", "10")
    try:
        wait_for(lambda: len(calls(stack)) == 2, what="both ranks to start")
        wait_for(lambda: len(processes(stack)) >= 3, what="torchrun and two ranks to be running")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130, proc.stderr.read()
    wait_for(lambda: processes(stack) == [], timeout=10, what="the container's processes to exit")
    assert leftovers(stack) == []
    assert not list(stack.out.glob("*hang*"))


def test_second_run_on_the_same_gpus_waits_or_fails_fast(stack):
    gpus(stack, f"1x80:9.0:{H100}")
    first = stack.cli.popen("generate", "--task", "ti2v-5B", "--prompt", "holder @@hang", "--steps", "4")
    patient = None
    try:
        wait_for(lambda: len(calls(stack)) == 1, what="the first run to start")
        busy = generate(stack, "--task", "ti2v-5B", "--prompt", "impatient", "--steps", "2", "--no-wait")
        assert busy.returncode == 3, busy.stdout + busy.stderr
        assert "busy with another generation" in busy.stderr
        patient = stack.cli.popen("generate", "--task", "ti2v-5B", "--prompt", "patient", "--steps", "2")
        said = read_until(patient.stdout, "busy with run")  # it waits for the GPU lock ...
        assert "waiting" in said[-1]
        assert patient.poll() is None and len(calls(stack)) == 1  # waiting, not running
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=30) == 130
        out, err = patient.communicate(timeout=60)
    finally:
        for p in (first, patient):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert patient.returncode == 0, err
    order = [c["argv"][c["argv"].index("--prompt") + 1] for c in calls(stack)]
    assert order == ["holder @@hang", "patient"]
    assert leftovers(stack) == []


def test_batch_keeps_going_and_summarises(stack, tmp_path):
    gpus(stack, f"1x80:9.0:{H100}")
    before = set(videos(stack))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "a plain text prompt\n"
        '{"prompt": "json line", "steps": 3, "seed": 77}\n'
        '{"prompt": "this one breaks @@fail"}\n'
        '{"prompt": "bad frames", "frame_num": 80}\n'
        "last one still runs\n"
    )
    r = generate(stack, "--task", "ti2v-5B", "--steps", "2", "--prompt-file", str(prompts), "--json")
    assert r.returncode == 1, r.stderr
    summary = json.loads(r.stdout)
    assert [row["status"] for row in summary["runs"]] == ["ok", "ok", "failed", "invalid", "ok"]
    assert summary["failed"] == 2 and "4n+1" in summary["runs"][3]["error"]
    assert "RuntimeError" in summary["runs"][2]["error"]
    new = sorted(set(videos(stack)) - before)
    assert len(new) == 3
    side = json.loads(Path(summary["runs"][1]["sidecar"]).read_text())
    assert (side["seed"], side["sample_steps"], side["prompt"]) == (77, 3, "json line")
    human = generate(stack, "--task", "ti2v-5B", "--steps", "2", "--prompt-file", str(prompts))
    assert human.returncode == 1 and "summary" in human.stdout and "invalid" in human.stdout
    assert leftovers(stack) == []


def test_bad_lines_are_skipped_by_number_and_do_not_fail_the_batch(stack, tmp_path):
    """A JSON line of the wrong types (a number for the prompt or the size, a fraction of a step or a
    seed, a boolean frame count) is skipped with its line number; the valid lines run; the batch
    fails only when a run does (issue 17, D7)."""
    gpus(stack, f"1x80:9.0:{H100}")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "first good line"}\n'
        '{"prompt": 123}\n'
        '{"prompt": "number size", "size": 832}\n'
        '{"prompt": "half step", "steps": 2.5}\n'
        '{"prompt": "half seed", "seed": 1.5}\n'
        '{"prompt": "bool frames", "frame_num": true}\n'
        "last good line\n"
    )
    r = generate(stack, "--task", "ti2v-5B", "--steps", "2", "--prompt-file", str(prompts), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads(r.stdout)["runs"]
    assert [row["status"] for row in rows] == ["ok"] + ["invalid"] * 5 + ["ok"]
    assert [row["error"] for row in rows[1:6]] == [
        "the prompt must be text, not 123", "--size must be text, not 832", "--steps must be a whole number, not 2.5",
        "--seed must be a whole number, not 1.5", "--frame-num must be a whole number, not True"]
    for n in range(2, 7):
        assert f"prompts.jsonl:{n}: skipped" in r.stderr
    assert [c["argv"][c["argv"].index("--prompt") + 1] for c in calls(stack)] == ["first good line", "last good line"]
    assert leftovers(stack) == []


def test_fp8_and_block_streaming_need_the_kits_bootstrap(stack):
    # the stand-in image runs generate.py as is (WAN22_BOOTSTRAP=0): nothing there could quantize or
    # stream, so asking for it is one line before anything runs, and `auto` keeps upstream's flags
    gpus(stack, "1x24:8.9:NVIDIA GeForce RTX 4090")
    for flag in (["--dtype", "fp8"], ["--offload", "blocks"]):
        r = generate(stack, "--task", "t2v-A14B", "--prompt", "a fox on a 4090", *flag)
        assert r.returncode == 2 and "need the kit's bootstrap" in r.stderr and calls(stack) == [], r.stderr


def test_plan_expecting_oom_needs_force(stack):
    gpus(stack, "1x16:8.9:NVIDIA RTX 4060 Ti 16GB")  # 720P A14B needs ~21 GB even with the blocks streamed
    r = generate(stack, "--task", "t2v-A14B", "--prompt", "too big")
    assert r.returncode == 2 and "pass --force" in r.stderr and calls(stack) == []
    gpus(stack, "")
    r = generate(stack, "--task", "ti2v-5B", "--prompt", "no gpu")
    assert r.returncode == 3 and "no GPU is visible in the container" in r.stderr
