"""s2v-14B on the resident server, end to end on CPU (the real server process, real HTTP, the
stand-in pipeline): the image and the speech uploaded as multipart files, as base64 in JSON and
through the `openai` SDK; checked at submit by the CLI's own readers (`wan22ctl.media`); every
clip the audio needs run, with the job's steps counted on across clips; the speech merged into
the published video; the sidecar naming each upload by sha256. `wan22ctl generate` sends s2v
requests there too. Animate-14B is refused with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import uuid
import wave
from pathlib import Path

import openai
import pytest

from tests.conftest import REPO, clean_environ, unique
from tests.test_generate import fake_checkpoints
from tests.test_server import Server, image_bytes, read_events
from tests.test_server_cli import wan22ctl

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks its Videos API so

POSE = (REPO / "tests" / "standins" / "tiny.mp4").read_bytes()


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(b"\0\1" * int(seconds * rate))
    return buf.getvalue()


TALK = wav_bytes(7.0)  # 7 s at 16 fps: three clips of 48 frames, two of 80 (WanS2V's own count)


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body as a browser sends it: text fields, then files."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_form(server: Server, fields: dict, files: dict):
    body, ctype = multipart(fields, files)
    return server.api("POST", "/v1/videos", raw=body, headers={"Content-Type": ctype})


FACE = ("face.png", image_bytes(64, 48, "PNG"), "image/png")


@pytest.fixture(scope="module")
def s2v(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("s2v"), task="s2v-14B", env={"FAKE_WAN_STEP_S": "0.05"},
               args=("--max-media-mb", "1")).start()
    yield s
    assert s.stop() == 0, s.logtext()


def test_a_failed_speech_merge_fails_the_job(tmp_path):
    """Upstream's merge_video_audio logs its failure (ffmpeg missing) and leaves the video silent:
    the job fails, saying why, instead of succeeding without speech."""
    s = Server(tmp_path, task="s2v-14B", env={"FAKE_WAN_MERGE_FAILS": "1"}).start()
    try:
        status, job, _ = post_form(s, {"prompt": "she speaks", "frame_num": "48", "sample_steps": "2"},
                                   {"input_reference": FACE, "audio": ("talk.wav", TALK, "audio/wav")})
        assert status == 201, job
        final = s.wait(job["id"])
        assert final["state"] == "failed", final
        message = final["error"]["message"]
        assert "the speech was not merged into the video" in message and "'ffmpeg'" in message, message
        assert final["output"] is None and not list(s.out.glob("*.mp4"))
    finally:
        assert s.stop() == 0, s.logtext()


def test_multipart_upload_runs_every_clip_and_merges_the_speech(s2v):
    status, job, _ = post_form(s2v, {"prompt": "she speaks", "frame_num": "48", "sample_steps": "3", "seed": "5",
                                     "start_from_ref": "true"},
                               {"input_reference": FACE, "audio": ("my talk.wav", TALK, "audio/wav"),
                                "pose_video": ("pose.mp4", POSE, "video/mp4")})
    assert status == 201, job
    # 3 clips of 48 frames (9 s), cut to the 7 s of speech when it is merged in
    assert (job["params"]["clips"], job["progress_detail"]["total"], job["seconds"]) == (3, 9, "7")
    assert not any(k.endswith("_path") for k in job["params"])  # where uploads lie is the server's business

    events = read_events(s2v.api, job["id"])
    assert events[-1][0] == "succeeded"
    running = [d["progress_detail"] for _, d in events if d["state"] == "running" and
               d["progress_detail"]["phase"] in ("denoising", "decoding")]
    steps = [p["step"] for p in running]
    assert steps == sorted(steps) and max(steps) > 6 and {p["total"] for p in running} == {9}  # on across clips
    assert {p["clip"] for p in running} == {1, 2, 3} and {p["clips"] for p in running} == {3}
    done = events[-1][1]
    assert done["progress_detail"]["step"] == 9 and done["progress"] == 100

    call = next(c for c in s2v.calls_made() if c["input_prompt"] == "she speaks")
    assert (call["clips"], call["infer_frames"], call["sampling_steps"], call["init_first_frame"]) == (3, 48, 3, True)
    assert (call["shift"], call["guide_scale"], call["num_repeat"], call["seed"]) == (3.0, 4.5, 3, 5)
    assert call["audio_path"].endswith(".wav") and call["pose_video"].endswith(".mp4") and call["image"].endswith(".png")
    video = Path(done["output"]).read_bytes()
    assert video[4:8] == b"ftyp" and video.endswith(TALK)  # the speech merged in (the stand-in's free box)
    assert Path(done["output"]).name.startswith("s2v-14B_1024x704_she-speaks_")

    side = json.loads(Path(done["sidecar"]).read_text())
    for name, data in (("audio", TALK), ("pose_video", POSE), ("image", FACE[1])):
        assert side[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert side[name]["staged_as"].startswith(str(s2v.out) + "/")  # never a path outside the outputs
    assert (side["frames_per_clip"], side["clips_expected"], side["clips_run"], side["num_clip"]) == (48, 3, 3, None)
    assert side["start_from_ref"] is True and side["tts_text"] is None and side["fps"] == 16
    from wan22ctl.agent.launcher import sidecar_data
    from wan22ctl.agent.progress import ProgressTracker
    from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory

    request = build_request("s2v-14B", "p", image="face.png", audio="talk.wav", seed=1, file_exists=lambda _: True,
                            probe_inputs=False)
    plan = plan_launch(request, synthetic_inventory(1, 80), run_id="r")
    generate_keys = set(sidecar_data(plan, ProgressTracker(), 0, image_digest=None, source_image=None, started="",
                                     video=done["output"], total_s=1.0))
    assert generate_keys <= set(side), generate_keys - set(side)  # the same sidecar as generate's

    # the upload is kept once by hash, and removed with the last job that used it
    again = s2v.api("POST", "/v1/videos", {"prompt": "again", "sample_steps": 1, "image": base64.b64encode(FACE[1]).decode(),
                                            "audio": base64.b64encode(TALK).decode()})[1]
    assert s2v.wait(again["id"])["state"] == "succeeded"
    staged = Path(side["audio"]["staged_as"])
    assert s2v.api("DELETE", f"/v1/videos/{job['id']}")[0] == 200 and staged.is_file()
    assert s2v.api("DELETE", f"/v1/videos/{again['id']}")[0] == 200 and not staged.exists()


def test_json_data_url_and_a_clip_cap(s2v):
    body = {"prompt": "one clip only", "sample_steps": 2, "num_clip": 1,
            "image": "data:image/png;base64," + base64.b64encode(FACE[1]).decode(),
            "audio": "data:audio/wav;base64," + base64.b64encode(TALK).decode()}
    status, job, _ = s2v.api("POST", "/v1/videos", body)
    assert status == 201 and job["params"]["clips"] == 1 and job["params"]["frame_num"] == 80, job
    assert job["seconds"] == "5"  # one clip of 80 frames at 16 fps
    assert s2v.wait(job["id"])["progress_detail"]["step"] == 2
    call = next(c for c in s2v.calls_made() if c["input_prompt"] == "one clip only")
    assert (call["num_repeat"], call["clips"], call["infer_frames"]) == (1, 1, 80)


def test_openai_sdk_sends_the_image_and_the_speech(s2v):
    c = openai.OpenAI(base_url=s2v.api.base + "/v1", api_key="unused", max_retries=0)
    video = c.videos.create(prompt="through the sdk", model="s2v-14B", input_reference=FACE,
                            extra_body={"audio": base64.b64encode(TALK).decode(), "sample_steps": 1})
    assert video.model_extra["params"]["clips"] == 2 and video.seconds == "7"
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        c.videos.create(prompt="x", seconds="4", input_reference=FACE,
                        extra_body={"audio": base64.b64encode(TALK).decode()})
    assert refused.value.body["param"] == "seconds" and "lasts as long as its audio" in refused.value.body["message"]
    assert s2v.wait(video.id)["state"] == "succeeded"


TRUNCATED = TALK[:44]


@pytest.mark.parametrize("fields, files, status, field, text", [
    ({}, {"input_reference": FACE}, 422, "audio", "s2v-14B needs --audio PATH or --tts-text TEXT"),
    ({}, {"audio": ("talk.wav", TALK, "audio/wav")}, 422, "image", "s2v-14B needs --image PATH"),
    ({}, {"input_reference": FACE, "audio": ("notes.txt", b"just some text", "text/plain")}, 422, "audio",
     "not audio that can be decoded (WAV, FLAC, MP3, Ogg or M4A, checked by its header)"),
    ({}, {"input_reference": FACE, "audio": ("cut.wav", TRUNCATED, "audio/wav")}, 422, "audio",
     "WAV without audio data"),
    ({}, {"input_reference": FACE, "audio": ("empty.wav", b"", "audio/wav")}, 422, "audio", "the file is empty"),
    ({}, {"input_reference": FACE, "audio": ("long.wav", wav_bytes(40), "audio/wav")}, 422, "audio",
     "larger than 1048576 bytes"),
    ({}, {"input_reference": FACE, "audio": ("talk.wav", TALK, "audio/wav"),
          "pose_video": ("pose.txt", b"nope", "text/plain")}, 422, "pose_video",
     "not a video (MP4, MOV, MKV/WebM or AVI, checked by its header)"),
    ({"num_clip": "two"}, {"input_reference": FACE, "audio": ("talk.wav", TALK, "audio/wav")}, 422, "num_clip",
     "must be an integer"),
    ({"start_from_ref": "maybe"}, {"input_reference": FACE, "audio": ("talk.wav", TALK, "audio/wav")}, 422,
     "start_from_ref", "must be true or false"),
    ({"frame_num": "81"}, {"input_reference": FACE, "audio": ("talk.wav", TALK, "audio/wav")}, 422, "frame_num",
     "not a multiple of 4"),
    ({"tts_text": "hello"}, {"input_reference": FACE}, 400, "tts_text",
     "the resident server does not synthesize speech"),
], ids=["no audio", "no image", "text as audio", "cut wav", "empty", "too large", "bad pose video", "num_clip text",
        "start_from_ref text", "frames", "tts"])
def test_bad_uploads_are_refused_at_submit(s2v, fields, files, status, field, text):
    got, err, _ = post_form(s2v, {"prompt": "refused", **fields}, files)
    assert (got, err["error"]["param"]) == (status, field), err
    assert text in err["error"]["message"], err
    assert s2v.api("GET", "/healthz")[0] == 200


def test_generate_sends_s2v_to_the_server_and_tts_is_refused_in_one_line(s2v, tmp_path):
    fake_checkpoints(tmp_path / "ckpt")  # `generate` checks them (CosyVoice's too) before it submits
    gen_env = {"CHECKPOINT_DIR": str(tmp_path / "ckpt"), "CONTAINER_NAME": unique("wan22-no-such")}
    image, audio = tmp_path / "face.png", tmp_path / "talk.wav"
    image.write_bytes(FACE[1])
    audio.write_bytes(TALK)
    r = wan22ctl(s2v, "generate", "--task", "s2v-14B", "--prompt", "from the cli", "--image", str(image),
                 "--audio", str(audio), "--steps", "2", "--frame-num", "48", "--num-clip", "2", "--json",
                 extra_env=gen_env)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["runs"]
    assert row["status"] == "ok" and row["job"].startswith("video_")
    call = next(c for c in s2v.calls_made() if c["input_prompt"] == "from the cli")
    assert (call["num_repeat"], call["clips"], call["infer_frames"]) == (2, 2, 48)

    r = wan22ctl(s2v, "generate", "--task", "s2v-14B", "--prompt", "spoken", "--image", str(image),
                 "--tts-text", "hello there", "--tts-prompt-audio", str(audio), extra_env=gen_env)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "the resident server does not synthesize speech" in r.stderr, r.stderr


def test_animate_is_refused_with_why_and_what_to_run(tmp_path):
    server = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "server", "--task", "animate-14B",
                             "--output-dir", str(tmp_path)], capture_output=True, text=True, env=clean_environ(),
                            cwd=REPO, timeout=60)
    setting = subprocess.run([sys.executable, "-m", "wan22ctl", "plan", "--task", "t2v-A14B", "--gpu-count", "1"],
                             capture_output=True, text=True, env=clean_environ() | {"SERVER_TASK": "animate-14B"},
                             cwd=tmp_path, timeout=60)
    for r in (server, setting):
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "the server does not run animate-14B: its input is a folder that `wan22ctl animate-prep` makes" in r.stderr
        assert "then `wan22ctl generate --task animate-14B --src-root FOLDER`" in r.stderr
