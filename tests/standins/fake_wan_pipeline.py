"""Stand-in for the `wan` package's pipeline surface, for CPU tests of the resident server.

It offers what the server takes from `wan`: `WanT2V`, `WanI2V`, `WanTI2V`, `WanS2V` with
upstream's constructor and `generate()` signatures (commit 42bf4cf), `WAN_CONFIGS`,
`SIZE_CONFIGS`, `MAX_AREA_CONFIGS`, `save_video` and `merge_video_audio`. Like upstream, each
sampling loop iterates `tqdm(timesteps)` through a module-level `tqdm`, so the server's
progress/cancel hook (which replaces that name in the pipeline's module) is exercised exactly as
it is on real Wan2.2. WanS2V runs that loop once per clip, as many clips as its WAV audio needs
(upstream's count), and opens its image, audio and pose video where upstream reads them.

Behaviour knobs (environment, read at call time):
  FAKE_WAN_STEP_S      seconds slept per denoising step (default 0.02)
  FAKE_WAN_LOAD_S      seconds slept in the constructor, to see /readyz answer 503 (default 0)
  FAKE_WAN_FAIL_ON     a prompt containing this text raises RuntimeError mid-run (default "FAIL")
  FAKE_WAN_SAVE_NOTHING  save_video writes nothing and raises nothing (as upstream's does on errors)
  FAKE_WAN_CALLS_LOG   a file that gets one JSON line per generate() call: its arguments, rank,
                       steps done and how it ended ("ok" or the exception's name)
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace


TINY_MP4 = Path(__file__).with_name("tiny.mp4")


def tqdm(iterable, *args, **kwargs):
    """Upstream calls `tqdm(timesteps)`; the stand-in draws no bar."""
    return iterable


def _config(name, steps, shift, guide, fps, frames, boundary=None):
    return SimpleNamespace(
        __name__=f"Config: {name}", num_train_timesteps=1000, boundary=boundary, sample_steps=steps,
        sample_shift=shift, sample_guide_scale=guide, sample_fps=fps, frame_num=frames,
        sample_neg_prompt="stand-in negative prompt", num_heads=40 if boundary else 24,
    )


WAN_CONFIGS = {
    "t2v-A14B": _config("t2v-A14B", 40, 12.0, (3.0, 4.0), 16, 81, 0.875),
    "i2v-A14B": _config("i2v-A14B", 40, 5.0, (3.5, 3.5), 16, 81, 0.900),
    "ti2v-5B": _config("ti2v-5B", 50, 5.0, 5.0, 24, 121),
    "s2v-14B": _config("s2v-14B", 40, 3.0, 4.5, 16, 81),
}
SIZE_CONFIGS = {
    "720*1280": (720, 1280), "1280*720": (1280, 720), "480*832": (480, 832), "832*480": (832, 480),
    "704*1280": (704, 1280), "1280*704": (1280, 704), "1024*704": (1024, 704), "704*1024": (704, 1024),
}
MAX_AREA_CONFIGS = {k: w * h for k, (w, h) in SIZE_CONFIGS.items()}


class _FakeVideo:
    """What generate() returns on rank 0: enough to write a small file and check the call."""

    def __init__(self, call: dict):
        self.call = call

    def __getitem__(self, index):
        # The server saves `video[None]` as upstream's generate.py does with a tensor.
        return self


class _FakeImage:
    """What `load_image` returns: the server hands it to WanI2V/WanTI2V as upstream hands a PIL image."""

    def __init__(self, path: str):
        self.path = path
        self.size = (0, 0)


def load_image(path: str):
    """The stand-in's replacement for `PIL.Image.open(path).convert("RGB")` (no Pillow in the test venv)."""
    return _FakeImage(path)


class _Base:
    moe = True

    def __init__(self, config, checkpoint_dir, device_id=0, rank=0, t5_fsdp=False, dit_fsdp=False,
                 use_sp=False, t5_cpu=False, init_on_cpu=True, convert_model_dtype=False):
        if not os.path.isdir(checkpoint_dir):
            raise FileNotFoundError(f"checkpoint_dir {checkpoint_dir} does not exist")
        time.sleep(float(os.environ.get("FAKE_WAN_LOAD_S", "0")))
        self.config = config
        self.rank = rank
        self.device_id = device_id
        self.num_train_timesteps = config.num_train_timesteps
        self.boundary = config.boundary
        self.sample_neg_prompt = config.sample_neg_prompt

    def _sample(self, call: dict, clips: int = 1):
        """The denoising loop, once per clip: the same shape as upstream's (tqdm over timesteps, one step each)."""
        if call["seed"] < 0:
            call["seed"] = random.randint(0, sys.maxsize)
        steps = call["sampling_steps"]
        timesteps = [1000.0 * (1 - i / steps) for i in range(steps)]
        step_s = float(os.environ.get("FAKE_WAN_STEP_S", "0.02"))
        fail_on = os.environ.get("FAKE_WAN_FAIL_ON", "FAIL")
        done, ended = 0, "ok"
        try:
            for _clip in range(clips):
                for i, _t in enumerate(tqdm(timesteps)):
                    time.sleep(step_s)
                    if fail_on and fail_on in call["input_prompt"] and i == steps // 2:
                        raise RuntimeError("stand-in failure requested by the prompt")
                    done += 1
        except BaseException as exc:
            ended = type(exc).__name__
            raise
        finally:
            log = os.environ.get("FAKE_WAN_CALLS_LOG")
            if log:
                line = {k: v for k, v in call.items() if k != "img"} | {
                    "image": getattr(call.get("img"), "path", call.get("ref_image_path")), "rank": self.rank,
                    "steps_done": done, "clips": clips, "ended": ended, "pid": os.getpid()}
                with open(log, "a") as f:
                    f.write(json.dumps(line, default=str) + "\n")
        return _FakeVideo(call) if self.rank == 0 else None


def _check_pair(guide_scale) -> None:
    """Upstream's A14B/5B pipelines turn only a float into a pair; an int would fail at guide_scale[1]."""
    guide_scale = (guide_scale, guide_scale) if isinstance(guide_scale, float) else guide_scale
    guide_scale[1]


class WanT2V(_Base):
    def generate(self, input_prompt, size=(1280, 720), frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=50, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        _check_pair(guide_scale)
        return self._sample(dict(input_prompt=input_prompt, size=list(size), frame_num=frame_num, shift=shift,
                                 sample_solver=sample_solver, sampling_steps=sampling_steps,
                                 guide_scale=guide_scale, n_prompt=n_prompt, seed=seed,
                                 offload_model=offload_model))


class WanI2V(_Base):
    def generate(self, input_prompt, img, max_area=720 * 1280, frame_num=81, shift=5.0, sample_solver='unipc',
                 sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1, offload_model=True):
        if img is None:
            raise ValueError("WanI2V needs an image")
        _check_pair(guide_scale)
        return self._sample(dict(input_prompt=input_prompt, img=img, image_size=list(img.size), max_area=max_area,
                                 frame_num=frame_num, shift=shift, sample_solver=sample_solver,
                                 sampling_steps=sampling_steps, guide_scale=guide_scale, n_prompt=n_prompt,
                                 seed=seed, offload_model=offload_model))


class WanTI2V(_Base):
    moe = False

    def generate(self, input_prompt, img=None, size=(1280, 704), max_area=704 * 1280, frame_num=81, shift=5.0,
                 sample_solver='unipc', sampling_steps=50, guide_scale=5.0, n_prompt="", seed=-1,
                 offload_model=True):
        _check_pair(guide_scale)
        return self._sample(dict(input_prompt=input_prompt, img=img, size=list(size), max_area=max_area,
                                 frame_num=frame_num, shift=shift, sample_solver=sample_solver,
                                 sampling_steps=sampling_steps, guide_scale=guide_scale, n_prompt=n_prompt,
                                 seed=seed, offload_model=offload_model))


class WanS2V(_Base):
    moe = False

    def generate(self, input_prompt, ref_image_path, audio_path, enable_tts, tts_prompt_audio, tts_prompt_text,
                 tts_text, num_repeat=1, pose_video=None, max_area=720 * 1280, infer_frames=80, shift=5.0,
                 sample_solver='unipc', sampling_steps=40, guide_scale=5.0, n_prompt="", seed=-1,
                 offload_model=True, init_first_frame=False):
        guide_scale > 1  # upstream compares it as one number: a pair would raise here
        with open(ref_image_path, "rb"):  # PIL's Image.open
            pass
        if enable_tts:
            raise NotImplementedError("the stand-in has no CosyVoice")
        clips = _s2v_clips(audio_path, infer_frames)
        if num_repeat is None or num_repeat > clips:
            num_repeat = clips
        if pose_video is not None:
            open(pose_video, "rb").close()  # decord's VideoReader
        return self._sample(dict(input_prompt=input_prompt, ref_image_path=ref_image_path, audio_path=audio_path,
                                 num_repeat=num_repeat, pose_video=pose_video, max_area=max_area,
                                 infer_frames=infer_frames, shift=shift, sample_solver=sample_solver,
                                 sampling_steps=sampling_steps, guide_scale=guide_scale, n_prompt=n_prompt, seed=seed,
                                 offload_model=offload_model, init_first_frame=init_first_frame), clips=num_repeat)


def _s2v_clips(audio_path: str, infer_frames: int) -> int:
    """AudioEncoder.get_audio_embed_bucket_fps's clip count for a WAV (librosa reads any format; other
    formats count as one clip here)."""
    import wave

    try:
        with wave.open(audio_path) as w:
            seconds = w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return 1
    return int(int(seconds * 30) / (infer_frames * 30 / 16)) + 1


def merge_video_audio(video_path: str, audio_path: str):
    """Upstream muxes the audio in with ffmpeg, in place; the stand-in appends it as a `free` box
    (which MP4 readers skip), so a test can see which audio the published video carries."""
    if os.environ.get("FAKE_WAN_MERGE_FAILS"):  # upstream where ffmpeg is missing: logged, not raised
        logging.error("merge_video_audio failed with error: [Errno 2] No such file or directory: 'ffmpeg'")
        return
    with open(audio_path, "rb") as f:
        audio = f.read()
    with open(video_path, "ab") as f:
        f.write((8 + len(audio)).to_bytes(4, "big") + b"free" + audio)


def save_video(tensor, save_file=None, fps=30, suffix='.mp4', nrow=8, normalize=True, value_range=(-1, 1)):
    """Write a real (tiny) MP4: tests/standins/tiny.mp4, as upstream's save_video would write one."""
    if os.environ.get("FAKE_WAN_SAVE_NOTHING"):
        return  # upstream's save_video swallows its errors: nothing written, no exception
    with open(save_file, "wb") as f:
        f.write(TINY_MP4.read_bytes())
