"""`generate`'s jobs: a prompt or a prompt file turned into requests, planned, run one by one, reported.

Every request goes through `plan.launch.build_request`, the same checks the server applies, so
`plan`, `generate --dry-run` and `generate` refuse the same input with the same line. A prompt
file is one prompt a line, or JSONL lines carrying a "prompt" and any generate option; a bad
line is skipped with its line number and the batch goes on. Free of Typer and rich: how jobs are
shown is the caller's (`Report`).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from wan22ctl import catalog
from wan22ctl.errors import EnvError, RunFailed, UserError
from wan22ctl.plan.inventory import Inventory
from wan22ctl.plan.launch import GenerationRequest, LaunchPlan, build_request, plan_launch
from wan22ctl.settings import Settings, read_user_text

# What a JSONL line may set, besides "prompt": generate's options under their JSON names.
LINE_KEYS = ("task", "size", "frame_num", "steps", "sample_steps", "shift", "guide_scale", "seed", "solver", "image",
             "offload", "gpus", "dtype", "preset")
# s2v-14B and animate-14B's inputs, under the same names; their paths are relative to the prompt file.
INPUT_LINE_KEYS = ("audio", "pose_video", "num_clip", "start_from_ref", "tts_text", "tts_prompt_audio",
                   "tts_prompt_text", "src_root", "refert_num", "replace", "relighting_lora")
PATH_KEYS = ("image", "audio", "pose_video", "tts_prompt_audio", "src_root")


@dataclass(frozen=True)
class RequestOptions:
    """generate's and plan's request options as given (None: the task's default)."""

    task: Any
    size: Any = None
    frame_num: Any = None
    steps: Any = None
    shift: Any = None
    guide_scale: Any = None
    seed: Any = None
    solver: Any = None
    image: Any = None
    offload: Any = "auto"
    gpus: Any = None
    audio: Any = None
    pose_video: Any = None
    num_clip: Any = None
    start_from_ref: Any = False
    tts_text: Any = None
    tts_prompt_audio: Any = None
    tts_prompt_text: Any = None
    src_root: Any = None
    refert_num: Any = None
    replace: Any = False
    relighting_lora: Any = False
    dtype: Any = None  # None: dtype_default for the A14B tasks, bf16 for the others
    dtype_default: str = "bf16"  # the WAN22_DTYPE setting
    preset: Any = None
    lora: Any = None  # --lora values as typed: FILE[:SCALE] or a catalog LoRA
    lora_high: Any = None
    lora_low: Any = None
    loras: tuple = ()  # the three above resolved (`with_loras`): GenerationRequest.loras entries

    def with_loras(self, settings: Settings) -> "RequestOptions":
        """These options with --lora/--lora-high/--lora-low resolved against CHECKPOINT_DIR (UserError)."""
        from dataclasses import replace

        return replace(self, loras=lora_refs(settings, self.lora, self.lora_high, self.lora_low))

    def request(self, prompt, check_image: bool = True) -> GenerationRequest:
        """The validated request (a seed drawn when none was given, and recorded); UserError."""
        seed = random.randint(0, 2**32 - 1) if self.seed is None else self.seed
        dtype = self.dtype
        if dtype is None:  # WAN22_DTYPE is about the A14B experts: other tasks keep bf16
            task = catalog.TASKS.get(self.task) if isinstance(self.task, str) else None
            dtype = self.dtype_default if task is not None and task.moe else "bf16"
        paths = {k: str(v) if isinstance(v, Path) else v
                 for k, v in ((k, getattr(self, k)) for k in PATH_KEYS)}
        return build_request(
            self.task, prompt, size=self.size, frame_num=self.frame_num, sample_steps=self.steps,
            sample_shift=self.shift, guide_scale=self.guide_scale, seed=seed, solver=self.solver, image=paths["image"],
            offload=self.offload, gpus=self.gpus, dtype=dtype, preset=self.preset, loras=self.loras,
            audio=paths["audio"], pose_video=paths["pose_video"],
            num_clip=self.num_clip, start_from_ref=self.start_from_ref, tts_text=self.tts_text,
            tts_prompt_audio=paths["tts_prompt_audio"], tts_prompt_text=self.tts_prompt_text, src_root=paths["src_root"],
            refert_num=self.refert_num, replace=self.replace, relighting_lora=self.relighting_lora,
            **({} if check_image else {"file_exists": lambda _: True, "probe_inputs": False}),
        )


@dataclass
class Job:
    """One line of a batch (or the single prompt): a request, or why it is invalid; then its plan and run."""

    label: str
    request: GenerationRequest | None = None
    error: str | None = None
    plan: LaunchPlan | None = None
    job_id: str | None = None  # the resident server's, when it ran there
    run: dict | None = None  # the run's result: status ok/failed/busy/interrupted/cancelled, video, reason

    def refuse(self, reason: str) -> None:
        self.request, self.error = None, reason


class Report(Protocol):
    """How a batch is shown as it runs."""

    def skipped(self, job: Job) -> None: ...

    def finished(self, job: Job) -> None: ...

    def summary(self, jobs: list[Job]) -> None: ...


# --------------------------------------------------------------------------- requests


def _line_options(data: dict, defaults: RequestOptions, folder: Path) -> tuple[RequestOptions, Any]:
    """(options, prompt) of one JSONL line over the command line's options."""
    known = (*LINE_KEYS, *INPUT_LINE_KEYS, "prompt")
    unknown = set(data) - set(known)
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if "sample_steps" in data:
        data["steps"] = data.pop("sample_steps")
    for key in PATH_KEYS:
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise UserError(f"--{key.replace('_', '-')} must be a path, not {value!r}")
            path = Path(os.path.expanduser(value))
            data[key] = str(path if path.is_absolute() else folder / path)
    prompt = data.pop("prompt", None)
    return RequestOptions(**{**defaults.__dict__, **data}), prompt


def read_prompt_file(path: Path, defaults: RequestOptions, check_image: bool = True) -> list[Job]:
    """Jobs from a prompt file: text lines are prompts; lines starting with '{' are JSON objects with a
    "prompt" and any of the generate options (relative image paths: from the file's folder). A file
    that cannot be read as UTF-8 text is one UserError naming it; a bad line is a job with its error."""
    text = read_user_text(path, "prompt file")
    jobs: list[Job] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        label = f"{path.name}:{number}"
        try:
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(data, dict):
                    raise UserError("a JSON line must be an object with a \"prompt\"")
                options, prompt = _line_options(data, defaults, path.parent)
            else:
                options, prompt = defaults, line
            jobs.append(Job(label, request=options.request(prompt, check_image)))
        except UserError as exc:
            jobs.append(Job(label, error=exc.message))
    if not jobs:
        raise UserError(f"prompt file {path} holds no prompt")
    return jobs


def collect(options: RequestOptions, prompt: str | None, prompt_file: Path | None, *,
            placeholder_prompt: str | None = None) -> tuple[list[Job], bool]:
    """(jobs, whether it is a batch). A single prompt's problem is raised at once (UserError);
    so is a batch none of whose lines is valid, after the caller has shown them (`valid_jobs`)."""
    if prompt is not None and prompt_file is not None:
        raise UserError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        return read_prompt_file(prompt_file, options), True
    task = catalog.TASKS.get(options.task) if isinstance(options.task, str) else None
    if task is not None and not task.takes_prompt:
        placeholder_prompt = None  # animate-14B: no prompt to stand in for
    return [Job("prompt", request=options.request(prompt if prompt is not None else placeholder_prompt))], False


def raise_single(jobs: list[Job], batch: bool) -> None:
    """A single prompt that became invalid (at any stage) stops the command with its reason."""
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)


def valid_jobs(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.request is not None]


NO_VALID_LINE = "no valid line in the prompt file"


def checkpoint_problems(settings: Settings, jobs: list[Job]) -> list[str]:
    """Problems with the checkpoints the jobs need (their tasks', and CosyVoice's for --tts-text),
    each naming the download that fixes it."""
    from wan22ctl.hub.state import model_dir, model_state

    needed = {task: catalog.model_for_task(task) for task in sorted({j.request.task for j in valid_jobs(jobs)})}
    if any(j.request.tts_text is not None for j in valid_jobs(jobs)):
        needed["--tts-text"] = catalog.COSYVOICE
    problems = []
    for label, model in needed.items():
        state, missing, _ = model_state(model, settings.checkpoint_dir)
        if state != "complete":
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems.append(
                f"checkpoints for {label} are {state} in {model_dir(model, settings.checkpoint_dir)}"
                f" (missing: {shown}); run: wan22ctl download {model.key}")
    return problems


def lora_refs(settings: Settings, lora, lora_high, lora_low) -> tuple[dict, ...]:
    """--lora/--lora-high/--lora-low as request entries: a catalog LoRA's folder, or a file or folder
    under CHECKPOINT_DIR (the one host folder the container sees), as a path relative to it."""
    from wan22ctl.loras import LoraError, LoraSpec

    root = os.path.realpath(settings.checkpoint_dir)
    refs = []
    for values, expert in ((lora, None), (lora_high, "high"), (lora_low, "low")):
        for value in values or ():
            try:
                spec = LoraSpec.parse(value, expert)
            except LoraError as exc:
                raise UserError(str(exc)) from None
            model = catalog.MODEL_BY_KEY.get(spec.path)
            if model is not None and model.lora:
                refs.append({"file": catalog.lora_folder(model), "scale": spec.scale, "expert": expert,
                             "catalog": model.key})
                continue
            path = os.path.realpath(os.path.expanduser(spec.path))
            if not os.path.exists(path):
                known = ", ".join(m.key for m in catalog.MODELS if m.lora)
                raise UserError(f"LoRA {spec.path}: no such file, and not a catalog LoRA ({known})")
            if os.path.commonpath([path, root]) != root:
                raise UserError(f"LoRA {spec.path} is outside CHECKPOINT_DIR ({settings.checkpoint_dir}), the only "
                                "host folder the container sees", fix=f"copy it to {settings.checkpoint_dir}/loras/")
            refs.append({"file": os.path.relpath(path, root), "scale": spec.scale, "expert": expert, "catalog": None})
    return tuple(refs)


def lora_problems(settings: Settings, jobs: list[Job]) -> list[str]:
    """Problems with the jobs' LoRAs, each one line: a catalog LoRA not downloaded (naming the
    download), a file the task's expert rules or its checkpoint's parameters refuse."""
    from wan22ctl.hub.state import model_state
    from wan22ctl.loras import LoraError, LoraSpec, prepare, read_config, route

    problems, seen = [], set()
    root = settings.checkpoint_dir
    for request in (j.request for j in valid_jobs(jobs)):
        task = catalog.TASKS[request.task]
        key = (request.task, json.dumps(request.loras, sort_keys=True))
        if not request.loras or key in seen:
            continue
        seen.add(key)
        missing = [r["catalog"] for r in request.loras if r.get("catalog")
                   and model_state(catalog.MODEL_BY_KEY[r["catalog"]], root)[0] != "complete"]
        if missing:
            needs = f"--preset {request.preset} needs " if request.preset else ""
            problems += [f"{needs}the {k} LoRAs, which are not downloaded in {root}; run: wan22ctl download {k}"
                         for k in missing]
            continue
        ckpt = os.path.join(root, catalog.model_for_task(request.task).subdir)
        specs = [LoraSpec(os.path.join(root, r["file"]), r["scale"], r.get("expert")) for r in request.loras]
        try:
            if read_config(ckpt, "high" if task.moe else None) is None:
                route(specs, task.moe)  # the checkpoint is not there to check keys against (reported apart)
            else:
                prepare(specs, ckpt, task.moe)
        except LoraError as exc:
            problems.append(str(exc))
    return problems


# --------------------------------------------------------------------------- plans


def plan_jobs(jobs: list[Job], inventory: Inventory, settings: Settings) -> None:
    """A launch plan for every valid job; a job the plan refuses (GPU selection) becomes invalid."""
    for job in valid_jobs(jobs):
        try:
            job.plan = plan_launch(job.request, inventory.gpus, inventory.host_ram_gb, run_id=uuid.uuid4().hex[:12],
                                   attention=settings.wan22_attention, compile_mode=settings.wan22_compile,
                                   runtime=inventory.runtime)
        except UserError as exc:
            job.refuse(exc.message)


def refuse_oversized(jobs: list[Job], force: bool) -> None:
    """Jobs whose plan expects CUDA out of memory become invalid unless --force."""
    for job in valid_jobs(jobs):
        if not job.plan.fits and not force:
            job.refuse(f"{job.plan.warnings[0]}; pass --force to try anyway")


def plans_output(jobs: list[Job], problems: list[str]) -> dict:
    """What `plan` and `generate --dry-run` print: each job's plan or error, and checkpoint warnings."""
    plans = [{"label": j.label, "error": j.error} if j.request is None else {"label": j.label, "plan": j.plan.to_dict()}
             for j in jobs]
    return {"plans": plans, "checkpoints": problems}


# --------------------------------------------------------------------------- runs


def run_jobs(jobs: list[Job], batch: bool, run: Callable[[Job, str], dict], report: Report,
             summarise: bool) -> None:
    """Run each valid job in order with `run(job, label)` (it returns the run's result), skipping the
    invalid ones with their line; then the summary, and the exit: a single run's own failure, or
    RunFailed naming how many runs failed. Skipped lines alone do not fail a batch (one none of
    whose lines is valid never gets here: `collect`'s caller refuses it)."""
    for n, job in enumerate(jobs, start=1):
        if job.request is None:
            report.skipped(job)
            continue
        job.run = run(job, f"[{n}/{len(jobs)}]" if batch else job.request.task)
        report.finished(job)
    if summarise:
        report.summary(jobs)
    ran = [j for j in jobs if j.run is not None]
    failed = [j for j in ran if j.run.get("status") != "ok"]
    if not batch and failed:
        result = failed[0].run
        if result.get("status") == "busy":
            raise EnvError("the GPUs are busy with another generation (--no-wait)",
                           fix="wait for it, or run without --no-wait")
        if result.get("status") == "interrupted":
            raise KeyboardInterrupt
        raise RunFailed(f"generation {result.get('status', 'failed')}: {result.get('reason') or 'unknown reason'}")
    if failed:
        raise RunFailed(f"{len(failed)} of {len(ran)} generation(s) failed")


def summary_rows(jobs: list[Job], to_host: Callable[[str | None], str | None]) -> list[dict]:
    """One row per job for the summary (paths as the host sees them)."""
    rows = []
    for job in jobs:
        run = job.run or {}
        status = "invalid" if job.request is None and not run else run.get("status", "invalid")
        rows.append({
            "line": job.label,
            "prompt": job.request.prompt if job.request is not None else None,
            "status": status,
            "video": to_host(run.get("video")) if run.get("video") else None,
            "sidecar": to_host(run.get("sidecar")) if run.get("sidecar") else None,
            "seconds": run.get("total_s"),
            "job": run.get("job"),  # the resident server's job id, when the server ran it
            "error": job.error or (run.get("reason") if status != "ok" else None),
        })
    return rows
