"""`wan22ctl generate` and `wan22ctl plan`: validated, GPU-aware, observable, interruptible generation.

Examples:
    wan22ctl generate --task ti2v-5B --prompt "a red fox running through snow"
    wan22ctl generate --task i2v-A14B --image cat.jpg --prompt "the cat turns its head" --size 832*480
    wan22ctl generate --task t2v-A14B --prompt-file prompts.jsonl      # a batch, summary at the end
    wan22ctl generate --task t2v-A14B --prompt "..." --dry-run --json  # the launch plan only
    wan22ctl plan --task t2v-A14B --gpu-count 4 --gpu-mem-gb 80       # no Docker needed

Everything the user typed is checked before Docker is touched (exit 2, one line). The plan
(`wan22ctl.plan.launch`) is computed on the host from the container's GPU inventory; the
container side (`wan22ctl-agent generate`, `wan22ctl.agent.launcher`) runs it, reports
progress events, checks the video and gives it its final name under OUTPUT_DIR.
When a resident server serves the task (`wan22ctl up --serve`), the prompt or every valid line
of a batch is queued there instead and followed with the same progress, lines and summary.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from wan22ctl.cli.common import DryRunOpt, JsonOpt, console, emit, settings_from
from wan22ctl.errors import EnvError, RunFailed, UserError
from wan22ctl.protocol import EXIT_BUSY



class Interrupted(RunFailed):
    """Ctrl-C / SIGTERM: the run in the container was stopped (Typer would turn a bare
    KeyboardInterrupt into a return value that `app.main` drops, exiting 0)."""

    exit_code = 130

TaskOpt = Annotated[str, typer.Option("--task", help="t2v-A14B, i2v-A14B or ti2v-5B (required).")]
SizeOpt = Annotated[Optional[str], typer.Option("--size", help="WIDTH*HEIGHT (or WIDTHxHEIGHT); default per task (ti2v-5B: 1280*704).")]
PromptOpt = Annotated[Optional[str], typer.Option("--prompt", help="What to generate.")]
PromptFileOpt = Annotated[Optional[Path], typer.Option("--prompt-file", help="A batch: one prompt a line, or JSONL lines with per-line options.")]
ImageOpt = Annotated[Optional[Path], typer.Option("--image", help="Input image (required for i2v-A14B, optional for ti2v-5B).")]
FramesOpt = Annotated[Optional[int], typer.Option("--frame-num", help="Frames, 4n+1 (default 81; ti2v-5B 121).")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", help="Sampling steps (default 40; ti2v-5B 50).")]
ShiftOpt = Annotated[Optional[float], typer.Option("--shift", help="Flow-matching shift (default per task).")]
GuideOpt = Annotated[Optional[float], typer.Option("--guide-scale", help="Classifier-free guidance (applies to both A14B experts).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed (default: drawn at random and recorded in the sidecar).")]
SolverOpt = Annotated[str, typer.Option("--solver", help="unipc or dpm++.")]
GpusOpt = Annotated[Optional[str], typer.Option("--gpus", help="GPUs to use: all (default), a count, or indices such as 0,1.")]
OffloadOpt = Annotated[str, typer.Option("--offload", help="--offload_model: auto (from GPU memory), on or off.")]
GpuCountOpt = Annotated[Optional[int], typer.Option("--gpu-count", help="Plan for this many GPUs instead of asking the container.")]
GpuMemOpt = Annotated[float, typer.Option("--gpu-mem-gb", help="With --gpu-count: memory of each GPU in GB.")]
HostRamOpt = Annotated[Optional[float], typer.Option("--host-ram-gb", help="With --gpu-count: host RAM free for loading, GB.")]

BLANK_OPTIONS = dict(size=None, frame_num=None, steps=None, shift=None, guide_scale=None, seed=None, solver="unipc",
                     image=None, offload="auto", gpus=None)
JSONL_KEYS = {"prompt", "task", "size", "frame_num", "steps", "sample_steps", "shift", "guide_scale", "seed",
              "solver", "image", "offload", "gpus"}


@dataclass
class Job:
    """One line of a batch (or the single prompt): a request, or why it is invalid."""

    label: str
    request: object | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- requests


def _request(task, prompt, *, size, frame_num, steps, shift, guide_scale, seed, solver, image, offload, gpus,
             check_image=True):
    from wan22ctl.plan.launch import build_request

    return build_request(
        task, prompt, size=size, frame_num=frame_num, sample_steps=steps, sample_shift=shift,
        guide_scale=guide_scale, seed=random.randint(0, 2**32 - 1) if seed is None else seed,
        solver=solver, image=None if image is None else str(image), offload=offload, gpus=gpus,
        **({} if check_image else {"file_exists": lambda p: True}),
    )


def read_prompt_file(path: Path, defaults: dict) -> list[Job]:
    """Jobs from a prompt file: text lines are prompts; lines starting with '{' are JSON objects
    with a "prompt" and any of the generate options (relative image paths: from the file's folder)."""
    if not path.is_file():
        raise UserError(f"prompt file {path} does not exist")
    jobs: list[Job] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        label = f"{path.name}:{number}"
        options = {**BLANK_OPTIONS, **defaults}
        try:
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                unknown = set(data) - JSONL_KEYS
                if unknown:
                    raise UserError(f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(JSONL_KEYS))}")
                if "sample_steps" in data:
                    data["steps"] = data.pop("sample_steps")
                if data.get("image"):
                    image = Path(os.path.expanduser(str(data["image"])))
                    data["image"] = image if image.is_absolute() else path.parent / image
                options.update(data)
            else:
                options["prompt"] = line
            task = options.pop("task")
            prompt = options.pop("prompt", None)
            jobs.append(Job(label, request=_request(task, prompt, **options)))
        except UserError as exc:
            jobs.append(Job(label, error=exc.message))
        except (TypeError, ValueError) as exc:
            jobs.append(Job(label, error=f"bad value: {exc}"))
    if not jobs:
        raise UserError(f"prompt file {path} holds no prompt")
    return jobs


def check_checkpoints(settings, tasks) -> list[str]:
    """Problems with the checkpoints the tasks need, each naming the download that fixes it."""
    from wan22ctl import catalog
    from wan22ctl.hub.state import model_dir, model_state

    problems = []
    for task in sorted(set(tasks)):
        model = catalog.model_for_task(task)
        state, missing, _ = model_state(model, settings["CHECKPOINT_DIR"])
        if state != "complete":
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems.append(
                f"checkpoints for {task} are {state} in {model_dir(model, settings['CHECKPOINT_DIR'])}"
                f" (missing: {shown}); run: wan22ctl download {model.key}")
    return problems


# --------------------------------------------------------------------------- inventory


def _container(settings):
    from wan22ctl.docker import containers
    from wan22ctl.docker.client import connect

    client = connect()
    name = settings["CONTAINER_NAME"]
    container = containers.find(client, name)
    if container is None or container.status != "running":
        raise EnvError(f"container {name} is not running", fix="run `wan22ctl up` first")
    return client, container


def read_inventory(container) -> tuple[list, float | None, str | None]:
    """(GPUs, host RAM GB, nvidia-smi error) as the container sees them."""
    from wan22ctl.plan.inventory import Gpu

    code, out = container.exec_run(["wan22ctl-agent", "inventory"])
    text = out.decode("utf-8", "replace").strip()
    if code != 0:
        raise EnvError(f"cannot read the GPU inventory in the container: {text.splitlines()[-1:] or code}",
                       fix="rebuild the image (`wan22ctl build`) so wan22ctl-agent matches this kit")
    data = json.loads(text.splitlines()[-1])
    return [Gpu(**g) for g in data["gpus"]], data.get("host_ram_gb"), data.get("error")


def _no_gpus(error: str | None):
    return EnvError(f"no GPU is visible in the container ({error or 'nvidia-smi lists none'})",
                    fix="check GPUS in .env and the NVIDIA Container Toolkit (`wan22ctl doctor`), then `wan22ctl up --recreate`")


# --------------------------------------------------------------------------- rendering


def _render_plan(data: dict) -> None:
    out = console()
    for item in data["plans"]:
        if item.get("error"):
            out.print(f"[red]{item['label']}: {item['error']}[/red]")
            continue
        p = item["plan"]
        gpus = ", ".join(f"{i}:{n}" for i, n in zip(p["gpus"], p["gpu_names"]))
        out.print(f"[bold]{p['task']}[/bold] {p['request']['size']} {p['request']['frame_num']} frames, "
                  f"{p['request']['sample_steps']} steps, seed {p['request']['seed']}")
        out.print(f"  GPUs: {p['nproc']} x {p['gpu_memory_gb']:g} GB ({gpus}) via {p['launcher']}")
        out.print(f"  peak GPU memory about {p['est_peak_gpu_gb']:g} GB per GPU; host RAM for loading about "
                  f"{p['host_ram_need_gb']:g} GB" + (f" of {p['host_ram_gb']:g} GB free" if p.get("host_ram_gb") else ""))
        for reason in p["reasons"]:
            out.print(f"  - {reason}", markup=False, soft_wrap=True)
        for warning in p["warnings"]:
            out.print(f"  [yellow]warning:[/yellow] {warning}")
        out.print("  argv:", " ".join(_quote(a) for a in p["argv"]), markup=False, soft_wrap=True)
    for line in data.get("checkpoints", []):
        out.print(f"[yellow]warning:[/yellow] {line}")


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


PHASE_LABEL = {"load": "loading models", "text_encode": "encoding prompt", "denoise": "denoising",
               "decode": "decoding video", "save": "saving"}


def _fmt_s(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class RunView:
    """Draws one run: upstream's log lines, a progress bar with steps and ETA, a line per phase."""

    def __init__(self, out, quiet: bool, label: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.out = out
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=out, transient=False,
        )
        self.task = self.progress.add_task(f"{label}: starting", total=None, eta="?")
        self.label = label

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def on_line(self, stream: str, line: str) -> None:
        if not self.quiet:
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True,
                                        style="dim" if stream == "stderr" else None)

    def on_event(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "phase":
            name = event.get("name", "")
            if event.get("state") == "start":
                self.progress.update(self.task, description=f"{self.label}: {PHASE_LABEL.get(name, name)}")
            else:
                self.progress.console.print(f"{PHASE_LABEL.get(name, name)}: {event.get('seconds', 0):.1f} s", markup=False)
        elif kind == "result":
            self.progress.update(self.task, description=f"{self.label}: {event.get('status', 'done')}")
        elif kind == "progress":
            self.progress.update(self.task, total=event["total"], completed=event["step"], eta=_fmt_s(event.get("eta_s")))
        elif kind == "waiting":
            self.progress.console.print(
                f"GPU(s) {', '.join(map(str, event.get('gpus', [])))} busy with {event.get('holder')}; waiting "
                "(Ctrl-C to give up, --no-wait to fail at once)", markup=False, soft_wrap=True)
        elif kind == "lock_acquired":
            self.progress.console.print("GPUs free; starting", markup=False)


# --------------------------------------------------------------------------- running


def _stage_image(container, plan) -> None:
    """Copy the host image to the plan's staging path inside the container (works with a remote daemon)."""
    import io
    import tarfile

    host = plan.request["image"]
    target = plan.image
    rel = os.path.relpath(target, plan.output_dir)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = Path(rel).parts
        for i in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:i]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tar.add(host, arcname=rel, recursive=False)
    if not container.put_archive(plan.output_dir, buf.getvalue()):
        raise RunFailed(f"could not copy {host} into the container")


def _unstage(container, plan) -> None:
    if plan.image:
        try:
            container.exec_run(["rm", "-rf", os.path.dirname(plan.image)])
        except Exception:
            pass


def _image_digest(client, container) -> str | None:
    try:
        image = client.images.get(container.attrs["Image"])
        digests = image.attrs.get("RepoDigests") or []
        return digests[0] if digests else image.id
    except Exception:
        return container.attrs.get("Image")


def run_one(client, container, plan, *, wait: bool, as_json: bool, label: str, digest: str | None) -> dict:
    """Run one plan in the container; returns the agent's result event (status ok/failed/busy)."""
    from wan22ctl.docker.exec import run_exec

    out = console(stderr=as_json)
    result: dict = {}
    cmd = ["wan22ctl-agent", "generate", "--plan-json", json.dumps(plan.to_dict())]
    if digest:
        cmd += ["--image-digest", digest]
    if plan.request.get("image"):
        cmd += ["--source-image", plan.request["image"]]
    if not wait:
        cmd.append("--no-wait")
    try:
        if plan.image:
            _stage_image(container, plan)
        with RunView(out, quiet=as_json, label=label) as view:
            def on_event(event):
                if event.get("event") == "result":
                    result.update(event)
                view.on_event(event)

            res = run_exec(container, cmd, on_line=view.on_line, on_event=on_event)
    finally:
        _unstage(container, plan)
    if not result:
        result = {"status": "failed", "exit_code": res.exit_code,
                  "reason": f"the container side ended with exit code {res.exit_code} and no result"}
    if res.exit_code == EXIT_BUSY:
        result["status"] = "busy"
    return result


def _plan_jobs(jobs, gpus, ram, settings):
    from wan22ctl.plan.launch import plan_launch

    for job in jobs:
        if job.request is None:
            continue
        try:
            job.result["plan"] = plan_launch(job.request, gpus, ram, run_id=uuid.uuid4().hex[:12],
                                             attention=settings["WAN22_ATTENTION"],
                                             compile_mode=settings["WAN22_COMPILE"])
        except UserError as exc:
            job.error, job.request = exc.message, None


def _collect_jobs(task, prompt, prompt_file, options, *, check_image=True, placeholder_prompt=None) -> tuple[list[Job], bool]:
    if prompt is not None and prompt_file is not None:
        raise UserError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        return read_prompt_file(prompt_file, {"task": task, **options}), True
    request = _request(task, prompt if prompt is not None else placeholder_prompt, check_image=check_image, **options)
    return [Job("prompt", request=request)], False


def _inventory(settings, gpu_count, gpu_mem_gb, host_ram_gb, gpu_name=None):
    """(gpus, host RAM, container, client): from the flags when --gpu-count is given, else from the container."""
    from wan22ctl.plan.launch import synthetic_inventory

    if gpu_count is not None:
        return synthetic_inventory(gpu_count, gpu_mem_gb, gpu_name), host_ram_gb, None, None
    client, container = _container(settings)
    gpus, ram, error = read_inventory(container)
    if not gpus:
        raise _no_gpus(error)
    return gpus, host_ram_gb if host_ram_gb is not None else ram, container, client


def generate(
    task: TaskOpt,
    size: SizeOpt = None,
    prompt: PromptOpt = None,
    prompt_file: PromptFileOpt = None,
    image: ImageOpt = None,
    frame_num: FramesOpt = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    guide_scale: GuideOpt = None,
    seed: SeedOpt = None,
    solver: SolverOpt = "unipc",
    gpus: GpusOpt = None,
    offload: OffloadOpt = "auto",
    gpu_count: GpuCountOpt = None,
    gpu_mem_gb: GpuMemOpt = 80.0,
    host_ram_gb: HostRamOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Run even when the plan expects CUDA out of memory.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Fail at once if another generation holds the GPUs.")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate videos with Wan2.2 in the container; outputs land in OUTPUT_DIR with a JSON sidecar."""
    try:
        _generate(task, size, prompt, prompt_file, image, frame_num, steps, shift, guide_scale, seed, solver, gpus,
                  offload, gpu_count, gpu_mem_gb, host_ram_gb, force, no_wait, dry_run, as_json)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the generation was stopped in the container; no partial file is left") from None


def _generate(task, size, prompt, prompt_file, image, frame_num, steps, shift, guide_scale, seed, solver, gpus,
              offload, gpu_count, gpu_mem_gb, host_ram_gb, force, no_wait, dry_run, as_json) -> None:
    settings = settings_from()
    options = dict(size=size, frame_num=frame_num, steps=steps, shift=shift, guide_scale=guide_scale, seed=seed,
                   solver=solver, image=image, offload=offload, gpus=gpus)
    jobs, batch = _collect_jobs(task, prompt, prompt_file, options)
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)
    valid = [j for j in jobs if j.request is not None]
    problems = check_checkpoints(settings, [j.request.task for j in valid])
    if problems and not dry_run:
        raise UserError(problems[0] if len(problems) == 1 else "; ".join(problems))
    if not valid:
        _summary(jobs, as_json)
        raise UserError("no valid line in the prompt file")
    if not dry_run and gpu_count is None and _ran_on_server(settings, jobs, batch, as_json):
        return
    inv, ram, container, client = _inventory(settings, gpu_count, gpu_mem_gb, host_ram_gb)
    _plan_jobs(jobs, inv, ram, settings)
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)
    if dry_run:
        emit(_plan_output(jobs, problems), as_json, _render_plan)
        return
    if container is None:
        raise UserError("--gpu-count plans without Docker; drop it to generate (or add --dry-run)")
    for job in jobs:
        plan = job.result.get("plan")
        if plan is not None and not plan.fits and not force:
            job.error, job.request = f"{plan.warnings[0]}; pass --force to try anyway", None
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)
    from wan22ctl.doctor import require  # doctor's cheap checks: GPU architecture, driver, /dev/shm

    require(settings, "generate", task=valid[0].request.task, plan=valid[0].result.get("plan"))
    digest = _image_digest(client, container)

    def run(job: Job, label: str, out) -> dict:
        for warning in job.result["plan"].warnings:
            out.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
        return run_one(client, container, job.result["plan"], wait=not no_wait, as_json=as_json, label=label,
                       digest=digest)

    _run_jobs(settings, jobs, batch, as_json, run)


def _run_jobs(settings, jobs: list[Job], batch: bool, as_json: bool, run) -> None:
    """Run each valid job in order with `run(job, label, out)` (it returns the run's result), then
    report as the user expects: skipped lines, a line per run, the batch summary, the exit code."""
    _OUTPUT_DIR["host"] = settings["OUTPUT_DIR"]
    out = console(stderr=as_json)
    for n, job in enumerate(jobs, start=1):
        if job.request is None:
            out.print(f"[red]{job.label}: skipped: {job.error}[/red]")
            continue
        job.result["run"] = run(job, f"[{n}/{len(jobs)}]" if batch else job.request.task, out)
        _report_run(out, job)
    failed = [j for j in jobs if j.request is None or j.result["run"].get("status") != "ok"]
    if batch or as_json:
        _summary(jobs, as_json)
    if not batch and failed:
        run = jobs[0].result["run"]
        if run.get("status") == "busy":
            raise EnvError("the GPUs are busy with another generation (--no-wait)", fix="wait for it, or run without --no-wait")
        if run.get("status") == "interrupted":
            raise KeyboardInterrupt
        raise RunFailed(f"generation {run.get('status', 'failed')}: {run.get('reason') or 'unknown reason'}")
    if failed:
        raise RunFailed(f"{len(failed)} of {len(jobs)} generation(s) failed")


def _ran_on_server(settings, jobs: list[Job], batch: bool, as_json: bool) -> bool:
    """With a resident server serving the task (`wan22ctl up --serve`): queue every valid job there,
    then follow them in order as a local run is shown. False when there is no such server (or the
    batch mixes tasks, which one server cannot serve)."""
    from wan22ctl.cli.serve import as_run, follow_job, server_for, submit

    tasks = {j.request.task for j in jobs if j.request is not None}
    client = server_for(settings, tasks.pop()) if len(tasks) == 1 else None
    if client is None:
        return False
    out = console(stderr=as_json)

    def run(job: Job, label: str, out) -> dict:
        return as_run(follow_job(settings, job.result["job_id"], out, quiet=as_json, label=label))

    try:
        # All at once, so the server goes from one video to the next without waiting for this host.
        for job in jobs:
            if job.request is None:
                continue
            try:
                job.result["job_id"] = submit(client, job.request)["id"]
            except UserError as exc:
                if not batch:
                    raise
                job.error, job.request = exc.message, None
                continue
            out.print(f"{job.label + ': ' if batch else ''}submitted to the resident server as "
                      f"{job.result['job_id']}", markup=False)
        _run_jobs(settings, jobs, batch, as_json, run)
    except KeyboardInterrupt:
        raise Interrupted("stopped watching; the server keeps the submitted job(s): `wan22ctl jobs` lists them, "
                          "`wan22ctl cancel ID` stops one") from None
    return True


def _report_run(out, job: Job) -> None:
    run = job.result["run"]
    if run.get("status") == "ok":
        size = f"{run['bytes']} bytes, " if "bytes" in run else ""
        out.print(f"saved {_host_path(run['video'])} ({size}{run.get('total_s', 0):.1f} s)", markup=False, soft_wrap=True)
    elif run.get("status") in ("failed", "cancelled"):
        out.print(f"[red]{run['status']}:[/red] {run.get('reason')}", soft_wrap=True)


_OUTPUT_DIR = {"host": None}


def _host_path(container_path: str) -> str:
    """Where a container output is on the host (OUTPUT_DIR is mounted at /opt/outputs)."""
    from wan22ctl import catalog

    host = _OUTPUT_DIR["host"]
    if host and container_path.startswith(catalog.CONTAINER_OUTPUT_DIR + "/"):
        return os.path.join(host, container_path[len(catalog.CONTAINER_OUTPUT_DIR) + 1:])
    return container_path


def _summary(jobs: list[Job], as_json: bool) -> None:
    rows = []
    for job in jobs:
        run = job.result.get("run") or {}
        status = "invalid" if job.request is None and not run else run.get("status", "invalid")
        rows.append({
            "line": job.label,
            "prompt": job.request.prompt if job.request is not None else None,
            "status": status,
            "video": _host_path(run["video"]) if run.get("video") else None,
            "sidecar": _host_path(run["sidecar"]) if run.get("sidecar") else None,
            "seconds": run.get("total_s"),
            "job": run.get("job"),  # the resident server's job id, when the server ran it
            "error": job.error or (run.get("reason") if status != "ok" else None),
        })
    if as_json:
        emit({"runs": rows, "failed": sum(r["status"] != "ok" for r in rows)}, True, print)
        return
    from rich.table import Table

    table = Table(title="generate: summary")
    for col in ("line", "status", "prompt", "video / error", "s"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["line"], r["status"], (r["prompt"] or "")[:40], r["video"] or r["error"] or "",
                      f"{r['seconds']:.1f}" if r["seconds"] is not None else "")
    console().print(table)


def _plan_output(jobs: list[Job], problems: list[str]) -> dict:
    plans = []
    for job in jobs:
        if job.request is None:
            plans.append({"label": job.label, "error": job.error})
        else:
            plans.append({"label": job.label, "plan": job.result["plan"].to_dict()})
    return {"plans": plans, "checkpoints": problems}


def plan(
    task: TaskOpt,
    size: SizeOpt = None,
    prompt: PromptOpt = None,
    prompt_file: PromptFileOpt = None,
    image: ImageOpt = None,
    frame_num: FramesOpt = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    guide_scale: GuideOpt = None,
    seed: SeedOpt = None,
    solver: SolverOpt = "unipc",
    gpus: GpusOpt = None,
    offload: OffloadOpt = "auto",
    gpu_count: GpuCountOpt = None,
    gpu_mem_gb: GpuMemOpt = 80.0,
    gpu_name: Annotated[Optional[str], typer.Option("--gpu-name", help="With --gpu-count: the GPU model, for the record.")] = None,
    host_ram_gb: HostRamOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show how a generation would run: GPUs, torchrun or python, memory flags, the exact argv, and why."""
    settings = settings_from()
    options = dict(size=size, frame_num=frame_num, steps=steps, shift=shift, guide_scale=guide_scale, seed=seed,
                   solver=solver, image=image, offload=offload, gpus=gpus)
    jobs, batch = _collect_jobs(task, prompt, prompt_file, options, check_image=False,
                                placeholder_prompt="<your prompt>")
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)
    inv, ram, _, _ = _inventory(settings, gpu_count, gpu_mem_gb, host_ram_gb, gpu_name)
    _plan_jobs(jobs, inv, ram, settings)
    if not batch and jobs[0].error:
        raise UserError(jobs[0].error)
    problems = check_checkpoints(settings, [j.request.task for j in jobs if j.request is not None])
    emit(_plan_output(jobs, problems), as_json, _render_plan)


def register(app: typer.Typer) -> None:
    """Add `generate` and `plan` to the root app."""
    app.command("generate")(generate)
    app.command("plan")(plan)
