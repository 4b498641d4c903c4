"""Bad input is refused before anything slow, the same way by every entry point.

`plan`, `generate --dry-run` and `generate` run as a user runs them (the real CLI, no Docker
daemon behind DOCKER_HOST): each must exit 2 with the same single line, before Docker is
touched. The resident server's request check (`agent.server.requests.validate`, what `POST
/v1/videos` answers with a 422) must give the same reason where the input applies to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cli_without_docker
from wan22ctl.agent.server.requests import RequestInvalid, validate

HERE = str(Path(__file__).resolve())
INPUTS = Path(__file__).resolve().parent / "inputs"  # media made once for this table (see _make_inputs)
WAV, TRUNCATED_WAV = str(INPUTS / "talk.wav"), str(INPUTS / "cut.wav")
ANIMATE, ANIMATE_UNEVEN = str(INPUTS / "process_results"), str(INPUTS / "uneven")
ENTRY_POINTS = (["plan"], ["generate", "--dry-run"], ["generate"])
S2V_UPLOADS = {"image": "aGk=", "audio": "aGk="}  # their content is judged after the request's values

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
    (["--task", "t2v-A14B", "--solver", "heun"], ("t2v-A14B", {"sample_solver": "heun"}),
     "unknown solver 'heun'; choose one of unipc, dpm++, euler"),
    (["--task", "t2v-A14B", "--prompt", "   "], ("t2v-A14B", {"prompt": "   "}),
     "a prompt is required (--prompt or --prompt-file); upstream would silently use its example prompt"),
    (["--task", "i2v-A14B"], ("i2v-A14B", {}), "i2v-A14B needs --image PATH (upstream would silently use its example image)"),
    (["--task", "t2v-A14B", "--image", HERE], ("t2v-A14B", {"image": "aGk="}),
     "t2v-A14B takes no image; use i2v-A14B or ti2v-5B for image-to-video"),
    (["--task", "i2v-A14B", "--image", "/nonexistent/x.jpg"], None, "image /nonexistent/x.jpg does not exist or is not a file"),
    (["--task", "t2v-A14B", "--seed", "-5"], None, "--seed -5 must be between 0 and 2**63-1"),
    (["--task", "t2v-A14B", "--offload", "maybe"], None, "--offload 'maybe'; choose auto, on, off or blocks"),
    (["--task", "t2v-A14B", "--gpus", "x"], None, "--gpus 'x': must be all, a count (e.g. 2) or indices (e.g. 0,2 or device=1)"),
    (["--task", "wan"], None, "unknown task 'wan'; choose one of t2v-A14B, i2v-A14B, ti2v-5B, s2v-14B, animate-14B"),
    # s2v-14B: image and speech both required (an audio file, or text CosyVoice speaks in a recorded
    # voice), the audio must decode, frames a clip are a multiple of 4; the server gets uploads
    (["--task", "s2v-14B", "--audio", WAV], ("s2v-14B", {"audio": "aGk="}),
     "s2v-14B needs --image PATH (upstream would silently use its example image)"),
    (["--task", "s2v-14B", "--image", HERE], ("s2v-14B", {"image": "aGk="}),
     "s2v-14B needs --audio PATH or --tts-text TEXT (upstream would silently use its example talk.wav)"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", "/nonexistent/talk.wav"], None,
     "audio /nonexistent/talk.wav: does not exist"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", HERE], None,
     f"audio {HERE}: not audio that can be decoded (WAV, FLAC, MP3, Ogg or M4A, checked by its header)"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", TRUNCATED_WAV], None, f"audio {TRUNCATED_WAV}: WAV without audio data"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--frame-num", "81"],
     ("s2v-14B", {**S2V_UPLOADS, "frame_num": 81}),
     "--frame-num 81 is not a multiple of 4 for s2v-14B (frames a clip, generate.py's --infer_frames); use 80 or 84"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--num-clip", "0"], ("s2v-14B", {**S2V_UPLOADS, "num_clip": 0}),
     "--num-clip 0 must be at least 1"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--pose-video", HERE], None,
     f"pose video {HERE}: not a video (MP4, MOV, MKV/WebM or AVI, checked by its header)"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--size", "1280*960"],
     ("s2v-14B", {**S2V_UPLOADS, "size": "1280*960"}),
     "size 1280*960 is not supported by s2v-14B; choose one of 720*1280, 1280*720, 480*832, 832*480, 1024*704, "
     "704*1024, 704*1280, 1280*704"),
    (["--task", "t2v-A14B", "--audio", WAV], ("t2v-A14B", {"audio": "aGk="}), "--audio is for s2v-14B, not t2v-A14B"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--tts-text", "hello", "--tts-prompt-audio", WAV], None,
     "give --audio or --tts-text, not both (--tts-text has CosyVoice speak the text)"),
    (["--task", "s2v-14B", "--image", HERE, "--tts-text", "hello"], None,
     "--tts-text needs --tts-prompt-audio PATH, a recording of the voice to speak in (upstream would silently use "
     "its example zero_shot_prompt.wav)"),
    (["--task", "s2v-14B", "--image", HERE, "--tts-text", "  ", "--tts-prompt-audio", WAV], None,
     "--tts-text is empty; give the words to speak"),
    (["--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--tts-prompt-audio", WAV], None,
     "--tts-prompt-audio goes with --tts-text (the words CosyVoice speaks)"),
    (["--task", "s2v-14B", "--image", HERE, "--tts-text", "hello", "--tts-prompt-audio", HERE], None,
     f"TTS prompt audio {HERE}: not audio that can be decoded (WAV, FLAC, MP3, Ogg or M4A, checked by its header)"),
    (["--task", "t2v-A14B", "--tts-text", "hello"], None, "--tts-text is for s2v-14B, not t2v-A14B"),
    # animate-14B: the prepared folder, its files and lengths, refert 1 or 5, no prompt, no size
    (["--task", "animate-14B"], None,
     "animate-14B needs --src-root FOLDER: what `wan22ctl animate-prep` wrote (src_pose.mp4, src_face.mp4, src_ref.png)"),
    (["--task", "animate-14B", "--src-root", ANIMATE, "--refert-num", "77"], None,
     "--refert-num 77 must be 1 or 5 (Wan-Animate asserts it after the 14B model has loaded; generate.py's own "
     "default, 77, fails there)"),
    (["--task", "animate-14B", "--src-root", "/nonexistent/out"], None,
     "--src-root /nonexistent/out is not a folder; make it with `wan22ctl animate-prep`"),
    (["--task", "animate-14B", "--src-root", ANIMATE, "--replace"], None,
     f"--src-root {ANIMATE} lacks src_bg.mp4, src_mask.mp4 for replacement mode (run animate-prep with --replace)"),
    (["--task", "animate-14B", "--src-root", ANIMATE_UNEVEN], None,
     f"--src-root {ANIMATE_UNEVEN}: the videos differ in length (src_pose.mp4 8, src_face.mp4 4 frames); "
     "run animate-prep again"),
    (["--task", "animate-14B", "--src-root", ANIMATE, "--prompt", "a dancer"], None,
     "animate-14B takes no prompt: generate.py never passes it on (Wan-Animate uses its own); leave --prompt out"),
    (["--task", "animate-14B", "--src-root", ANIMATE, "--size", "1280*720"], None,
     "animate-14B takes its size from the preprocessed folder; set it with `wan22ctl animate-prep --size`, not --size"),
    (["--task", "animate-14B", "--src-root", ANIMATE, "--frame-num", "76"], None,
     "--frame-num 76 is not of the form 4n+1; use 73 or 77"),
    (["--task", "ti2v-5B", "--preset", "lightning"], ("ti2v-5B", {"preset": "lightning"}),
     "--preset lightning has no distilled LoRA for ti2v-5B in the catalog (it has: t2v-A14B, i2v-A14B); run ti2v-5B without it"),
    (["--task", "t2v-A14B", "--preset", "turbo"], None, "unknown preset 'turbo'; choose one of lightning"),
    (["--task", "t2v-A14B", "--lora", "nowhere.safetensors"], None,
     "LoRA nowhere.safetensors: no such file, and not a catalog LoRA (lightning-t2v, lightning-i2v)"),
    (["--task", "t2v-A14B", "--prompt", "x", "--prompt-file", "p.txt"], None, "give --prompt or --prompt-file, not both"),
    (["--task", "t2v-A14B", "--prompt-file", "missing.txt"], None, "prompt file missing.txt does not exist"),
]


def _mp4_with_frames(frames: int) -> bytes:
    """tests/standins/tiny.mp4 (8 frames) with its video track's sample count set to `frames`."""
    data = bytearray((Path(__file__).parent / "standins" / "tiny.mp4").read_bytes())
    at = data.index(b"stsz")
    data[at + 12:at + 16] = frames.to_bytes(4, "big")
    return bytes(data)


@pytest.fixture(scope="module", autouse=True)
def _make_inputs(tmp_path_factory):
    """The table's media, under tests/inputs/ (ignored by git): a 3 s WAV, one cut short, a prepared
    animate folder and one whose face video is shorter than its pose video."""
    import shutil
    import wave

    shutil.rmtree(INPUTS, ignore_errors=True)
    INPUTS.mkdir()
    with wave.open(WAV, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * 48000)
    Path(TRUNCATED_WAV).write_bytes(Path(WAV).read_bytes()[:44])
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x40\0\0\0\x30" + b"\0" * 16
    for folder, face in ((ANIMATE, 8), (ANIMATE_UNEVEN, 4)):
        Path(folder).mkdir()
        Path(folder, "src_pose.mp4").write_bytes(_mp4_with_frames(8))
        Path(folder, "src_face.mp4").write_bytes(_mp4_with_frames(face))
        Path(folder, "src_ref.png").write_bytes(png)
    yield
    shutil.rmtree(INPUTS, ignore_errors=True)


@pytest.mark.parametrize("args, server, message", BAD_INPUTS, ids=[" ".join(row[0]) for row in BAD_INPUTS])
def test_every_entry_point_refuses_the_same_input_the_same_way(tmp_path, args, server, message):
    if args[:2] == ["--task", "animate-14B"]:
        pass  # it takes no prompt
    elif "--prompt" not in args and "--prompt-file" not in args:
        args = [*args, "--prompt", "a red fox"]
    for entry in ENTRY_POINTS:
        r = cli_without_docker(tmp_path, *entry, *args)
        assert r.returncode == 2, (entry, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [f"error: {message}"], (entry, r.stderr)
        assert r.stdout == "", (entry, r.stdout)
    if server is not None:
        task, body = server
        with pytest.raises(RequestInvalid) as refused:
            validate({"prompt": "a red fox", **body}, task)
        assert refused.value.reason == message


# --------------------------------------------------------------------------- prompt files and settings files


def _lines(tmp_path, text: bytes | str, name: str = "prompts.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_generate_names_the_download_that_completes_the_checkpoints(tmp_path):
    r = cli_without_docker(tmp_path, "generate", "--task", "i2v-A14B", "--prompt", "x", "--image", HERE)
    assert r.returncode == 2 and r.stderr.strip().endswith("run: wan22ctl download i2v"), r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_tts_names_the_cosyvoice_download(tmp_path):
    """--tts-text needs CosyVoice 2 under CHECKPOINT_DIR (upstream would fetch it from ModelScope mid-run)."""
    r = cli_without_docker(tmp_path, "generate", "--task", "s2v-14B", "--prompt", "x", "--image", HERE,
                           "--tts-text", "hello there", "--tts-prompt-audio", WAV)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"checkpoints for --tts-text are absent in {tmp_path / 'ckpt' / 'CosyVoice2-0.5B'}" in r.stderr
    assert r.stderr.strip().endswith("run: wan22ctl download cosyvoice"), r.stderr


def test_plan_without_docker(tmp_path):
    r = cli_without_docker(tmp_path, "plan", "--task", "t2v-A14B", "--gpu-count", "8", "--gpu-mem-gb", "80", "--host-ram-gb",
             "2000", "--json", "--seed", "5")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    p = data["plans"][0]["plan"]
    assert p["nproc"] == 8 and p["argv"][:3] == ["torchrun", "--standalone", "--nproc_per_node=8"]
    assert "--prompt" in p["argv"] and p["request"]["seed"] == 5
    assert data["checkpoints"] and "wan22ctl download t2v" in data["checkpoints"][0]
    human = cli_without_docker(tmp_path, "plan", "--task", "ti2v-5B", "--gpu-count", "1", "--gpu-mem-gb", "24")
    assert human.returncode == 0 and "--t5_cpu" in human.stdout and "README command for 24 GB" in human.stdout
    dry = cli_without_docker(tmp_path, "generate", "--task", "ti2v-5B", "--prompt", "fox", "--gpu-count", "2", "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["plans"][0]["plan"]["nproc"] == 2


def test_a_batch_skips_lines_of_the_wrong_json_types_with_their_numbers(tmp_path):
    """Issue 17, D7: a number for the prompt or the size aborted the whole batch (an unexpected
    exception, exit 1); fractions of steps or seeds and a boolean frame count reached the argv."""
    prompts = _lines(tmp_path, '{"prompt": "good"}\n{"prompt": 123}\n{"prompt": "x", "size": 832}\n'
                               '{"prompt": "x", "steps": 2.5}\n{"prompt": "x", "seed": 1.5}\n'
                               '{"prompt": "x", "frame_num": true}\n{"prompt": "also good", "seed": 3}\n')
    for entry in ENTRY_POINTS[:2]:
        r = cli_without_docker(tmp_path, *entry, "--task", "t2v-A14B", "--gpu-count", "1", "--prompt-file", str(prompts), "--json")
        assert r.returncode == 0, (entry, r.stderr)
        plans = json.loads(r.stdout)["plans"]
        assert [p["label"] for p in plans] == [f"prompts.jsonl:{n}" for n in range(1, 8)]
        assert [p.get("error") for p in plans[1:6]] == [
            "the prompt must be text, not 123", "--size must be text, not 832", "--steps must be a whole number, not 2.5",
            "--seed must be a whole number, not 1.5", "--frame-num must be a whole number, not True"]
        argv = plans[6]["plan"]["argv"]
        assert argv[argv.index("--base_seed") + 1] == "3" and argv[argv.index("--sample_steps") + 1] == "40"


def test_a_batch_without_one_valid_line_is_refused_alike_everywhere(tmp_path):
    """Issue 17, D10: `plan` exited 0 when every line was invalid, `generate` 2."""
    prompts = _lines(tmp_path, '{"prompt": "x", "frame_num": 80}\n{"prompt": "y", "stpes": 3}\n')
    seen = set()
    for entry in ENTRY_POINTS:
        r = cli_without_docker(tmp_path, *entry, "--task", "t2v-A14B", "--gpu-count", "1", "--prompt-file", str(prompts))
        assert r.returncode == 2, (entry, r.stdout, r.stderr)
        seen.add(r.stderr.splitlines()[-1])
        assert "prompts.jsonl:1: skipped" in r.stderr or "prompts.jsonl:1" in r.stdout, (entry, r.stdout, r.stderr)
    assert seen == {"error: no valid line in the prompt file"}


UNREADABLE = "/proc/self/mem"  # reading it fails even for root (EIO)


@pytest.mark.parametrize("make, says", [
    (lambda d: _lines(d, b'{"prompt": "caf\xe9"}\n'), "is not UTF-8 text (byte 0xe9 on line 1)"),
    (lambda d: d, "is a folder, not a file"),
    (lambda d: Path(UNREADABLE), "cannot read prompt file /proc/self/mem: "),
], ids=["bad-utf8", "folder", "unreadable"])
def test_an_unusable_prompt_file_is_one_line_naming_it(tmp_path, make, says):
    """Issue 17, D11: bad UTF-8 or an unreadable prompt file gave "unexpected ..." exit 1."""
    path = make(tmp_path)
    for entry in ENTRY_POINTS:
        r = cli_without_docker(tmp_path, *entry, "--task", "t2v-A14B", "--prompt-file", str(path))
        assert r.returncode == 2, (entry, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and str(path) in r.stderr and says in r.stderr, (entry, r.stderr)


@pytest.mark.parametrize("make, args, says", [
    (lambda d: _lines(d, b"HF_TOKEN=\xff\n", ".env"), [], "settings file .env is not UTF-8 text (byte 0xff on line 1)"),
    (lambda d: (d / ".env").mkdir(), [], ".env is a folder, not a settings file"),
    (lambda d: None, ["--env-file", UNREADABLE], f"cannot read settings file {UNREADABLE}: "),
    (lambda d: None, ["--env-file", "missing.env"], "--env-file missing.env does not exist"),
    (lambda d: (d / "conf").mkdir(), ["--env-file", "conf"], "--env-file conf is a folder, not a settings file"),
], ids=["bad-utf8", "dot-env-folder", "unreadable", "missing-flag", "folder-flag"])
def test_an_unusable_settings_file_is_one_line_naming_it(tmp_path, make, args, says):
    """Issue 17, D11: a non-UTF-8 or unreadable .env gave "unexpected ..." exit 1, a folder named .env was
    silently ignored, and --env-file errors named WAN22CTL_ENV_FILE."""
    make(tmp_path)
    r = cli_without_docker(tmp_path, *args, "config")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines()[0] == f"error: {says}" or r.stderr.startswith(f"error: {says}"), r.stderr
    assert "unexpected" not in r.stderr and "WAN22CTL_ENV_FILE" not in r.stderr


@pytest.mark.parametrize("ref, parsed", [
    ("localhost:5000/img", ("localhost:5000/img", "latest")),
    ("localhost:5000/team/img:0.1", ("localhost:5000/team/img", "0.1")),
    ("ghcr.io/owner/img:v1", ("ghcr.io/owner/img", "v1")),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/wan22:1", ("123456789012.dkr.ecr.us-east-1.amazonaws.com/wan22", "1")),
    ("user/repo", ("user/repo", "latest")),
])
def test_image_references_are_read_as_docker_reads_them(ref, parsed):
    """Issue 17, D12: a registry host with a port is no tag."""
    from wan22ctl.plan.image import parse_reference

    assert parse_reference(ref) == parsed


def test_user_text_reaches_the_terminal_inert(tmp_path):
    """Issue 17, D13: prompts, prompt-file errors and error lines are shown as typed: no rich markup
    is interpreted and control characters are escaped, in plans, batch lines and error lines."""
    prompt = "[bold red]ALARM[/bold red] \x1b]0;pwned\x07\x1b[2J"
    r = cli_without_docker(tmp_path, "plan", "--task", "t2v-A14B", "--gpu-count", "1", "--prompt", prompt)
    assert r.returncode == 0, r.stderr
    assert "[bold red]ALARM[/bold red]" in r.stdout and "\\x1b]0;pwned\\x07\\x1b[2J" in r.stdout
    prompts = _lines(tmp_path, '{"prompt": "ok"}\n{"prompt": "[blink]x[/blink]", "size": "[red]9*9\\u001b[2J"}\n')
    r = cli_without_docker(tmp_path, "generate", "--dry-run", "--task", "t2v-A14B", "--gpu-count", "1", "--prompt-file", str(prompts))
    assert r.returncode == 0, r.stderr
    assert "size [red]9*9\\x1b[2j is not supported" in r.stdout  # sizes are read in lower case
    r = cli_without_docker(tmp_path, "plan", "--task", "i2v-A14B", "--image", "/nowhere/\x1b[2J[red]x.jpg", "--prompt", "x")
    assert r.returncode == 2 and r.stderr == "error: image /nowhere/\\x1b[2J[red]x.jpg does not exist or is not a file\n"
    for output in (r.stdout, r.stderr):
        assert "\x1b" not in output and "\x07" not in output


def test_s2v_and_animate_plan_without_docker(tmp_path):
    """The clip counts come from the inputs themselves, as upstream counts them: 3 s of audio in
    48-frame clips at 16 fps is 2 (WanS2V's int(...) + 1); 8 pose frames in 5-frame clips
    overlapping by 1 are 2."""
    r = cli_without_docker(tmp_path, "plan", "--task", "s2v-14B", "--image", HERE, "--audio", WAV, "--prompt", "hi",
             "--frame-num", "48", "--gpu-count", "1", "--gpu-mem-gb", "80", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["plans"][0]["plan"]
    assert p["request"]["clips"] == 2 and p["offload_model"] and "--infer_frames" in p["argv"]
    r = cli_without_docker(tmp_path, "plan", "--task", "animate-14B", "--src-root", ANIMATE, "--frame-num", "5", "--gpu-count", "1",
             "--gpu-mem-gb", "141")
    assert r.returncode == 0, r.stderr
    assert "animate-14B 1280*720 5 frames a clip, 2 clip(s)" in r.stdout and "--prompt" not in r.stdout
    assert "wan22ctl download animate" in r.stdout + r.stderr
