"""Every option more than one command takes, declared once as a Typer `Annotated` alias.

Options that travel together are one table each: `REQUEST_OPTIONS` (what to generate: task,
size, steps, ...) and `OFFLINE_GPU_OPTIONS` (the machine to plan for without Docker). A command
decorated with `@bundle(...)` takes a table's options and receives them as one object
(`batch.RequestOptions`, `OfflineGpus`). A new request option is a line here, a field in
`RequestOptions` and its rule in `plan.launch.build_request`; `generate`, `plan`, their --help and
the prompt file's JSON keys follow.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from wan22ctl.batch import RequestOptions

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of text.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop; nothing is changed.")]
StackOpt = Annotated[str, typer.Option("--stack", help="Which stack: main (Wan2.2) or videox-fun.")]

# -- generate / plan: where the prompts come from, and the machine to plan for without Docker
PromptOpt = Annotated[Optional[str], typer.Option("--prompt", help="What to generate.")]
PromptFileOpt = Annotated[Optional[Path], typer.Option("--prompt-file", help="A batch: one prompt a line, or JSONL lines with per-line options.")]

# -- download / verify
SelectorsArg = Annotated[list[str], typer.Argument(help="Models: t2v, i2v, ti2va (= t2v + i2v), ti2v-5b, s2v, animate, cosyvoice (s2v's text-to-speech), all-wan, the VideoX-Fun models (fun-control, fun-a14b, ...: see README), or a repo id.")]
LocalOpt = Annotated[bool, typer.Option("--local", help="Run on the host instead of in the container.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Files transferred (or hashed) in parallel.")]
RevisionOpt = Annotated[str, typer.Option("--revision", help="Branch, tag or commit of the repos.")]

# -- jobs on the resident server
JobIdArg = Annotated[str, typer.Argument(help="The job id (video_...).")]

# The request options: parameter name -> (Annotated type, default; ... means required).
REQUEST_OPTIONS: dict[str, tuple[Any, Any]] = {
    "task": (Annotated[str, typer.Option("--task", help="t2v-A14B, i2v-A14B, ti2v-5B, s2v-14B or animate-14B (required).")], ...),
    "size": (Annotated[Optional[str], typer.Option("--size", help="WIDTH*HEIGHT (or WIDTHxHEIGHT); default per task (ti2v-5B: 1280*704).")], None),
    "image": (Annotated[Optional[Path], typer.Option("--image", help="Input image (required for i2v-A14B and s2v-14B, optional for ti2v-5B).")], None),
    "frame_num": (Annotated[Optional[int], typer.Option("--frame-num", help="Frames, 4n+1 (default 81; ti2v-5B 121; animate-14B 77 a clip); s2v-14B: frames a clip, a multiple of 4 (default 80).")], None),
    "steps": (Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (default 40; ti2v-5B 50; animate-14B 20).")], None),
    "shift": (Annotated[Optional[float], typer.Option("--shift", help="Flow-matching shift (default per task).")], None),
    "guide_scale": (Annotated[Optional[float], typer.Option("--guide-scale", help="Classifier-free guidance (applies to both A14B experts).")], None),
    "seed": (Annotated[Optional[int], typer.Option("--seed", help="Seed (default: drawn at random and recorded in the sidecar).")], None),
    "solver": (Annotated[Optional[str], typer.Option("--solver", help="unipc (default), dpm++ or euler (the Lightning sampler).")], None),
    "preset": (Annotated[Optional[str], typer.Option("--preset", help="lightning: the 4-step distilled Wan2.2-Lightning LoRAs (4 steps, guide 1.0, euler, shift 5); `wan22ctl download lightning-t2v` first.")], None),
    "lora": (Annotated[Optional[list[str]], typer.Option("--lora", help="FILE[:SCALE] under CHECKPOINT_DIR, or a catalog LoRA (lightning-t2v, lightning-i2v), merged into the DiT at load. Repeatable. On A14B a single file needs --lora-high or --lora-low.")], None),
    "lora_high": (Annotated[Optional[list[str]], typer.Option("--lora-high", help="FILE[:SCALE] for the A14B high-noise expert (early steps). Repeatable.")], None),
    "lora_low": (Annotated[Optional[list[str]], typer.Option("--lora-low", help="FILE[:SCALE] for the A14B low-noise expert (late steps). Repeatable.")], None),
    "gpus": (Annotated[Optional[str], typer.Option("--gpus", help="GPUs to use: all (default), a count, or indices such as 0,1.")], None),
    "offload": (Annotated[str, typer.Option("--offload", help="auto (from GPU memory), on or off (--offload_model), or blocks (A14B: stream the DiT blocks from host memory).")], "auto"),
    "dtype": (Annotated[Optional[str], typer.Option("--dtype", help="A14B DiT weights: bf16 or fp8 (sm_89/sm_90; default: WAN22_DTYPE).")], None),
    # s2v-14B
    "audio": (Annotated[Optional[Path], typer.Option("--audio", help="s2v-14B: the speech or song (WAV, FLAC, MP3, Ogg, M4A); its length sets the clips.")], None),
    "pose_video": (Annotated[Optional[Path], typer.Option("--pose-video", help="s2v-14B: a DW-pose video that drives the body.")], None),
    "num_clip": (Annotated[Optional[int], typer.Option("--num-clip", help="s2v-14B: at most this many clips (default: as many as the audio needs).")], None),
    "start_from_ref": (Annotated[bool, typer.Option("--start-from-ref", help="s2v-14B: the image is the first frame.")], False),
    "tts_text": (Annotated[Optional[str], typer.Option("--tts-text", help="s2v-14B: words CosyVoice speaks instead of --audio (image built with WAN_S2V_TTS=true; `wan22ctl download cosyvoice`).")], None),
    "tts_prompt_audio": (Annotated[Optional[Path], typer.Option("--tts-prompt-audio", help="s2v-14B with --tts-text: a recording of the voice to speak in (upstream: at least 16 kHz, 5-15 s).")], None),
    "tts_prompt_text": (Annotated[Optional[str], typer.Option("--tts-prompt-text", help="s2v-14B with --tts-text: exactly what the prompt recording says (left out: CosyVoice's cross-lingual mode).")], None),
    # animate-14B
    "src_root": (Annotated[Optional[Path], typer.Option("--src-root", help="animate-14B: the folder `wan22ctl animate-prep` wrote.")], None),
    "refert_num": (Annotated[Optional[int], typer.Option("--refert-num", help="animate-14B: frames carried from clip to clip, 1 (default) or 5.")], None),
    "replace": (Annotated[bool, typer.Option("--replace", help="animate-14B: replace the person in the video (a folder prepared with --replace).")], False),
    "relighting_lora": (Annotated[bool, typer.Option("--relighting-lora", help="animate-14B: relight the character to the scene (replacement).")], False),
}




@dataclass(frozen=True)
class OfflineGpus:
    """`--gpu-count` and its companions: GPUs described on the command line instead of asked for."""

    count: int | None = None
    memory_gb: float = 80.0
    host_ram_gb: float | None = None
    name: str | None = None


OFFLINE_GPU_OPTIONS: dict[str, tuple[Any, Any]] = {
    "count": (Annotated[Optional[int], typer.Option("--gpu-count", help="Plan for this many GPUs instead of asking the container.")], None),
    "memory_gb": (Annotated[float, typer.Option("--gpu-mem-gb", help="With --gpu-count: memory of each GPU in GB.")], 80.0),
    "host_ram_gb": (Annotated[Optional[float], typer.Option("--host-ram-gb", help="Host RAM free for loading, GB (default: what the container reports).")], None),
    "name": (Annotated[Optional[str], typer.Option("--gpu-name", help="With --gpu-count: the GPU model, for the record.")], None),
}


def bundle(param: str, table: dict[str, tuple[Any, Any]], make: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Give a Typer command every option of `table` in place of its parameter `param`, which
    receives them as one `make(**options)`."""
    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        added = [inspect.Parameter(f"{param}__{name}", inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                   default=default) for name, (annotation, default) in table.items()]
        params = []
        for p in signature.parameters.values():
            params += added if p.name == param else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(command)
        def wrapper(**kwargs):
            kwargs[param] = make(**{name: kwargs.pop(f"{param}__{name}") for name in table})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


request_options = bundle("options", REQUEST_OPTIONS, RequestOptions)
offline_gpus = bundle("machine", OFFLINE_GPU_OPTIONS, OfflineGpus)
