"""The launch plan: a generation request and the machine's inventory in, the exact Wan2.2 command out.

Pure functions only. `build_request()` fills task defaults from the catalog and validates every
field the way upstream should have (types, size per task, frame count 4n+1, image for i2v, a
real prompt), raising a one-line `UserError` before anything slow starts; `plan`, `generate` and
the resident server all validate through it. `plan_launch()` picks the GPUs, `python` or
`torchrun`, Ulysses degree, FSDP and memory flags, checks host RAM, and returns a `LaunchPlan`
whose argv, environment and paths are rendered for the machine's `Runtime`, with a reason for
each choice.

Memory figures come from the official efficiency table and README (wan22-upstream.md §4.3, §6,
§9.5): peak GPU memory per process is modelled as resident DiT weights + T5 (when on the GPU)
+ activations, with the activation terms fitted to the table (A14B 720P: 59.8 GB on 1 GPU,
51.7 GB on 4, 37.0 GB on 8; TI2V-5B: 22.9 GB on a 4090). Estimates, not guarantees; each
is printed with the plan. A14B on one GPU below 80 GB (and `--offload blocks`, `--dtype fp8`)
is placed by `plan/lowmem.py`'s model of the kit's own measured peaks: whole experts swapped
through page-locked host copies where one fits, else DiT blocks streamed with N resident.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

from wan22ctl import catalog, schedules
from wan22ctl.errors import EnvError, UserError
from wan22ctl.plan import lowmem
from wan22ctl.plan.inventory import Gpu, Runtime
from wan22ctl.settings import GpuSelection, parse_gpu_selection

# auto: from GPU memory; on/off: --offload_model; blocks: stream the A14B DiT blocks (plan/lowmem.py)
OFFLOAD_CHOICES = ("auto", "on", "off", "blocks")
DTYPE_CHOICES = lowmem.DTYPES  # DiT weights: bf16, or fp8 (agent/fp8.py) on FP8 tensor cores
FP8_COMPUTE_CAPS = ("8.9", "9.0")
ATTENTION_DEFAULT = "auto"
COMPILE_DEFAULT = "auto"  # WAN22_COMPILE: torch.compile of the DiT block (agent.speedups decides `auto`)
BOOTSTRAP_MODULE = "wan22ctl.agent.wanrun"
# Memory classes in GiB as nvidia-smi reports them (an "80 GB" H100 shows 79.6 GiB).
CLASS_80GB = 75.0
CLASS_48GB = 40.0
BIG_SINGLE_GPU = 120.0  # H200 (141 GB) and up: room to keep T5 and an expert resident
# Keep both A14B experts resident only when the estimate leaves this share of the GPU free.
OFFLOAD_HEADROOM = 0.9
# One process without --offload_model keeps both A14B experts and T5 on the GPU when this much stays
# free beside them: agent.speedups.RESIDENT_FREE_BYTES, the rule the container side applies (WAN22_FAST_SWAP).
RESIDENT_FREE_GB = 40.0


@dataclass(frozen=True)
class GenerationRequest:
    """One video to generate, every value explicit (defaults already filled in)."""

    task: str
    prompt: str
    size: str
    frame_num: int
    sample_steps: int
    sample_shift: float
    guide_scale: float | None  # None: the task's config default (a per-expert pair for MoE)
    seed: int
    solver: str
    image: str | None = None  # path on the host
    offload: str = "auto"
    gpus: str | None = None  # None/"all", a count "2", or indices "0,2"
    # s2v-14B (host paths; `catalog.Task.inputs` says which task takes which)
    audio: str | None = None
    pose_video: str | None = None
    num_clip: int | None = None  # None: as many clips as the audio needs
    start_from_ref: bool = False
    # s2v-14B's speech made by CosyVoice instead of --audio: the words, the voice to speak them in
    # (a host path) and, optionally, what that recording says (else CosyVoice's cross-lingual mode)
    tts_text: str | None = None
    tts_prompt_audio: str | None = None
    tts_prompt_text: str | None = None
    # animate-14B: the folder `animate-prep` wrote
    src_root: str | None = None
    refert_num: int | None = None
    replace: bool = False
    relighting_lora: bool = False
    clips: int | None = None  # clips upstream will run, read from the inputs (None: not read)
    dtype: str = "bf16"  # the A14B experts' weights (WAN22_DTYPE)
    preset: str | None = None  # catalog.PRESETS key whose settings and LoRAs this request took
    # LoRAs merged at load: {"file": path under the checkpoint root, "scale", "expert": "high"/"low"/None,
    # "catalog": the catalog LoRA key or None}; a Lightning-layout folder routes itself to both experts
    loras: tuple = ()
    warnings: tuple[str, ...] = ()  # flags that left the preset's regime

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def normalize_size(size: str) -> str:
    """Accept 1280x720 as well as upstream's 1280*720."""
    return size.strip().lower().replace("x", "*").replace(" ", "")


def _frame_hint(n: int) -> str:
    low = max(1, (n - 1) // 4 * 4 + 1)
    return f"{low} or {low + 4}" if low != n else str(n)


def _check_types(*, text: dict, whole: dict, number: dict) -> None:
    """UserError for the first value of the wrong JSON type (None: not given, always allowed)."""
    for name, value in text.items():
        if value is not None and not isinstance(value, str):
            raise UserError(f"{name} must be text, not {value!r}")
    for name, value in whole.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f"{name} must be a whole number, not {value!r}")
    for name, value in number.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise UserError(f"{name} must be a finite number, not {value!r}")


def build_request(
    task: str,
    prompt: str | None,
    *,
    size: str | None = None,
    frame_num: int | None = None,
    sample_steps: int | None = None,
    sample_shift: float | None = None,
    guide_scale: float | None = None,
    seed: int,
    solver: str | None = None,
    image: str | None = None,
    offload: str = "auto",
    gpus: str | None = None,
    dtype: str = "bf16",
    preset: str | None = None,
    loras: tuple = (),
    file_exists: Callable[[str], bool] = os.path.isfile,
    audio: str | None = None,
    pose_video: str | None = None,
    num_clip: int | None = None,
    start_from_ref: bool = False,
    tts_text: str | None = None,
    tts_prompt_audio: str | None = None,
    tts_prompt_text: str | None = None,
    src_root: str | None = None,
    refert_num: int | None = None,
    replace: bool = False,
    relighting_lora: bool = False,
    probe_inputs: bool = True,
) -> GenerationRequest:
    """A complete, validated request; every problem is a one-line UserError (exit 2).

    `seed` must be drawn by the caller when the user gave none, so the sidecar records the
    seed that was really used (upstream would draw one and only log it). Values may come
    from JSON (a prompt file's lines): their types are checked first, integers are integers.
    The s2v and animate inputs are checked by `task_inputs`; with `probe_inputs` their files are
    read (audio length, video frames), else taken as given (the server, doctor's sample plans).
    `preset` fills steps, guide scale, shift and solver where the caller gave none and adds its
    catalog LoRAs to `loras` (already resolved: see the field); a value that leaves the preset's
    regime is kept, with a warning.
    """
    _check_types(text={"--task": task, "the prompt": prompt, "--size": size, "--solver": solver, "--image": image,
                       "--offload": offload, "--gpus": gpus, "--dtype": dtype, "--preset": preset},
                 whole={"--frame-num": frame_num, "--steps": sample_steps, "--seed": seed},
                 number={"--shift": sample_shift, "--guide-scale": guide_scale})
    if task not in catalog.TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(catalog.TASKS)}")
    t = catalog.TASKS[task]
    if size and t.size_from_inputs:
        raise UserError(f"{task} takes its size from the preprocessed folder; set it with "
                        "`wan22ctl animate-prep --size`, not --size")
    warnings: tuple[str, ...] = ()
    if preset is not None:
        sample_steps, guide_scale, sample_shift, solver, loras, warnings = apply_preset(
            task, preset, sample_steps, guide_scale, sample_shift, solver, loras)
    solver = solver or "unipc"
    size = normalize_size(size) if size else t.default_size
    if size not in t.sizes:
        raise UserError(f"size {size} is not supported by {task}; choose one of {', '.join(t.sizes)}")
    frame_num = t.frame_num if frame_num is None else frame_num
    check_frames(t, frame_num)
    sample_steps = t.sample_steps if sample_steps is None else sample_steps
    if sample_steps < 1:
        raise UserError(f"--steps {sample_steps} must be at least 1")
    sample_shift = t.sample_shift if sample_shift is None else sample_shift
    if not sample_shift > 0:
        raise UserError(f"--shift {sample_shift} must be greater than 0")
    if guide_scale is not None and not guide_scale >= 0:
        raise UserError(f"--guide-scale {guide_scale} must be 0 or more")
    if not 0 <= seed <= 2**63 - 1:
        raise UserError(f"--seed {seed} must be between 0 and 2**63-1")
    if solver not in catalog.SOLVERS:
        raise UserError(f"unknown solver {solver!r}; choose one of {', '.join(catalog.SOLVERS)}")
    if offload not in OFFLOAD_CHOICES:
        raise UserError(f"--offload {offload!r}; choose auto, on, off or blocks")
    if dtype not in DTYPE_CHOICES:
        raise UserError(f"--dtype {dtype!r}; choose bf16 or fp8")
    for value, flag in ((dtype == "fp8", "--dtype fp8"), (offload == "blocks", "--offload blocks")):
        if value and not t.moe:
            raise UserError(f"{flag} applies to the A14B tasks (t2v-A14B, i2v-A14B); {task} runs in bf16")
    if not t.takes_prompt:
        if prompt is not None and prompt.strip():
            raise UserError(f"{task} takes no prompt: generate.py never passes it on (Wan-Animate uses its own); "
                            "leave --prompt out")
        prompt = ""
    elif prompt is None or not prompt.strip():
        raise UserError("a prompt is required (--prompt or --prompt-file); upstream would silently use its example prompt")
    if image is not None and not t.accepts_image:
        raise UserError(f"{task} takes no image; use i2v-A14B or ti2v-5B for image-to-video")
    if t.needs_image and not image:
        raise UserError(f"{task} needs --image PATH (upstream would silently use its example image)")
    if image is not None and not file_exists(image):
        raise UserError(f"image {image} does not exist or is not a file")
    gpu_selection(gpus)
    extra = task_inputs(t, frame_num, audio=audio, pose_video=pose_video, num_clip=num_clip,
                        start_from_ref=start_from_ref, tts_text=tts_text, tts_prompt_audio=tts_prompt_audio,
                        tts_prompt_text=tts_prompt_text, src_root=src_root, refert_num=refert_num, replace=replace,
                        relighting_lora=relighting_lora, probe=probe_inputs)
    return GenerationRequest(
        task=task, prompt=prompt.strip(), size=size, frame_num=frame_num, sample_steps=sample_steps,
        sample_shift=float(sample_shift), guide_scale=None if guide_scale is None else float(guide_scale),
        seed=seed, solver=solver, image=image, offload=offload, gpus=gpus, dtype=dtype, preset=preset,
        loras=tuple(loras), warnings=warnings, **extra,
    )


def check_frames(task: catalog.Task, frames: int) -> None:
    """The task's frame rule: 4n+1 frames a video, or (s2v) a multiple of 4 frames a clip."""
    if task.frame_rule == "4n":
        if frames < 4 or frames % 4:
            low = max(4, frames // 4 * 4)
            hint = f"{low} or {low + 4}" if low != frames else str(low)
            raise UserError(f"--frame-num {frames} is not a multiple of 4 for {task.name} (frames a clip, "
                            f"generate.py's --infer_frames); use {hint}")
    elif frames < 1 or frames % 4 != 1:
        raise UserError(f"--frame-num {frames} is not of the form 4n+1; use {_frame_hint(max(frames, 1))}")


# The s2v/animate request fields: their option names (messages) and which task takes them.
INPUT_FLAGS = {"audio": "--audio", "pose_video": "--pose-video", "num_clip": "--num-clip",
               "start_from_ref": "--start-from-ref", "tts_text": "--tts-text", "tts_prompt_audio": "--tts-prompt-audio",
               "tts_prompt_text": "--tts-prompt-text", "src_root": "--src-root", "refert_num": "--refert-num",
               "replace": "--replace", "relighting_lora": "--relighting-lora"}
_INPUT_TASKS = {name: next(t.name for t in catalog.TASKS.values() if name in t.inputs) for name in INPUT_FLAGS}


def task_inputs(task: catalog.Task, frame_num: int, *, audio=None, pose_video=None, num_clip=None,
                start_from_ref=False, tts_text=None, tts_prompt_audio=None, tts_prompt_text=None, src_root=None,
                refert_num=None, replace=False, relighting_lora=False, probe: bool = True) -> dict:
    """The s2v / animate fields of a request, checked; UserError for the first problem.

    s2v-14B: the speech, as an audio file (its length decides the clips) or as text CosyVoice
    speaks in the voice of a prompt recording (its length is known only once spoken); an optional
    pose video, a clip cap.
    animate-14B: the folder `animate-prep` wrote, with the files Wan-Animate opens (replacement
    also src_bg.mp4 and src_mask.mp4), videos of one frame count, --refert-num 1 or 5.
    """
    from wan22ctl import media

    given = {"audio": audio, "pose_video": pose_video, "num_clip": num_clip, "start_from_ref": start_from_ref,
             "tts_text": tts_text, "tts_prompt_audio": tts_prompt_audio, "tts_prompt_text": tts_prompt_text,
             "src_root": src_root, "refert_num": refert_num, "replace": replace, "relighting_lora": relighting_lora}
    _check_types(text={"--audio": audio, "--pose-video": pose_video, "--tts-text": tts_text,
                       "--tts-prompt-audio": tts_prompt_audio, "--tts-prompt-text": tts_prompt_text,
                       "--src-root": src_root},
                 whole={"--num-clip": num_clip, "--refert-num": refert_num}, number={})
    for name in ("start_from_ref", "replace", "relighting_lora"):
        if not isinstance(given[name], bool):
            raise UserError(f"{INPUT_FLAGS[name]} must be true or false, not {given[name]!r}")
    for name, value in given.items():
        if value is not None and value is not False and name not in task.inputs:
            raise UserError(f"{INPUT_FLAGS[name]} is for {_INPUT_TASKS[name]}, not {task.name}")
    out = {k: v for k, v in given.items() if k in task.inputs}
    if "audio" in task.inputs:
        speech(audio, tts_text, tts_prompt_audio, tts_prompt_text, task.name)
        if num_clip is not None and num_clip < 1:
            raise UserError(f"--num-clip {num_clip} must be at least 1")
        if probe:
            if audio:
                out["clips"] = s2v_clips(_probe(media.audio_info, "audio", audio).seconds, frame_num, num_clip)
            else:
                _probe(media.audio_info, "TTS prompt audio", tts_prompt_audio)
            if pose_video:
                _probe(media.video_info, "pose video", pose_video)
    if "src_root" in task.inputs:
        refert = catalog.ANIMATE_DEFAULT_REFERT_NUM if refert_num is None else refert_num
        if refert not in catalog.ANIMATE_REFERT_NUMS:
            raise UserError(f"--refert-num {refert} must be 1 or 5 (Wan-Animate asserts it after the 14B model "
                            "has loaded; generate.py's own default, 77, fails there)")
        out["refert_num"] = refert
        if not src_root:
            raise UserError(f"{task.name} needs --src-root FOLDER: what `wan22ctl animate-prep` wrote "
                            f"({', '.join(catalog.ANIMATE_SOURCE_FILES)})")
        if probe:
            out["clips"] = catalog.animate_clip_count(_animate_source_frames(src_root, replace), frame_num, refert)
    return out


def speech(audio, tts_text, tts_prompt_audio, tts_prompt_text, task: str) -> None:
    """s2v's speech: an audio file, or text for CosyVoice with the recording whose voice it takes
    (upstream fills whichever is missing from its examples/ folder without a word)."""
    if audio and tts_text is not None:
        raise UserError("give --audio or --tts-text, not both (--tts-text has CosyVoice speak the text)")
    if tts_text is None:
        for name, value in (("--tts-prompt-audio", tts_prompt_audio), ("--tts-prompt-text", tts_prompt_text)):
            if value is not None:
                raise UserError(f"{name} goes with --tts-text (the words CosyVoice speaks)")
        if not audio:
            raise UserError(f"{task} needs --audio PATH or --tts-text TEXT (upstream would silently use its "
                            "example talk.wav)")
        return
    if not tts_text.strip():
        raise UserError("--tts-text is empty; give the words to speak")
    if not tts_prompt_audio:
        raise UserError("--tts-text needs --tts-prompt-audio PATH, a recording of the voice to speak in "
                        "(upstream would silently use its example zero_shot_prompt.wav)")
    if tts_prompt_text is not None and not tts_prompt_text.strip():
        raise UserError("--tts-prompt-text is empty; give what the prompt recording says, or leave it out")


def s2v_clips(audio_seconds: float, frame_num: int, num_clip: int | None) -> int:
    """The clips WanS2V runs for an audio of this length, at most `num_clip`."""
    clips = catalog.s2v_clip_count(audio_seconds, frame_num, catalog.TASKS["s2v-14B"].fps)
    return min(clips, num_clip) if num_clip else clips


def _probe(read, what: str, path: str):
    from wan22ctl.media import MediaError

    try:
        return read(path)
    except MediaError as exc:
        raise UserError(f"{what} {path}: {exc}") from None


def _animate_source_frames(folder: str, replace: bool) -> int:
    """The pose video's frame count, after checking the folder holds what Wan-Animate opens."""
    from wan22ctl import media

    if not os.path.isdir(folder):
        raise UserError(f"--src-root {folder} is not a folder; make it with `wan22ctl animate-prep`")
    names = catalog.ANIMATE_SOURCE_FILES + (catalog.ANIMATE_REPLACE_FILES if replace else ())
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        mode = "replacement" if replace else "animation"
        hint = " (run animate-prep with --replace)" if replace and set(missing) <= set(catalog.ANIMATE_REPLACE_FILES) else ""
        raise UserError(f"--src-root {folder} lacks {', '.join(missing)} for {mode} mode{hint}")
    _probe(media.image_kind, "reference image", os.path.join(folder, "src_ref.png"))
    frames = {}
    for name in names:
        if name.endswith(".mp4"):
            info = _probe(media.video_info, "video", os.path.join(folder, name))
            if info.frames is None:
                raise UserError(f"video {os.path.join(folder, name)}: not an MP4 (animate-prep writes MP4)")
            frames[name] = info.frames
    if len(set(frames.values())) > 1:
        shown = ", ".join(f"{n} {f}" for n, f in frames.items())
        raise UserError(f"--src-root {folder}: the videos differ in length ({shown} frames); run animate-prep again")
    return frames["src_pose.mp4"]


def placeholder_inputs(task: str) -> dict:
    """Stand-in inputs for a sample request of `task` (doctor's plans): an image where required,
    s2v's audio, animate's folder. Use with file_exists=lambda _: True and probe_inputs=False."""
    t = catalog.TASKS[task]
    values = {"image": "input.png"} if t.needs_image else {}
    if "audio" in t.inputs:
        values["audio"] = "input.wav"
    if "src_root" in t.inputs:
        values["src_root"] = "process_results"
    return values


def apply_preset(task: str, name: str, steps, guide, shift, solver, loras):
    """(steps, guide, shift, solver, loras, warnings) with the preset filled in where not given."""
    preset = catalog.PRESETS.get(name)
    if preset is None:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(catalog.PRESETS)}")
    key = preset.loras.get(task)
    if key is None:
        raise UserError(f"--preset {name} has no distilled LoRA for {task} in the catalog "
                        f"(it has: {', '.join(preset.loras)}); run {task} without it")
    warnings = []
    why = f"leaves the {name} regime ({preset.description})"
    for flag, given, want in (("--steps", steps, preset.sample_steps), ("--guide-scale", guide, preset.guide_scale),
                              ("--shift", shift, preset.sample_shift), ("--solver", solver, preset.solver)):
        if given is not None and given != want:
            warnings.append(f"{flag} {given:g} {why}" if not isinstance(given, str) else f"{flag} {given} {why}")
    model = catalog.MODEL_BY_KEY[key]
    ref = {"file": catalog.lora_folder(model), "scale": 1.0, "expert": None, "catalog": key}
    return (preset.sample_steps if steps is None else steps, preset.guide_scale if guide is None else guide,
            preset.sample_shift if shift is None else shift, preset.solver if solver is None else solver,
            (ref, *[x for x in loras if x != ref]), tuple(warnings))


def regime(request: GenerationRequest) -> str:
    """How the request denoises, in one line: steps, forwards, expert split, guidance, solver."""
    t = catalog.TASKS[request.task]
    guide = (request.guide_scale,) * len(t.guide_scale) if request.guide_scale is not None else t.guide_scale
    split = schedules.expert_split(request.solver, request.sample_steps, request.sample_shift, t.boundary)
    if split is None:
        forwards = request.sample_steps * (1 if guide[0] == 1.0 else 2)
        experts = ""
        shown = f"{guide[0]:g}"
    else:
        low_g, high_g = guide[0], guide[-1]
        forwards = split[0] * (1 if high_g == 1.0 else 2) + split[1] * (1 if low_g == 1.0 else 2)
        experts = f": high-noise expert {split[0]} step(s), low-noise {split[1]}"
        shown = f"{high_g:g}" if high_g == low_g else f"{high_g:g} high-noise / {low_g:g} low-noise"
    cfg = "no CFG, one forward a step" if all(g == 1.0 for g in guide) else \
        "CFG: two forwards a step" if all(g != 1.0 for g in guide) else "CFG where the guide scale is not 1.0"
    if request.preset:
        name = f"distilled ({request.preset})" if not request.warnings else f"{request.preset} preset, changed"
    else:
        name = "standard" if not any(g == 1.0 for g in guide) else "guide 1.0"
    return (f"{name}: {request.sample_steps} steps = {forwards} DiT forwards{experts}; guide scale {shown} ({cfg}), "
            f"{request.solver}, shift {request.sample_shift:g}")


def server_request(task: str, gpus: str | None = None, dtype: str = "bf16") -> GenerationRequest:
    """The request a resident server plans its GPUs and flags with: the task's defaults, and the
    placeholder inputs where the task needs some (images arrive per job; the plan does not depend on them)."""
    return build_request(task, "(resident server)", seed=0, gpus=gpus, dtype=dtype, file_exists=lambda _: True,
                         probe_inputs=False, **placeholder_inputs(task))


def gpu_selection(value: str | None) -> GpuSelection:
    """`--gpus` read as the GPUS setting is (`settings.parse_gpu_selection`); UserError when malformed."""
    try:
        return parse_gpu_selection(value, allow_none=False)
    except ValueError as exc:
        raise UserError(f"--gpus {value!r}: {exc}") from None


# --------------------------------------------------------------------------- memory model


def _is_720p(size: str) -> bool:
    w, h = (int(x) for x in size.split("*"))
    return w * h >= 704 * 1280


def _activations_gb(task: catalog.Task, size: str, multi: bool) -> float:
    """Activation + VAE-decode share of the peak, fitted to the official table."""
    if task.moe:
        if _is_720p(size):
            return 20.5 if multi else 31.2
        return 10.0 if multi else 12.7
    return 12.6 if multi else 12.9


def _expert_gb(task: catalog.Task, bf16: bool, dtype: str = "bf16") -> float:
    # Official DiT weights are stored in fp32; --convert_model_dtype (or FSDP's bf16 compute) halves them;
    # fp8 halves the block linears again (the rest of the expert stays bf16: lowmem.expert_gib).
    if dtype == "fp8":
        return round(task.dit_params_b * 2 * lowmem.expert_gib("fp8") / lowmem.expert_gib("bf16"), 1)
    return task.dit_params_b * (2 if bf16 else 4)


def resident_experts(task: catalog.Task, mem: float, *, offload: bool, convert: bool, t5_cpu: bool,
                     dtype: str = "bf16") -> bool:
    """Whether one process on a GPU of `mem` GB keeps both MoE experts (and T5) resident."""
    if not task.moe or offload:
        return False
    return mem - 2 * _expert_gb(task, convert, dtype) - (0.0 if t5_cpu else catalog.T5_GB) >= RESIDENT_FREE_GB


def estimate_peak_gpu_gb(task: catalog.Task, size: str, nproc: int, *, fsdp: bool, offload: bool,
                         convert: bool, t5_cpu: bool, resident: bool = False, frames: int | None = None,
                         dtype: str = "bf16") -> float:
    """Peak GPU memory of one process (GB) for a flag set; see the module docstring.

    resident: one process keeps both experts on the GPU (`resident_experts`)."""
    if task.dit_dtype == "bf16":
        return _bf16_dit_peak_gb(task, size, frames or task.frame_num, nproc, fsdp=fsdp, offload=offload,
                                 t5_cpu=t5_cpu)
    act = _activations_gb(task, size, multi=nproc > 1)
    if nproc == 1:
        # Single process: upstream keeps only the active expert on the GPU (init_on_cpu); the kit's
        # speedups keep both where they fit.
        dit = _expert_gb(task, convert, dtype) * (2 if resident else 1)
        t5 = 0.0 if (offload or t5_cpu) else catalog.T5_GB
    elif fsdp:
        experts = 2 if (task.moe and not offload) else 1
        dit = experts * _expert_gb(task, bf16=False) / nproc  # FSDP shards keep fp32 storage
        t5 = catalog.T5_GB / nproc
    else:
        dit = _expert_gb(task, convert)
        t5 = 0.0 if (offload or t5_cpu) else catalog.T5_GB
    return round(dit + t5 + act, 1)


def estimate_host_ram_gb(task: catalog.Task, nproc: int, *, fsdp: bool, t5_fsdp: bool, convert: bool,
                         t5_cpu: bool, dtype: str = "bf16") -> float:
    """Host RAM the load needs (GB): every rank reads the full fp32 DiT on the CPU first."""
    if task.dit_dtype == "bf16":
        return _bf16_dit_host_ram_gb(task, nproc, fsdp=fsdp)
    expert_fp32 = _expert_gb(task, bf16=False)
    if nproc == 1:
        if task.moe:
            # Both experts stay on the CPU between switches; the second loads in fp32 beside the first
            # (already quantized with fp8: each expert is quantized as it is built).
            resident = _expert_gb(task, convert, dtype) + expert_fp32
        else:
            resident = expert_fp32
        return round(resident + catalog.T5_GB, 1)
    if fsdp:
        per_rank = expert_fp32 + (0.0 if t5_fsdp else catalog.T5_GB)  # a sharded T5 leaves the CPU at once
    else:
        per_rank = expert_fp32 + (catalog.T5_GB if t5_cpu else 0.0)
    return round(per_rank * nproc, 1)


# --------------------------------------------------------------------------- s2v-14B and animate-14B
# One dense DiT (no experts) that upstream loads in bf16 straight onto the GPU (`from_pretrained(
# torch_dtype=bf16, device_map=gpu)`), and runs once per clip. No official memory table exists for
# either: the activation share is the A14B table's (the same 40-layer, 5120-wide DiT), scaled by
# the clip's pixels and latent frames. The README's only figure: 80 GB for one GPU.

_A14B_720P_TOKENS = 1280 * 720 * 21  # pixels x latent frames of the table's 720P row (81 frames)


def _latent_frames(task: catalog.Task, frames: int) -> int:
    if task.frame_rule == "4n":  # s2v: the clip continues from its motion frames
        return (frames + 3 + catalog.S2V_MOTION_FRAMES) // 4 - (catalog.S2V_MOTION_FRAMES + 3) // 4 + 1
    return frames // 4 + 2  # animate: the clip plus the reference latent


def _bf16_dit_peak_gb(task: catalog.Task, size: str, frames: int, nproc: int, *, fsdp: bool, offload: bool,
                      t5_cpu: bool) -> float:
    w, h = (int(x) for x in size.split("*"))
    scale = w * h * _latent_frames(task, frames) / _A14B_720P_TOKENS
    act = (20.5 if nproc > 1 else 31.2) * scale
    dit = task.dit_params_b * 2 / (nproc if fsdp and nproc > 1 else 1)
    if fsdp and nproc > 1:
        t5 = catalog.T5_GB / nproc
    else:
        t5 = 0.0 if (offload or t5_cpu) else catalog.T5_GB
    return round(dit + t5 + act, 1)


def _bf16_dit_host_ram_gb(task: catalog.Task, nproc: int, *, fsdp: bool) -> float:
    """One process: T5 loads on the CPU and --offload_model parks the bf16 DiT there between clips;
    FSDP: every rank reads the whole bf16 DiT on the CPU before sharding."""
    dit = task.dit_params_b * 2
    if nproc == 1 or not fsdp:
        return round((dit + catalog.T5_GB) * nproc, 1)
    return round(dit * nproc, 1)


def _bf16_dit_flags(task: catalog.Task, request: GenerationRequest, nproc: int, mem: float):
    """(fsdp, offload, convert, t5_cpu, reasons) for s2v-14B / animate-14B, after the README's commands."""
    reasons: list[str] = []
    if nproc == 1:
        fsdp, convert = False, True
        if mem >= BIG_SINGLE_GPU:
            offload, t5_cpu = False, False
            reasons.append(f"--offload_model False --convert_model_dtype: {mem:.0f} GB holds T5 and the bf16 DiT, "
                           "which then stays on the GPU from clip to clip")
        elif mem >= CLASS_80GB:
            offload, t5_cpu = True, False
            reasons.append(f"--offload_model True --convert_model_dtype: the README's single-GPU command for "
                           f"{task.name} (at least 80 GB)")
        else:
            offload, t5_cpu = True, True
            reasons.append(f"--offload_model True --convert_model_dtype --t5_cpu: {mem:.0f} GB is below the 80 GB "
                           f"the README names for {task.name} on one GPU")
    else:
        fsdp, convert, t5_cpu = True, False, False
        reasons.append(f"--dit_fsdp --t5_fsdp: shard the DiT and T5 over {nproc} GPUs, the README's multi-GPU "
                       f"command for {task.name}")
        lean = _bf16_dit_peak_gb(task, request.size, request.frame_num, nproc, fsdp=True, offload=False, t5_cpu=False)
        offload = lean > mem * OFFLOAD_HEADROOM
        reasons.append(f"--offload_model {offload}: about {lean:.0f} GB per GPU "
                       + ("exceeds" if offload else "fits") + f" {mem:.0f} GB")
    forced = {"on": True, "off": False}.get(request.offload)
    if forced is not None and forced != offload:
        offload = forced
        reasons.append(f"--offload_model {forced}: set by --offload {request.offload}")
    reasons.append(f"memory figures for {task.name}: {task.memory_source}")
    return fsdp, offload, convert, t5_cpu, reasons


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LaunchPlan:
    """Everything the container side needs to run one generation, and why.

    The decision (GPUs, launcher, memory flags) is made from the request and the inventory; the
    argv, environment and paths are rendered from it for the `runtime` the agent reported, so the
    plan printed by `--dry-run --json` is the command that runs. A plan carried to a machine with
    another runtime is re-rendered there with `for_runtime`, openly (the agent says so).
    """

    request: dict
    task: str
    gpus: tuple[int, ...]  # container-side indices (nvidia-smi order)
    gpu_names: tuple[str, ...]
    gpu_memory_gb: float  # the smallest GPU of the chosen set
    nproc: int
    launcher: str  # "python" or "torchrun"
    ulysses_size: int
    dit_fsdp: bool
    t5_fsdp: bool
    offload_model: bool
    convert_model_dtype: bool
    t5_cpu: bool
    est_peak_gpu_gb: float
    fits: bool
    host_ram_need_gb: float
    host_ram_gb: float | None
    attention: str
    compile_mode: str
    run_id: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    runtime: Runtime
    dtype: str = "bf16"  # DiT weights (WAN22_DTYPE)
    offload_mode: str = "off"  # off, model (whole experts swap through host copies), blocks (streamed)
    resident_blocks: int | None = None  # with offload_mode blocks: blocks kept on the GPU
    pinned_host_gb: float = 0.0  # page-locked host copies the run keeps (experts, T5)
    regime: str = ""  # steps, forwards, expert split, guidance (`regime()`)
    # rendered from the above for `runtime`
    ckpt_dir: str = ""
    output_dir: str = ""
    save_file: str = ""  # temporary name; the agent moves it to the final name after checking it
    image: str | None = None  # container-side path of the staged image
    inputs: dict[str, str] = field(default_factory=dict)  # s2v/animate input -> its staged container path
    argv: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "LaunchPlan":
        """The plan `to_dict` wrote (what crosses from the host to the agent)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("gpus", "gpu_names", "argv", "reasons", "warnings"):
            fields[key] = tuple(fields.get(key) or ())
        fields["runtime"] = Runtime.from_dict(fields.get("runtime"))
        fields["inputs"] = dict(fields.get("inputs") or {})
        fields.setdefault("compile_mode", (fields.get("env") or {}).get("WAN22_COMPILE", COMPILE_DEFAULT))
        return cls(**fields)

    def for_runtime(self, runtime: Runtime) -> "LaunchPlan":
        """The same decision rendered for `runtime`: argv, environment, folders."""
        model = catalog.model_for_task(self.task)
        image = self.request.get("image")
        save_file = f"{runtime.output_dir}/.partial-{self.run_id}.mp4"
        staged = _container_image_path(runtime.output_dir, self.run_id, image) if image else None
        ckpt_dir = f"{runtime.checkpoint_dir}/{model.subdir}"
        entry = ["-m", BOOTSTRAP_MODULE] if runtime.bootstrap else ["generate.py"]
        if self.nproc == 1:
            argv = [runtime.python, *entry]
        else:
            argv = [runtime.torchrun, "--standalone", f"--nproc_per_node={self.nproc}", *entry]
        req = self.request
        task = catalog.TASKS[self.task]
        inputs = {name: staged_input_path(runtime.output_dir, self.run_id, name, req[name])
                  for name in STAGED_INPUTS if req.get(name)}
        argv += [
            "--task", self.task, "--size", req["size"], "--ckpt_dir", ckpt_dir,
            task.frame_flag, str(req["frame_num"]), "--sample_steps", str(req["sample_steps"]),
            "--sample_shift", _num(req["sample_shift"]), "--sample_solver", req["solver"],
            "--base_seed", str(req["seed"]),
        ]
        if req.get("guide_scale") is not None:
            argv += ["--sample_guide_scale", _num(req["guide_scale"])]
        if staged:
            argv += ["--image", staged]
        argv += task_input_args(req, inputs)
        for ref in req.get("loras") or ():
            flag = {"high": "--lora_high", "low": "--lora_low"}.get(ref.get("expert") or "", "--lora")
            argv += [flag, f"{runtime.checkpoint_dir}/{ref['file']}:{_num(ref['scale'])}"]
        argv += ["--offload_model", str(self.offload_model)]
        if self.convert_model_dtype:
            argv.append("--convert_model_dtype")
        if self.t5_cpu:
            argv.append("--t5_cpu")
        if self.nproc > 1:
            if self.dit_fsdp:
                argv += ["--dit_fsdp", "--t5_fsdp"]
            argv += ["--ulysses_size", str(self.nproc)]
        if task.takes_prompt:
            argv += ["--prompt", req["prompt"]]
        argv += ["--save_file", save_file]
        env = {
            # CUDA's default order (fastest first) need not match nvidia-smi's indices.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in self.gpus),
            "WAN22_ATTENTION": self.attention,
            "WAN22_COMPILE": self.compile_mode,
            "WAN22_DTYPE": self.dtype,
            # read by agent.streaming: blocks streams the DiT; empty leaves the weight placement to agent.speedups
            "WAN22_OFFLOAD": "blocks" if self.offload_mode == "blocks" else "",
            "WAN22_RESIDENT_BLOCKS": str(self.resident_blocks or 0),
            "PYTHONUNBUFFERED": "1",
        }
        if self.offload_mode == "blocks":  # streamed blocks fragment the caching allocator (plan/lowmem.py)
            env["PYTORCH_CUDA_ALLOC_CONF"] = lowmem.STREAM_ALLOC_CONF
        reasons = [r for r in self.reasons if not r.startswith(_BOOTSTRAP_REASON)]
        if runtime.bootstrap:
            env["PYTHONPATH"] = runtime.pythonpath
            reasons.append(f"{_BOOTSTRAP_REASON} to install attention backend {self.attention!r} before `wan` loads")
        else:
            env["WAN22_BOOTSTRAP"] = "0"  # keeps the image's hand-typed hook (wan22ctl-generate.pth) out too
        return replace(self, runtime=runtime, ckpt_dir=ckpt_dir, output_dir=runtime.output_dir, save_file=save_file,
                       image=staged, inputs=inputs, argv=tuple(argv), env=env, cwd=runtime.wan22_dir, reasons=tuple(reasons))

    def command_line(self) -> str:
        """The argv as one shell-quoted line, for humans."""
        import shlex

        return " ".join(shlex.quote(a) for a in self.argv)


_BOOTSTRAP_REASON = f"started through {BOOTSTRAP_MODULE}"

# Inputs besides the image that are copied into the run's staging folder (host paths in the request).
STAGED_INPUTS = ("audio", "pose_video", "tts_prompt_audio", "src_root")


def staged_input_path(output_dir: str, run_id: str, name: str, host_path: str) -> str:
    """Where input `name` lies in the container for the run: one folder per input, so names never clash."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(host_path.rstrip("/"))) or name
    return f"{output_dir}/.staging/{run_id}/{name}/{base}"


def staged_files(plan: "LaunchPlan") -> list[tuple[str, str]]:
    """(host file, container file) for every s2v/animate input the run copies in; of an animate
    folder only the files Wan-Animate opens."""
    files = []
    for name, target in plan.inputs.items():
        source = plan.request[name]
        if name == "src_root":
            names = catalog.ANIMATE_SOURCE_FILES + (catalog.ANIMATE_REPLACE_FILES if plan.request.get("replace") else ())
            files += [(os.path.join(source, n), f"{target}/{n}") for n in names]
        else:
            files.append((source, target))
    return files


def task_input_args(req: dict, inputs: dict[str, str]) -> list[str]:
    """generate.py's s2v / animate flags for a request whose inputs are staged at `inputs`."""
    args: list[str] = []
    if "audio" in inputs:
        args += ["--audio", inputs["audio"]]
    if "pose_video" in inputs:
        args += ["--pose_video", inputs["pose_video"]]
    if req.get("num_clip"):
        args += ["--num_clip", str(req["num_clip"])]
    if req.get("start_from_ref"):
        args.append("--start_from_ref")
    if req.get("tts_text") is not None:
        args += ["--enable_tts", "--tts_prompt_audio", inputs["tts_prompt_audio"], "--tts_text", req["tts_text"]]
        if req.get("tts_prompt_text") is not None:
            args += ["--tts_prompt_text", req["tts_prompt_text"]]
    if "src_root" in inputs:
        args += ["--src_root_path", inputs["src_root"], "--refert_num", str(req["refert_num"])]
    if req.get("replace"):
        args.append("--replace_flag")
    if req.get("relighting_lora"):
        args.append("--use_relighting_lora")
    return args


def _select_gpus(request: GenerationRequest, inventory: Sequence[Gpu]) -> tuple[list[Gpu], bool]:
    """(GPUs the user allows, whether the user fixed the count)."""
    if not inventory:
        raise UserError("no GPU is visible (nvidia-smi found none); generation needs at least one",
                        fix="check `wan22ctl status` and GPUS in .env; with --gpu-count plan offline")
    selection = gpu_selection(request.gpus)
    if selection.kind == "all":
        return list(inventory), False
    if selection.kind == "count":
        if selection.count > len(inventory):
            raise UserError(f"--gpus {selection.count}: only {len(inventory)} GPU(s) visible")
        return sorted(inventory, key=lambda g: -g.memory_gb)[:selection.count], True
    by_index = {g.index: g for g in inventory}
    missing = [i for i in selection.ids if i not in by_index]
    if missing:
        raise UserError(f"--gpus: no GPU with index {', '.join(map(str, missing))} "
                        f"(visible: {', '.join(str(g.index) for g in inventory)})")
    return [by_index[i] for i in selection.ids], True


def low_memory_placement(task: catalog.Task, request: GenerationRequest, mem: float,
                         kit: bool = True) -> lowmem.Placement | None:
    """How one GPU of `mem` GB below the README's 80 GB holds the active A14B expert (whole, or
    streamed block by block; plan/lowmem.py), or None where the README's own flags apply.

    kit: Wan starts through the kit's bootstrap, whose speedups place the weights (else upstream's
    generate.py runs as is and only its own flags exist)."""
    if not task.moe or request.offload in ("on", "off") or not kit:
        return None
    if request.offload == "blocks" or mem < CLASS_80GB:
        return lowmem.placement(mem, request.size, request.dtype, force_blocks=request.offload == "blocks")
    return None


def _memory_flags(task: catalog.Task, request: GenerationRequest, nproc: int, mem: float, kit: bool = True):
    """(fsdp, offload, convert, t5_cpu, reasons, low-memory placement) for `nproc` processes on GPUs of `mem` GB."""
    reasons: list[str] = []
    forced = {"on": True, "off": False}.get(request.offload)
    budget = mem * OFFLOAD_HEADROOM
    low = None
    if nproc == 1:
        fsdp = False
        if task.moe:
            convert = True
            reasons.append("--convert_model_dtype: bf16 DiT on one GPU, as in the README's single-GPU command")
            if request.dtype == "fp8":
                reasons.append("--dtype fp8: the block linears in float8 e4m3 (per-channel weight, per-token "
                               f"activation scales), quantized at load: an expert is {lowmem.expert_gib('fp8'):.1f} GB "
                               f"instead of {lowmem.expert_gib('bf16'):.1f} GB")
            low = low_memory_placement(task, request, mem, kit)
            if low is not None:
                offload, t5_cpu = True, False
                reasons.append(low.reason)
                reasons.append("--offload_model True without --t5_cpu: T5 visits the GPU only to encode and the "
                               "experts only to denoise, each through its page-locked host copy (T5 on the CPU "
                               "is very slow, issue #282)")
            elif mem >= BIG_SINGLE_GPU:
                offload, t5_cpu = False, False
                if resident_experts(task, mem, offload=False, convert=True, t5_cpu=False, dtype=request.dtype):
                    reasons.append(f"--offload_model False: {mem:.0f} GB holds T5 and both bf16 experts; they stay "
                                   "on the GPU from the load on (WAN22_FAST_SWAP), no swap at the expert switch")
                else:
                    reasons.append(f"--offload_model False: {mem:.0f} GB holds T5 and the active bf16 expert")
            elif mem >= CLASS_80GB:
                offload, t5_cpu = True, False
                reasons.append("--offload_model True: README single-GPU command for 80 GB GPUs")
            else:
                offload, t5_cpu = True, True
                reasons.append(f"--offload_model True --t5_cpu: {mem:.0f} GB is below the 80 GB the README "
                               "names for A14B on one GPU; README: add --t5_cpu on OOM")
        else:
            if mem >= CLASS_80GB:
                offload, convert, t5_cpu = False, False, False
                reasons.append("no memory flags: README says to drop --offload_model, --convert_model_dtype "
                               "and --t5_cpu on GPUs with 80 GB or more, for speed")
            elif mem >= CLASS_48GB:
                offload, convert, t5_cpu = True, True, False
                reasons.append(f"--offload_model True --convert_model_dtype: {mem:.0f} GB fits the bf16 DiT "
                               "with T5 on the GPU only while encoding (--t5_cpu is very slow, issue #282)")
            else:
                offload, convert, t5_cpu = True, True, True
                reasons.append("--offload_model True --convert_model_dtype --t5_cpu: README command for 24 GB GPUs")
    else:
        if task.moe or mem >= CLASS_48GB:
            fsdp, convert, t5_cpu = True, False, False
            reasons.append(f"--dit_fsdp --t5_fsdp: shard the DiT and T5 over {nproc} GPUs, as in the README's "
                           "multi-GPU command (--convert_model_dtype and --t5_cpu do not apply with FSDP)")
            lean = estimate_peak_gpu_gb(task, request.size, nproc, fsdp=True, offload=False, convert=False, t5_cpu=False)
            offload = lean > budget
            if offload:
                reasons.append(f"--offload_model True: about {lean:.0f} GB per GPU with both experts resident "
                               f"exceeds {mem:.0f} GB; offloading keeps only the active expert")
            else:
                reasons.append("--offload_model False: upstream's multi-GPU default; everything fits "
                               f"(about {lean:.0f} GB per GPU)")
        else:
            fsdp, offload, convert, t5_cpu = False, True, True, True
            reasons.append("--offload_model True --convert_model_dtype --t5_cpu without FSDP: the official "
                           "efficiency table's multi-GPU setup for TI2V-5B on 24 GB GPUs")
    if forced is not None and forced != offload:
        offload = forced
        reasons.append(f"--offload_model {forced}: set by --offload {request.offload}")
    return fsdp, offload, convert, t5_cpu, reasons, low


def _container_image_path(output_dir: str, run_id: str, host_image: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(host_image)) or "image"
    return f"{output_dir}/.staging/{run_id}/{name}"


def plan_launch(
    request: GenerationRequest,
    inventory: Sequence[Gpu],
    host_ram_gb: float | None = None,
    *,
    run_id: str,
    attention: str = ATTENTION_DEFAULT,
    compile_mode: str = COMPILE_DEFAULT,
    runtime: Runtime = Runtime(),
) -> LaunchPlan:
    """Decide how to run `request` on `inventory`; the result is what the agent executes.

    With `runtime.bootstrap` (the image's default) Wan starts through `python -m
    wan22ctl.agent.wanrun`, which installs the attention backend (SDPA/cuDNN unless
    WAN22_ATTENTION says otherwise; the image needs no flash-attn) and the speedups before `wan`
    is imported; without it upstream's generate.py runs as is (flash-attn required).
    """
    task = catalog.TASKS[request.task]
    if not runtime.bootstrap and (request.dtype == "fp8" or request.offload == "blocks"):
        raise UserError("--dtype fp8 and --offload blocks need the kit's bootstrap (wan22ctl.agent.wanrun), "
                        "which this container's WAN22_BOOTSTRAP=0 leaves out")
    if not runtime.bootstrap and (request.loras or request.solver == "euler"):
        raise UserError("LoRAs and the euler solver need the kit's bootstrap (wan22ctl.agent.wanrun); "
                        "upstream's generate.py has neither")
    if request.tts_text is not None and runtime.tts is False:
        raise EnvError("--tts-text needs CosyVoice's packages (Wan2.2's requirements_s2v.txt), which this image was "
                       "built without", fix="set WAN_S2V_TTS=true in .env and run `wan22ctl up` (it rebuilds the image)")
    allowed, fixed = _select_gpus(request, inventory)
    heads = task.num_heads
    reasons: list[str] = []
    warnings: list[str] = list(request.warnings)
    if fixed and heads % len(allowed):
        ok = [n for n in catalog.ulysses_degrees(heads, 64) if n <= len(inventory)]
        raise UserError(f"--gpus {request.gpus}: {request.task} splits its {heads} attention heads over the GPUs, "
                        f"so the count must divide {heads}; usable here: {', '.join(map(str, ok))}")
    degrees = catalog.ulysses_degrees(heads, len(allowed))
    nproc = max(degrees)
    if nproc < len(allowed):
        reasons.append(f"{nproc} of {len(allowed)} GPUs: Ulysses needs a GPU count dividing the {heads} attention "
                       f"heads of {request.task}")
    candidates = [n for n in reversed(degrees) if n <= nproc]

    def flags_for(n: int):
        chosen = sorted(allowed, key=lambda g: -g.memory_gb)[:n] if n < len(allowed) else list(allowed)
        mem = min(g.memory_gb for g in chosen)
        if task.dit_dtype == "bf16":
            fsdp, offload, convert, t5_cpu, why = _bf16_dit_flags(task, request, n, mem)
            low = None
        else:
            fsdp, offload, convert, t5_cpu, why, low = _memory_flags(task, request, n, mem, runtime.bootstrap)
        ram = estimate_host_ram_gb(task, n, fsdp=fsdp, t5_fsdp=fsdp, convert=convert, t5_cpu=t5_cpu,
                                   dtype=request.dtype)
        return chosen, mem, fsdp, offload, convert, t5_cpu, why, ram, low

    def outcome(n: int, c) -> tuple[bool, float, bool]:
        """(both experts resident, peak GB per GPU, fits) of plan choice `c` on `n` GPUs."""
        _, mem, fsdp, offload, convert, t5_cpu, _, _, low = c
        if low is not None:
            return False, low.peak_gib, low.fits
        resident = n == 1 and resident_experts(task, mem, offload=offload, convert=convert, t5_cpu=t5_cpu,
                                               dtype=request.dtype)
        peak = estimate_peak_gpu_gb(task, request.size, n, fsdp=fsdp, offload=offload, convert=convert,
                                    t5_cpu=t5_cpu, resident=resident, frames=request.frame_num, dtype=request.dtype)
        # The table's peaks were measured on these very cards (22.9 GB on a 24 GB 4090): no extra margin.
        return resident, peak, peak <= mem

    one_process = [flag for flag, on in (("--dtype fp8", request.dtype == "fp8"),
                                         ("--offload blocks", request.offload == "blocks")) if on]
    if one_process and nproc > 1:
        if fixed:
            raise UserError(f"{' and '.join(one_process)} run(s) on one GPU (float8 weights and streamed blocks are "
                            f"not FSDP-sharded); use --gpus 1 or drop --gpus {request.gpus}")
        reasons.append(f"1 of {nproc} GPUs: {' and '.join(one_process)} run(s) in one process (float8 weights and "
                       "streamed blocks are not FSDP-sharded)")
        nproc = 1
    choice = flags_for(nproc)
    if host_ram_gb is not None and choice[7] > host_ram_gb and not fixed:
        for n in [c for c in candidates[1:] if c < nproc]:
            smaller = flags_for(n)
            if smaller[7] <= host_ram_gb:
                reasons.append(f"{n} GPU(s) instead of {nproc}: every rank loads the full weights on the CPU "
                               f"first; {nproc} ranks need about {choice[7]:.0f} GB of host RAM, "
                               f"{host_ram_gb:.0f} GB is available")
                nproc, choice = n, smaller
                break
    if nproc > 1 and task.moe and not fixed and not outcome(nproc, choice)[2]:
        # the sharded experts do not fit these cards; one of them streams or swaps within its memory
        single = flags_for(1)
        if single[8] is not None and outcome(1, single)[2]:
            reasons.append(f"1 GPU instead of {nproc}: {nproc} x {choice[1]:.0f} GB cannot hold the FSDP-sharded "
                           f"experts (about {outcome(nproc, choice)[1]:.0f} GB per GPU); one GPU runs A14B in "
                           f"{choice[1]:.0f} GB with the low-memory placement below")
            nproc, choice = 1, single
    chosen, mem, fsdp, offload, convert, t5_cpu, why, ram_need, low = choice
    chosen = sorted(chosen, key=lambda g: g.index)
    if nproc == 1:
        reasons.insert(0, "python generate.py: one GPU, one process")
    else:
        reasons.insert(0, f"torchrun --nproc_per_node={nproc} with --ulysses_size {nproc}: {nproc} GPUs, "
                          f"{heads} heads divisible by {nproc}")
    reasons += why
    if request.dtype == "fp8":
        reasons.append(_fp8_gpu_check(chosen))
    resident, peak, fits = outcome(nproc, choice)
    if not fits:
        if low is not None:
            warnings.append(f"{request.task} at {request.size} on 1 x {mem:.0f} GB needs about {peak + lowmem.MARGIN_GIB:.0f} GB "
                            "even with the DiT blocks streamed; expect CUDA out of memory: use a 480P size, "
                            "--dtype fp8, a bigger GPU, or ti2v-5B")
        else:
            warnings.append(f"{request.task} at {request.size} on {nproc} x {mem:.0f} GB needs about {peak:.0f} GB "
                            "per GPU (official table); expect CUDA out of memory: use more GPUs, a 480P size, or ti2v-5B")
    pinned = 0.0
    if nproc == 1 and task.moe and not resident:
        pinned = lowmem.pinned_host_gib(request.dtype, t5_pinned=offload and not t5_cpu)
        reasons.append(f"page-locked host copies: about {pinned:.0f} GB of host RAM stay pinned for the run "
                       f"(each {request.dtype} expert{' and T5' if offload and not t5_cpu else ''})")
    if host_ram_gb is not None and ram_need > host_ram_gb:
        warnings.append(f"loading needs about {ram_need:.0f} GB of host RAM ({nproc} rank(s) each read the weights "
                        f"on the CPU), {host_ram_gb:.0f} GB is available: the load may be killed")
    if host_ram_gb is None:
        reasons.append(f"host RAM not checked (unknown); loading needs about {ram_need:.0f} GB")
    streamed = low is not None and low.mode == "blocks"

    return LaunchPlan(
        request=request.to_dict(), task=request.task, gpus=tuple(g.index for g in chosen),
        gpu_names=tuple(g.name for g in chosen), gpu_memory_gb=mem, nproc=nproc,
        launcher="python" if nproc == 1 else "torchrun", ulysses_size=nproc, dit_fsdp=fsdp and nproc > 1,
        t5_fsdp=fsdp and nproc > 1, offload_model=offload, convert_model_dtype=convert, t5_cpu=t5_cpu,
        est_peak_gpu_gb=peak, fits=fits, host_ram_need_gb=ram_need, host_ram_gb=host_ram_gb,
        attention=attention, compile_mode=compile_mode, run_id=run_id, reasons=tuple(reasons),
        warnings=tuple(warnings), runtime=runtime, dtype=request.dtype, regime=regime(request),
        offload_mode="blocks" if streamed else "model" if offload else "off",
        resident_blocks=low.resident_blocks if streamed else None, pinned_host_gb=pinned,
    ).for_runtime(runtime)


def _fp8_gpu_check(chosen: Sequence[Gpu]) -> str:
    """The reason line for --dtype fp8 on these GPUs; UserError where one lacks FP8 tensor cores."""
    for g in chosen:
        if g.compute_cap and g.compute_cap not in FP8_COMPUTE_CAPS:
            raise UserError(f"--dtype fp8 needs FP8 tensor cores (compute capability 8.9 Ada or 9.0 Hopper); GPU "
                            f"{g.index} ({g.name}) is {g.compute_cap}: use --dtype bf16")
    if all(g.compute_cap for g in chosen):
        return f"--dtype fp8: compute capability {chosen[0].compute_cap} has FP8 tensor cores"
    return "--dtype fp8: compute capability not known here (offline plan); it needs 8.9 (Ada) or 9.0 (Hopper)"


def _num(value: float) -> str:
    return f"{value:g}"


def synthetic_inventory(count: int, memory_gb: float, name: str | None = None) -> list[Gpu]:
    """GPUs described on the command line (`plan --gpu-count 4 --gpu-mem-gb 80`), for offline plans."""
    if count < 1:
        raise UserError("--gpu-count must be at least 1")
    if not memory_gb > 0:
        raise UserError("--gpu-mem-gb must be greater than 0")
    label = name or f"GPU {memory_gb:g} GB (given)"
    return [Gpu(i, label, float(memory_gb), "", "") for i in range(count)]
