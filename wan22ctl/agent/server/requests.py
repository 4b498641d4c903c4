"""Turning a `POST /v1/videos` body into job parameters, or a 422 naming the field and the reason.

The rules are the CLI's (`wan22ctl generate`, through `plan.launch.build_request`): sizes per
task, frame count 4n+1, the solver list, an image required by i2v and refused by t2v; this
module adds JSON types and the server's resource limits (prompt length, steps, frames). Fields the
request leaves out are filled from the task's Wan2.2 config, because upstream's `generate()`
keyword defaults differ from `generate.py`'s (e.g. `WanT2V.generate(shift=5.0,
sampling_steps=50)` against t2v-A14B's 12.0 and 40). A guide scale is always sent as float
(or a pair of floats): upstream turns only a `float` into the (low, high) pair.

Uploaded images are checked before anything else sees them: base64 that decodes, a size cap,
PNG/JPEG/WebP by their magic bytes, and sane dimensions read from the header (so a
decompression bomb never reaches Pillow).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from dataclasses import dataclass

from wan22ctl import catalog

MAX_PROMPT_CHARS = 10_000
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_SIDE = 8192
MIN_IMAGE_SIDE = 16
MAX_STEPS = 1000
MAX_FRAMES = 1001
MAX_SEED = 2**63 - 1

FIELDS = ("prompt", "negative_prompt", "task", "size", "frame_num", "sample_steps", "sample_shift",
          "sample_guide_scale", "sample_solver", "seed", "image")


class RequestInvalid(Exception):
    """A request field is wrong: the API answers 422 with `field` and `reason`."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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


def _image_dimensions(data: bytes) -> tuple[str, int, int]:
    """(kind, width, height) from the header bytes; ValueError when not PNG, JPEG or WebP."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG without an IHDR header")
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data.startswith(b"\xff\xd8\xff"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                raise ValueError("damaged JPEG header")
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpeg", w, h
            i += 2 + length
        raise ValueError("JPEG without a frame header")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            b = data[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return "webp", w, h
        if chunk == b"VP8X" and len(data) >= 30:
            w = 1 + int.from_bytes(data[24:27], "little")
            h = 1 + int.from_bytes(data[27:30], "little")
            return "webp", w, h
        raise ValueError("WebP with an unknown chunk")
    raise ValueError("not a PNG, JPEG or WebP image (checked by its first bytes)")


def check_image(value, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Decode and check an uploaded image given as base64 or a `data:image/...;base64,` URL."""
    if not isinstance(value, str) or not value:
        raise RequestInvalid("image", "must be a base64 string or a data: URL")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if not head.endswith(";base64"):
            raise RequestInvalid("image", "a data: URL must be base64-encoded")
    if len(value) > (max_bytes * 4) // 3 + 8:
        raise RequestInvalid("image", f"larger than {max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid("image", "is not valid base64") from None
    if len(data) > max_bytes:
        raise RequestInvalid("image", f"larger than {max_bytes} bytes")
    try:
        kind, w, h = _image_dimensions(data)
    except (ValueError, struct.error) as exc:
        raise RequestInvalid("image", str(exc)) from None
    if not (MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE):
        raise RequestInvalid("image", f"{w}x{h} pixels; each side must be {MIN_IMAGE_SIDE}-{MAX_IMAGE_SIDE}")
    return CheckedImage(data, kind, w, h)


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
                   ("solver", "sample_solver"), ("prompt", "prompt"), ("image", "image"), ("task", "task"))


def _cli_rules(task_name: str, prompt, size, frame_num, steps, shift, guide, seed, solver, has_image) -> str:
    """Apply `wan22ctl generate`'s own checks (plan.launch.build_request); the normalised size."""
    from wan22ctl.errors import UserError
    from wan22ctl.plan.launch import build_request

    try:
        request = build_request(
            task_name, prompt, size=size, frame_num=frame_num, sample_steps=steps, sample_shift=shift,
            guide_scale=guide, seed=max(seed, 0) if seed is not None else 0, solver=solver,
            image="upload" if has_image else None, file_exists=lambda _: True,
        )
    except UserError as exc:
        message = exc.message
        field = next((f for key, f in _MESSAGE_FIELDS if key in message), "body")
        raise RequestInvalid(field, message) from None
    return request.size


def validate(body, task_name: str, max_image_bytes: int = MAX_IMAGE_BYTES) -> tuple[dict, CheckedImage | None]:
    """Checked job parameters for the server's task, and the checked image if one was sent.

    JSON types and the server's own limits are checked here; the value rules are the CLI's
    (`plan.launch.build_request`). Fields left out stay None for `fill_defaults`.
    Raises RequestInvalid for the first field that is wrong.
    """
    if not isinstance(body, dict):
        raise RequestInvalid("body", "must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestInvalid(unknown[0], f"unknown field; known fields: {', '.join(FIELDS)}")
    task = catalog.TASKS[task_name]
    if body.get("task") is not None and body["task"] != task_name:
        raise RequestInvalid("task", f"this server runs {task_name}; {body['task']!r} needs its own server")

    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise RequestInvalid("prompt", "is required and must be text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RequestInvalid("prompt", f"longer than {MAX_PROMPT_CHARS} characters")
    negative = body.get("negative_prompt", "")
    if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
        raise RequestInvalid("negative_prompt", f"must be text of at most {MAX_PROMPT_CHARS} characters")
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
    solver = body.get("sample_solver") or "unipc"
    if not isinstance(solver, str):
        raise RequestInvalid("sample_solver", f"choose one of {', '.join(catalog.SOLVERS)}")

    size = _cli_rules(task_name, prompt, size, frame_num, steps, shift, guide, seed, solver,
                      body.get("image") is not None)
    image = check_image(body["image"], max_image_bytes) if body.get("image") is not None else None
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
        "seed": -1 if seed is None else seed,
        "image_sha256": image.sha256 if image else None,
    }
    return params, image


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
