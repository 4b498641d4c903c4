"""The resident pipeline: Wan2.2's own `WanT2V`/`WanI2V`/`WanTI2V`/`WanS2V` built once, then one job per call.

Construction mirrors Wan2.2's `generate.py` at the pinned commit (same constructor arguments,
same per-task `generate()` call, `offload_model` defaulting to True on one process and False
under torchrun; s2v's speech merged into the saved video with `merge_video_audio`, as
generate.py does). The pipeline classes come from a *backend*: the real `wan` package, or any
module with the same surface (`WanT2V`, `WanI2V`, `WanTI2V`, `WanS2V`, `WAN_CONFIGS`,
`SIZE_CONFIGS`, `MAX_AREA_CONFIGS`, `save_video`, `merge_video_audio`; optionally
`load_image`), which is how CPU tests run the server against a stand-in.

Upstream has no progress callback. Each sampling loop is `for _, t in enumerate(tqdm(timesteps))`
with `tqdm` imported into the pipeline's module, so the engine replaces that module-level name
with a wrapper (upstream files are not edited): the wrapper reports each step (index, total,
timestep, expert, seconds, clip) and, before each step, asks the control channel whether to
stop — on every rank at the same step, so no rank is left waiting in a collective. WanS2V runs
that loop once per clip; each new loop of a job is its next clip.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("wan22ctl.server")


class JobCancelled(Exception):
    """Raised inside the sampling loop when the job was cancelled; all ranks raise it at one step."""


class ServerStopping(Exception):
    """Raised inside the sampling loop when the server shuts down; the job goes back to the queue."""


@dataclass
class Backend:
    """Where the pipeline classes and their helpers come from."""

    name: str
    module: Any  # the module the classes were read from
    classes: dict[str, type]  # "t2v" / "i2v" / "ti2v" / "s2v" -> class
    configs: Any  # WAN_CONFIGS
    size_configs: dict
    max_area_configs: dict
    save_video: Callable
    merge_video_audio: Callable  # s2v: the speech into the saved video (ffmpeg), in place
    load_image: Callable
    init_distributed_group: Callable | None = None


def _pil_loader(path: str):
    from PIL import Image

    return Image.open(path).convert("RGB")


def load_backend(name: str, wan_dir: str | None = None, offload: bool | None = None) -> Backend:
    """The real `wan` package (name "wan"), or a module/file with the same surface (a stand-in).

    offload: the pipeline's offload_model (where the speedups stage the MoE weights)."""
    if name == "wan":
        wan_dir = wan_dir or os.environ.get("WAN22_DIR", "/workspace/wan2.2")
        if wan_dir not in sys.path:
            sys.path.insert(0, wan_dir)
        _install_attention(offload)
        import wan  # noqa: F401  (Wan2.2, cloned into the image)
        from wan.configs import MAX_AREA_CONFIGS, SIZE_CONFIGS, WAN_CONFIGS
        from wan.distributed.util import init_distributed_group
        from wan.utils.utils import merge_video_audio, save_video

        return Backend("wan", wan, {"t2v": wan.WanT2V, "i2v": wan.WanI2V, "ti2v": wan.WanTI2V, "s2v": wan.WanS2V},
                       WAN_CONFIGS, SIZE_CONFIGS, MAX_AREA_CONFIGS, save_video, merge_video_audio, _pil_loader,
                       init_distributed_group)
    if name.endswith(".py"):
        spec = importlib.util.spec_from_file_location("wan22ctl_pipeline_backend", name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(name)
    return Backend(name, module, {"t2v": module.WanT2V, "i2v": module.WanI2V, "ti2v": module.WanTI2V,
                                  "s2v": module.WanS2V},
                   module.WAN_CONFIGS, module.SIZE_CONFIGS, module.MAX_AREA_CONFIGS, module.save_video,
                   module.merge_video_audio, getattr(module, "load_image", _pil_loader),
                   getattr(module, "init_distributed_group", None))


def _install_attention(offload: bool | None = None) -> None:
    """What `generate` runs with (wan22ctl.agent.wanrun): the attention backend of WAN22_ATTENTION and
    the switched-on speedups, installed before `wan` is imported."""
    from wan22ctl.agent import attention, euler, fp8, fp8attn, speedups, streaming

    # WAN22_DTYPE / WAN22_FP8_ATTENTION / WAN22_OFFLOAD: a bad value stops the start here
    fp8.requested(), streaming.requested()
    eight_bit = fp8attn.mode()
    weights = "fp8" if fp8.requested() else "bf16"
    log.info("attention backend: %s; speedups: %s; weights %s%s", attention.install(),
             ", ".join(name for name, on in speedups.install(offload=offload).items() if on) or "none",
             weights + (f" (self-attention in 8 bits: {eight_bit})" if eight_bit else ""),
             f", DiT blocks streamed ({streaming.resident_blocks()} resident)" if streaming.requested() else "")
    euler.install()  # requests may ask for sample_solver "euler" (the Lightning preset)


def pipeline_kind(task: str) -> str:
    """Which class serves a task, chosen the way generate.py chooses it."""
    if "s2v" in task:
        return "s2v"
    if "ti2v" in task:
        return "ti2v"
    if "t2v" in task:
        return "t2v"
    return "i2v"


@dataclass(frozen=True)
class PipelineOptions:
    """The construction plan: the same flags `generate` passes to generate.py."""

    task: str
    ckpt_dir: str
    offload_model: bool | None = None  # None: True on one process, False under torchrun (generate.py's rule)
    ulysses_size: int = 1
    t5_fsdp: bool = False
    dit_fsdp: bool = False
    t5_cpu: bool = False
    convert_model_dtype: bool = False

    def resolved_offload(self, world_size: int) -> bool:
        return self.offload_model if self.offload_model is not None else world_size == 1


# ---------------------------------------------------------------------------- progress hook


@dataclass
class StepReport:
    """What the wrapper tells the job's owner after each step (and at the loop's start/end)."""

    phase: str  # "denoising" while the loop runs, "decoding" after its last step
    step: int  # steps completed
    total: int
    expert: str | None  # expert of the step now running: "high_noise"/"low_noise" (A14B MoE), None (ti2v-5B)
    step_seconds: float | None  # the step just completed (None before the first)
    clip: int = 1  # the clip this loop denoises (s2v runs one loop a clip); step and total are the clip's


@dataclass
class JobHooks:
    """Per-job callbacks the wrapper calls: `should_stop(step)` on every rank, `report` on rank 0."""

    should_stop: Callable[[int], str | None]  # None to go on, "cancel" or "shutdown" to stop
    report: Callable[[StepReport], None]
    boundary: float | None = None  # timestep at or above which the high-noise expert runs
    loops: int = 0  # sampling loops the job has started: the clip now running


_current = threading.local()


def _expert(t, boundary: float | None) -> str | None:
    if boundary is None:
        return None
    value = float(t.item() if hasattr(t, "item") else t)
    return "high_noise" if value >= boundary else "low_noise"


def _hooked_loop(iterable, hooks: JobHooks):
    items = list(iterable) if not hasattr(iterable, "__len__") else iterable
    total = len(items)
    hooks.loops += 1
    clip = hooks.loops
    last = None
    for i, t in enumerate(items):
        now = time.monotonic()
        # step i is about to run on this expert; the one before it took now - last
        hooks.report(StepReport("denoising", i, total, _expert(t, hooks.boundary), None if i == 0 else now - last,
                                clip))
        stop = hooks.should_stop(i)
        if stop == "cancel":
            raise JobCancelled(f"cancelled before step {i + 1} of {total}")
        if stop == "shutdown":
            raise ServerStopping(f"server stopping before step {i + 1} of {total}")
        last = time.monotonic()
        yield t
    if total:
        hooks.report(StepReport("decoding", total, total, _expert(items[-1], hooks.boundary), time.monotonic() - last,
                                clip))


def install_progress_hook(backend: Backend) -> list[str]:
    """Replace `tqdm` in each pipeline class's module with the step wrapper; the modules patched.

    The wrapper passes through to the original `tqdm` when no job is running on this thread,
    so anything else in those modules that uses a progress bar is unaffected.
    """
    patched = []
    for cls in backend.classes.values():
        module = sys.modules[cls.__module__]
        original = getattr(module, "tqdm", None)
        if original is None or getattr(original, "_wan22ctl_hook", False):
            continue

        def tqdm(iterable=None, *args, _original=original, **kwargs):
            hooks = getattr(_current, "hooks", None)
            if hooks is None or iterable is None:
                return _original(iterable, *args, **kwargs)
            return _hooked_loop(iterable, hooks)

        tqdm._wan22ctl_hook = True
        module.tqdm = tqdm
        patched.append(module.__name__)
    return patched


# ---------------------------------------------------------------------------- the engine


@dataclass
class Engine:
    """One loaded pipeline on one rank, and how to run a job on it."""

    backend: Backend
    options: PipelineOptions
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    pipeline: Any = None
    load_seconds: float | None = None
    hooked_modules: list[str] = field(default_factory=list)

    @property
    def config(self):
        return self.backend.configs[self.options.task]

    def load(self) -> None:
        """Build the pipeline once (the slow part: T5, VAE and the DiT experts)."""
        started = time.monotonic()
        self.hooked_modules = install_progress_hook(self.backend)
        if not self.hooked_modules:
            log.warning("no tqdm found in the pipeline modules: no per-step progress, cancel waits for the job's end")
        cls = self.backend.classes[pipeline_kind(self.options.task)]
        o = self.options
        self.pipeline = cls(
            config=self.config, checkpoint_dir=o.ckpt_dir, device_id=self.local_rank, rank=self.rank,
            t5_fsdp=o.t5_fsdp, dit_fsdp=o.dit_fsdp, use_sp=o.ulysses_size > 1, t5_cpu=o.t5_cpu,
            convert_model_dtype=o.convert_model_dtype,
        )
        self.load_seconds = time.monotonic() - started

    def boundary(self) -> float | None:
        b = getattr(self.config, "boundary", None)
        return None if b is None else b * self.config.num_train_timesteps

    def run(self, params: dict, seed: int, hooks: JobHooks):
        """Run one job on this rank through upstream's `generate()`; the video on rank 0, else None.

        Uploads are read from the paths the service staged them at (`image_path`, s2v's
        `audio_path` and `pose_video_path`)."""
        b = self.backend
        size = params["size"]
        guide = params["sample_guide_scale"]
        guide = tuple(float(g) for g in guide) if isinstance(guide, (list, tuple)) else float(guide)
        common = dict(
            shift=float(params["sample_shift"]), sample_solver=params["sample_solver"],
            sampling_steps=int(params["sample_steps"]), guide_scale=guide,
            n_prompt=params.get("negative_prompt") or "", seed=int(seed),
            offload_model=self.options.resolved_offload(self.world_size),
        )
        frames = int(params["frame_num"])
        image_path = params.get("image_path")
        kind = pipeline_kind(self.options.task)
        hooks.boundary = self.boundary()
        _current.hooks = hooks
        try:
            if kind == "s2v":  # generate.py's call; the speech is always a recording here (no TTS)
                return self.pipeline.generate(
                    input_prompt=params["prompt"], ref_image_path=image_path, audio_path=params["audio_path"],
                    enable_tts=False, tts_prompt_audio=None, tts_prompt_text=None, tts_text=None,
                    num_repeat=params["num_clip"], pose_video=params.get("pose_video_path"),
                    max_area=b.max_area_configs[size], infer_frames=frames,
                    init_first_frame=params["start_from_ref"], **common)
            img = b.load_image(image_path) if image_path else None
            if kind == "t2v":
                return self.pipeline.generate(params["prompt"], size=b.size_configs[size], frame_num=frames, **common)
            if kind == "ti2v":
                return self.pipeline.generate(params["prompt"], img=img, size=b.size_configs[size],
                                              max_area=b.max_area_configs[size], frame_num=frames, **common)
            return self.pipeline.generate(params["prompt"], img, max_area=b.max_area_configs[size], frame_num=frames,
                                          **common)
        finally:
            _current.hooks = None

    def after_interrupted(self) -> None:
        """Leave the GPU as a finished job leaves it after a cancel or failure.

        Upstream's generate() ends (with offload_model) by moving the DiT expert(s) to the CPU and
        emptying the cache; a job stopped mid-loop skips that, so do it here. Call after the
        exception is gone (its traceback keeps the step's tensors alive).
        """
        if self.options.resolved_offload(self.world_size) and not self.options.dit_fsdp:
            for name in ("low_noise_model", "high_noise_model", "model", "noise_model"):
                model = getattr(self.pipeline, name, None)
                if model is not None and hasattr(model, "cpu"):
                    model.cpu()
        videosave = sys.modules.get("wan22ctl.agent.videosave")
        if videosave is not None:  # a video decoded but never saved: drop its stream
            videosave.discard()
        release_cached_memory()

    def save(self, video, temp_path: str, audio_path: str | None = None) -> None:
        """Write the video as generate.py does (s2v: with `audio_path` merged in), then check it:
        upstream's save_video and merge_video_audio only log their errors."""
        from wan22ctl.agent.outputs import check_mp4

        self.backend.save_video(tensor=video[None], save_file=temp_path, fps=self.config.sample_fps, nrow=1,
                                normalize=True, value_range=(-1, 1))
        if audio_path is not None:
            failure = logged_failure("merge_video_audio failed",
                                     lambda: self.backend.merge_video_audio(video_path=temp_path, audio_path=audio_path))
            if failure is not None:  # upstream logs it and leaves the video silent
                raise RuntimeError(f"the speech was not merged into the video (upstream: {failure})")
        problem = check_mp4(temp_path)
        if problem:
            raise RuntimeError(f"the video written by save_video is unusable: {problem}")
        with open(temp_path, "rb") as f:
            os.fsync(f.fileno())


def logged_failure(marker: str, call) -> str | None:
    """Run `call()`; the first log message containing `marker` that it logged (upstream's helpers log
    their failures instead of raising them), else None."""
    import logging

    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if marker in message:
                seen.append(message)

    handler = Catch(level=logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        call()
    finally:
        root.removeHandler(handler)
    return seen[0].splitlines()[0] if seen else None


def release_cached_memory() -> None:
    """Give cached CUDA blocks back after a job, so the GPU holds only the resident weights.

    Without CUDA there is nothing to give back, and the full collection would only hold the GIL
    (tens of ms with torch's heap) while HTTP requests wait."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    import gc

    gc.collect()  # cyclic garbage may still hold the job's CUDA tensors
    torch.cuda.empty_cache()
