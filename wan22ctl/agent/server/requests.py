"""Turning a `POST /v1/videos` body into job parameters, or a 422 naming the field and the reason.

The rules are the CLI's (`wan22ctl generate`, through `plan.launch.build_request`): sizes per
task, frame count 4n+1 (s2v: frames a clip, a multiple of 4), the solver list, an image required
by i2v and s2v and refused by t2v, s2v's audio required and its clip cap; this module adds JSON
types and the server's resource limits (prompt length, steps, frames, upload sizes). Fields the
request leaves out are filled from the task's Wan2.2 config, because upstream's `generate()`
keyword defaults differ from `generate.py`'s (e.g. `WanT2V.generate(shift=5.0,
sampling_steps=50)` against t2v-A14B's 12.0 and 40). A guide scale is always sent as float
(or a pair of floats): upstream turns only a `float` into the (low, high) pair. A `preset`
(`catalog.PRESETS`) fills steps, shift, guide scale and solver as `generate --preset` does.

Prompts must be valid Unicode text: a lone surrogate (which no file name, sidecar or terminal
can carry) or a control character other than newline and tab is refused. Uploaded images are
decoded here, at submit, with Pillow: a size cap on the bytes, the dimensions read from the
header before any pixel is decoded (so a decompression bomb never is), then a full decode, so a
damaged image is a 422 now and never a failed job (under torchrun, every rank's exit) later.
s2v's audio and pose video are read by the CLI's own readers (`wan22ctl.media`, on the bytes):
the audio's length gives the clips the job will run. Text-to-speech (CosyVoice) is not served:
its model loads per run, in generate.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import struct
from dataclasses import dataclass

from wan22ctl import catalog, media, paths
from wan22ctl.agent.inventory import runtime

MAX_PROMPT_CHARS = 10_000
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_MEDIA_BYTES = 16 * 1024 * 1024  # s2v's audio, and its pose video, each (a minute of 44.1 kHz stereo WAV is 10 MB)
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 40_000_000  # 8K UHD is 33 MP; Wan2.2 resizes to at most 1280x720 anyway
IMAGE_KINDS = ("png", "jpeg", "mpo", "webp")  # MPO: a phone camera's JPEG with a preview
MIN_IMAGE_SIDE = 16
MAX_STEPS = 1000
MAX_FRAMES = 1001
MAX_SEED = 2**63 - 1

# C0 and C1 controls except tab and newline, DEL, and UTF-16 surrogates (lone ones come from JSON escapes such as "\\ud800").
_BAD_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

FIELDS = ("prompt", "negative_prompt", "task", "size", "frame_num", "sample_steps", "sample_shift",
          "sample_guide_scale", "sample_solver", "seed", "image", "preset", "loras",
          "audio", "pose_video", "num_clip", "start_from_ref")
# OpenAI's Videos API names (`openai.videos.create`): mapped onto the fields above by `from_openai`.
OPENAI_FIELDS = ("model", "seconds", "input_reference")
# Files a request carries (multipart files, or base64 in JSON); each is kept once by its sha256.
UPLOADS = ("image", "audio", "pose_video")
# generate's --tts-* options: CosyVoice loads per generate.py run, the resident pipeline has none.
TTS_FIELDS = ("tts_text", "tts_prompt_audio", "tts_prompt_text")
# Form fields arrive as text: these are converted to numbers (or true/false) first.
_INT_FIELDS = ("frame_num", "sample_steps", "seed", "num_clip")
_FLOAT_FIELDS = ("sample_shift", "sample_guide_scale")
_BOOL_FIELDS = ("start_from_ref",)


class RequestInvalid(Exception):
    """A request field is wrong: the API answers `status` (422, or 400 for what this server cannot
    serve as asked: a model it has not loaded, another LoRA set than the one merged at start)
    with `field` and `reason`."""

    def __init__(self, field: str, reason: str, status: int = 422):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class CheckedImage:
    """An uploaded image that passed the checks: its bytes, type and dimensions."""

    data: bytes
    kind: str  # png, jpeg, webp
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _decode(data: bytes) -> tuple[str, int, int]:
    """(kind, width, height) of an image that Pillow decodes completely; RequestInvalid otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = (img.format or "").lower()
            if kind not in IMAGE_KINDS:
                raise RequestInvalid("image", f"a {img.format or 'unknown'} image; send PNG, JPEG or WebP")
            w, h = img.size
            if not (MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE):
                raise RequestInvalid("image", f"{w}x{h} pixels; each side must be {MIN_IMAGE_SIDE}-{MAX_IMAGE_SIDE}")
            if w * h > MAX_IMAGE_PIXELS:
                raise RequestInvalid("image", f"{w}x{h} pixels; at most {MAX_IMAGE_PIXELS} pixels")
            img.convert("RGB")  # decodes every pixel: truncated or corrupt data fails here
    except UnidentifiedImageError:
        raise RequestInvalid("image", "not a PNG, JPEG or WebP image") from None
    except Image.DecompressionBombError as exc:
        raise RequestInvalid("image", f"refused as a decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        raise RequestInvalid("image", f"the image does not decode: {exc}") from None
    return ("jpeg" if kind == "mpo" else kind), w, h


@dataclass(frozen=True)
class CheckedMedia:
    """An uploaded audio or pose video that the CLI's readers accept: its bytes, its kind (the
    file's extension when staged) and, for audio, its length."""

    data: bytes
    kind: str  # wav, flac, mp3, ogg, m4a; mp4, mkv, avi
    seconds: float | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _read_upload(data: bytes, field: str, read, max_bytes: int):
    """An upload's size and decodability, with the reader `generate` uses for the same file."""
    _check_size(data, field, max_bytes)
    try:
        return read(data)
    except media.MediaError as exc:
        raise RequestInvalid(field, str(exc)) from None


def check_audio_bytes(data: bytes, max_bytes: int = MAX_MEDIA_BYTES) -> CheckedMedia:
    """An uploaded audio's bytes checked as `generate --audio` checks a file (`media.audio_info`)."""
    info = _read_upload(data, "audio", media.audio_info_of, max_bytes)
    return CheckedMedia(data, info.kind, info.seconds)


def check_pose_bytes(data: bytes, max_bytes: int = MAX_MEDIA_BYTES) -> CheckedMedia:
    """An uploaded pose video's bytes checked as `generate --pose-video` checks a file (`media.video_info`)."""
    info = _read_upload(data, "pose_video", media.video_info_of, max_bytes)
    return CheckedMedia(data, info.kind)


def _check_size(data: bytes, field: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise RequestInvalid(field, f"larger than {max_bytes} bytes")
    if not data:
        raise RequestInvalid(field, "the file is empty")


def upload_bytes(value, field: str, max_bytes: int) -> bytes:
    """An upload's bytes: a multipart file as it came, or base64 / a `data:...;base64,` URL from JSON."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str) or not value:
        raise RequestInvalid(field, "must be a base64 string or a data: URL")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if not head.endswith(";base64"):
            raise RequestInvalid(field, "a data: URL must be base64-encoded")
    if len(value) > (max_bytes * 4) // 3 + 8:
        raise RequestInvalid(field, f"larger than {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid(field, "is not valid base64") from None


def check_image_bytes(data: bytes, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Check an uploaded image's bytes (a multipart file): size cap, header dimensions, full decode."""
    _check_size(data, "image", max_bytes)
    kind, w, h = _decode(data)
    return CheckedImage(data, kind, w, h)


def check_image(value, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Check an uploaded image: multipart bytes, or base64 / a `data:image/...;base64,` URL."""
    return check_image_bytes(upload_bytes(value, "image", max_bytes), max_bytes)


def check_text(value: str, field: str) -> str:
    """`value` with CRLF as LF, if it is valid Unicode text without control characters other
    than newline and tab; RequestInvalid naming `field` otherwise."""
    value = value.replace("\r\n", "\n")
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        ch = bad.group()
        what = "a lone surrogate" if "\ud800" <= ch <= "\udfff" else "a control character"
        raise RequestInvalid(field, f"contains {what} (U+{ord(ch):04X}) at position {bad.start()}; "
                                    "send plain text (newlines and tabs are fine)")
    return value


def _int(body: dict, name: str, lo: int, hi: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestInvalid(name, "must be an integer")
    if not lo <= v <= hi:
        raise RequestInvalid(name, f"must be between {lo} and {hi}")
    return v


def _number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestInvalid(name, "must be a number")
    if not -1000 <= v <= 1000:
        raise RequestInvalid(name, "must be between -1000 and 1000")
    return float(v)


# Which request field a CLI validation message is about (the CLI names its flags).
_MESSAGE_FIELDS = (("size ", "size"), ("--frame-num", "frame_num"), ("--steps", "sample_steps"),
                   ("--shift", "sample_shift"), ("--guide-scale", "sample_guide_scale"), ("--seed", "seed"),
                   ("solver", "sample_solver"), ("--audio", "audio"),
                   ("--pose-video", "pose_video"), ("--num-clip", "num_clip"), ("--start-from-ref", "start_from_ref"),
                   ("prompt", "prompt"), ("image", "image"), ("task", "task"))


def _cli_rules(task_name: str, prompt, size, frame_num, steps, shift, guide, seed, solver, preset, loras, body):
    """Apply `wan22ctl generate`'s own checks (plan.launch.build_request): the checked request,
    with a preset's values filled in. Uploads are judged present here, their content later."""
    from wan22ctl.errors import UserError
    from wan22ctl.plan.launch import build_request

    uploaded = {name: "upload" if body.get(name) is not None else None for name in UPLOADS}
    try:
        return build_request(
            task_name, prompt, size=size, frame_num=frame_num, sample_steps=steps, sample_shift=shift,
            guide_scale=guide, seed=max(seed, 0) if seed is not None else 0, solver=solver,
            preset=preset, loras=loras, file_exists=lambda _: True, probe_inputs=False,
            num_clip=body.get("num_clip"), start_from_ref=body.get("start_from_ref", False), **uploaded,
        )
    except UserError as exc:
        message = exc.message
        field = next((f for key, f in _MESSAGE_FIELDS if key in message), "body")
        raise RequestInvalid(field, message) from None


def _lora_refs(value) -> tuple[dict, ...]:
    """The request's `loras`: [{"file": path, "scale": number, "expert": "high"|"low"|null}]."""
    if not isinstance(value, list):
        raise RequestInvalid("loras", 'must be a list of {"file": path, "scale": number, "expert": "high"|"low"|null}')
    refs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("file"), str) or set(item) - {"file", "scale", "expert"}:
            raise RequestInvalid("loras", 'each entry is {"file": path, "scale": number, "expert": "high"|"low"|null}')
        if item.get("expert") not in (None, "high", "low"):
            raise RequestInvalid("loras", "expert must be high, low or null")
        refs.append({"file": item["file"], "scale": _number(item.get("scale", 1.0), "loras"),
                     "expert": item.get("expert"), "catalog": None})
    return tuple(refs)


def check_lora_set(refs, task_name: str, server_set, checkpoint_root: str) -> None:
    """400 unless the LoRAs a request names are the set this server merged at load."""
    from wan22ctl import loras

    task = catalog.TASKS[task_name]

    def local(path: str) -> str:  # catalog LoRAs are relative to the checkpoint root; /opt/checkpoints maps to it
        if path == paths.CONTAINER_CHECKPOINT_DIR or path.startswith(paths.CONTAINER_CHECKPOINT_DIR + "/"):
            path = path[len(paths.CONTAINER_CHECKPOINT_DIR):].lstrip("/")
        return os.path.join(checkpoint_root, path)

    specs = [loras.LoraSpec(local(r["file"]), r["scale"], r["expert"]) for r in refs]
    try:
        wanted = loras.canonical(loras.route(specs, task.moe))
        asked = loras.describe(wanted)
    except loras.LoraError as exc:
        wanted, asked = None, f"LoRAs it cannot have ({exc})"
    if wanted != list(server_set):
        raise RequestInvalid(
            "loras", f"this server merged {loras.describe(list(server_set))} into its weights at start and the request "
            f"asks for {asked}; LoRAs are merged once at load, so serve that set from a server started with it "
            "(wan22ctl serve --lora ... / --preset)", status=400)


def model_names(task_name: str) -> tuple[str, ...]:
    """What `model` may say to mean this server's task: the task, or its checkpoint folder's name."""
    task = catalog.TASKS[task_name]
    return task_name, catalog.MODEL_BY_KEY[task.model_key].subdir


def form_fields(form: dict) -> dict:
    """A multipart form as a request body: numbers parsed from text, files as their bytes."""
    body = {}
    for name, value in form.items():
        if isinstance(value, str) and name in _BOOL_FIELDS:
            flag = value.strip().lower()
            if flag not in ("true", "false", "1", "0"):
                raise RequestInvalid(name, "must be true or false")
            value = flag in ("true", "1")
        elif isinstance(value, str) and name in _INT_FIELDS:
            try:
                value = int(value.strip())
            except ValueError:
                raise RequestInvalid(name, "must be an integer") from None
        elif isinstance(value, str) and name in _FLOAT_FIELDS:
            try:
                value = float(value.strip())
            except ValueError:
                raise RequestInvalid(name, "must be a number") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise RequestInvalid(name, "must be a finite number")
        body[name] = value
    return body


def from_openai(body: dict, task_name: str) -> dict:
    """The body with OpenAI's `model`, `seconds`, `size` "WxH" and `input_reference` turned into
    the kit's fields: `seconds` becomes the 4n+1 frame count nearest to seconds x the task's fps."""
    body = dict(body)
    task = catalog.TASKS[task_name]
    model = body.pop("model", None)
    if model is not None:
        names = model_names(task_name)
        if not isinstance(model, str) or model.lower() not in {n.lower() for n in names}:
            raise RequestInvalid("model", f"this server has loaded {task_name} (model {names[0]!r} or {names[1]!r}); "
                                          f"{model!r} needs its own server", status=400)
    size = body.get("size")
    if isinstance(size, str) and "x" in size.lower():
        body["size"] = size.lower().replace("x", "*")
    seconds = body.pop("seconds", None)
    if seconds is not None and "audio" in task.inputs:
        raise RequestInvalid("seconds", f"a {task_name} video lasts as long as its audio; leave seconds out "
                                        "(num_clip caps the clips, frame_num sets the frames a clip)")
    if seconds is not None:
        if body.get("frame_num") is not None:
            raise RequestInvalid("seconds", "give seconds or frame_num, not both")
        try:
            value = float(seconds) if isinstance(seconds, (str, int, float)) and not isinstance(seconds, bool) else None
        except ValueError:
            value = None
        longest = (MAX_FRAMES - 1) / task.fps
        if value is None or not 0 < value <= longest:
            raise RequestInvalid("seconds", f"must be a number of seconds above 0 and at most {longest:g} "
                                            f"({task_name} runs at {task.fps} fps)")
        body["frame_num"] = 4 * max(1, round(value * task.fps / 4)) + 1
    reference = body.pop("input_reference", None)
    if reference is not None:
        if body.get("image") is not None:
            raise RequestInvalid("input_reference", "give input_reference or image, not both")
        if isinstance(reference, dict):
            if reference.get("file_id"):
                raise RequestInvalid("input_reference", "file_id references are not supported; upload the image")
            reference = reference.get("image_url")
            if not isinstance(reference, str) or not reference.startswith("data:"):
                raise RequestInvalid("input_reference", "image_url must be a base64 data: URL")
        body["image"] = reference
    return body


def validate(body, task_name: str, max_image_bytes: int = MAX_IMAGE_BYTES, *, loras=(),
             checkpoint_root: str | None = None, default_preset: str | None = None,
             max_media_bytes: int = MAX_MEDIA_BYTES) -> tuple[dict, dict]:
    """Checked job parameters for the server's task, and the checked uploads that came with it
    ({"image": CheckedImage, "audio"/"pose_video": CheckedMedia}; params name each by sha256).

    JSON types and the server's own limits are checked here; the value rules are the CLI's
    (`plan.launch.build_request`). Fields left out stay None for `fill_defaults` (a `preset`
    fills its own). A request that names LoRAs (`loras`, or a `preset` with its catalog LoRAs)
    must name the server's set `loras` (`wan22ctl.loras.canonical`; catalog LoRAs under
    `checkpoint_root`), else 400; one that names none runs on the server's weights as they are,
    with `default_preset` (the server's `--preset`) when it names no preset either.
    Raises RequestInvalid for the first field that is wrong.
    """
    if not isinstance(body, dict):
        raise RequestInvalid("body", "must be a JSON object")
    body = from_openai(body, task_name)
    tts = next((name for name in TTS_FIELDS if name in body), None)
    if tts is not None:
        raise RequestInvalid(tts, "the resident server does not synthesize speech (CosyVoice loads per generate.py "
                                  "run): send the speech as audio, or run `wan22ctl generate --task s2v-14B "
                                  "--tts-text ...` where no server serves s2v-14B", status=400)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestInvalid(unknown[0], f"unknown field; known fields: {', '.join(FIELDS + OPENAI_FIELDS)}")
    task = catalog.TASKS[task_name]
    if body.get("task") is not None and body["task"] != task_name:
        raise RequestInvalid("task", f"this server runs {task_name}; {body['task']!r} needs its own server")

    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestInvalid("prompt", "is required and must be text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestInvalid("prompt", f"longer than {MAX_PROMPT_CHARS} characters")
    prompt = check_text(prompt, "prompt")
    negative = body.get("negative_prompt", "")
    if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
        raise RequestInvalid("negative_prompt", f"must be text of at most {MAX_PROMPT_CHARS} characters")
    negative = check_text(negative, "negative_prompt")
    size = body.get("size")
    if size is not None and not isinstance(size, str):
        raise RequestInvalid("size", "must be text such as 1280*720")
    frame_num = _int(body, "frame_num", -MAX_FRAMES, MAX_FRAMES)
    steps = _int(body, "sample_steps", -MAX_STEPS, MAX_STEPS)
    seed = _int(body, "seed", -1, MAX_SEED)
    shift = body.get("sample_shift")
    if shift is not None:
        shift = _number(shift, "sample_shift")
    guide = body.get("sample_guide_scale")
    pair = None
    if guide is not None:
        if isinstance(guide, list):
            if not task.moe or len(guide) != 2:
                raise RequestInvalid("sample_guide_scale",
                                     "a pair [low_noise, high_noise] is only for the A14B (MoE) tasks" if not task.moe
                                     else "a list must be [low_noise, high_noise]")
            pair = [_number(g, "sample_guide_scale") for g in guide]
            guide = None
        else:
            guide = _number(guide, "sample_guide_scale")
    solver = body.get("sample_solver")
    if solver is not None and not isinstance(solver, str):
        raise RequestInvalid("sample_solver", f"choose one of {', '.join(catalog.SOLVERS)}")
    preset = body.get("preset")
    if preset is None and body.get("loras") is None:
        preset = default_preset
    if preset is not None and preset not in catalog.PRESETS:
        raise RequestInvalid("preset", f"choose one of {', '.join(catalog.PRESETS)}")
    refs = _lora_refs(body["loras"]) if body.get("loras") is not None else ()

    request = _cli_rules(task_name, prompt, size, frame_num, steps, shift, guide, seed, solver, preset, refs, body)
    if body.get("loras") is not None or preset is not None:
        root = checkpoint_root or runtime().checkpoint_dir
        check_lora_set(request.loras, task_name, loras, root)
    if preset is not None:  # the preset's values where the request gave none
        steps, shift, guide = request.sample_steps, request.sample_shift, request.guide_scale
    size, solver = request.size, request.solver
    uploads: dict = {}
    if body.get("image") is not None:  # bytes: a multipart file; text: base64 or a data: URL in JSON
        uploads["image"] = check_image(body["image"], max_image_bytes)
    for name, check in (("audio", check_audio_bytes), ("pose_video", check_pose_bytes)):
        if body.get(name) is not None:
            uploads[name] = check(upload_bytes(body[name], name, max_media_bytes), max_media_bytes)
    params = {
        "task": task_name,
        "prompt": prompt.strip(),
        "negative_prompt": negative,
        "size": size,
        # None: filled from the loaded pipeline's WAN_CONFIGS[task] (see fill_defaults).
        "frame_num": frame_num,
        "sample_steps": steps,
        "sample_shift": shift,
        "sample_guide_scale": pair if pair is not None else guide,
        "guide_scale_given": pair is not None or guide is not None,
        "sample_solver": solver,
        "preset": preset,
        "seed": -1 if seed is None else seed,
        "image_sha256": uploads["image"].sha256 if "image" in uploads else None,
    }
    if "audio" in task.inputs:
        from wan22ctl.plan.launch import s2v_clips

        # frames a clip: generate.py's --infer_frames default, not WAN_CONFIGS' frame_num (81, never read)
        params.update(frame_num=request.frame_num, num_clip=request.num_clip, start_from_ref=request.start_from_ref,
                      clips=s2v_clips(uploads["audio"].seconds, request.frame_num, request.num_clip),
                      audio_seconds=uploads["audio"].seconds, audio_sha256=uploads["audio"].sha256,
                      pose_video_sha256=uploads["pose_video"].sha256 if "pose_video" in uploads else None)
    return params, uploads


def fill_defaults(params: dict, config) -> dict:
    """Parameters with every field the request left out taken from the task's Wan2.2 config.

    `config` is upstream's `WAN_CONFIGS[task]` (an EasyDict: frame_num, sample_steps,
    sample_shift, sample_guide_scale). A config pair stays a pair; one number becomes a float.
    """
    out = dict(params)
    for name, key in (("frame_num", "frame_num"), ("sample_steps", "sample_steps"), ("sample_shift", "sample_shift")):
        if out[name] is None:
            out[name] = getattr(config, key)
    out["sample_shift"] = float(out["sample_shift"])
    if out["sample_guide_scale"] is None:
        g = config.sample_guide_scale
        out["sample_guide_scale"] = [float(x) for x in g] if isinstance(g, (tuple, list)) else float(g)
    return out


def request_hash(params: dict) -> str:
    """What makes two submissions "the same request" for the idempotency key."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
