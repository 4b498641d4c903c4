"""`wan22ctl generate` and `wan22ctl plan`: validated, GPU-aware, observable, interruptible generation.

Examples:
    wan22ctl generate --task ti2v-5B --prompt "a red fox running through snow"
    wan22ctl generate --task i2v-A14B --image cat.jpg --prompt "the cat turns its head" --size 832*480
    wan22ctl generate --task t2v-A14B --prompt-file prompts.jsonl      # a batch, summary at the end
    wan22ctl generate --task t2v-A14B --prompt "..." --dry-run --json  # the launch plan only
    wan22ctl plan --task t2v-A14B --gpu-count 4 --gpu-mem-gb 80       # no Docker needed
    wan22ctl download lightning-t2v && wan22ctl generate --task t2v-A14B --preset lightning --prompt "..."
    wan22ctl generate --task t2v-A14B --lora-high style_high.safetensors:0.8 --lora-low style_low.safetensors --prompt "..."

Everything the user typed is checked before Docker is touched (exit 2, one line), by the same
rules for `plan`, `generate --dry-run`, `generate` and the resident server. The plan
(`wan22ctl.plan.launch`) is computed on the host from the container's inventory and runtime;
the container side (`wan22ctl-agent generate`) runs exactly its argv, reports progress events,
checks the video and gives it its final name under OUTPUT_DIR. When a resident server serves
the task (`wan22ctl up --serve`), the prompt or every valid line of a batch is queued there
instead and followed with the same progress, lines and summary.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated

import typer

from wan22ctl import batch
from wan22ctl.batch import Job, RequestOptions
from wan22ctl.cli.options import DryRunOpt, JsonOpt, OfflineGpus, PromptFileOpt, PromptOpt, offline_gpus, request_options
from wan22ctl.cli.output import BatchView, Output
from wan22ctl.errors import EnvError, RunFailed, UserError
from wan22ctl.paths import main_mounts
from wan22ctl.plan.launch import staged_files
from wan22ctl.protocol import EXIT_BUSY
from wan22ctl.settings import load_cli_settings

PLACEHOLDER_PROMPT = "<your prompt>"


class Interrupted(RunFailed):
    """Ctrl-C / SIGTERM: the run in the container was stopped (Typer would turn a bare
    KeyboardInterrupt into a return value that `app.main` drops, exiting 0)."""

    exit_code = 130


# --------------------------------------------------------------------------- plans (plan, --dry-run)


def _inventory(settings, machine: OfflineGpus):
    """(inventory, the container or None): from the flags when --gpu-count is given, else from the container."""
    from wan22ctl.plan.inventory import Inventory
    from wan22ctl.plan.launch import synthetic_inventory

    if machine.count is not None:
        gpus = synthetic_inventory(machine.count, machine.memory_gb, machine.name)
        return Inventory(tuple(gpus), machine.host_ram_gb), None
    from wan22ctl.docker.kit import KitContainer

    kit = KitContainer.running(settings)
    inventory = kit.inventory()
    if not inventory.gpus:
        raise EnvError(f"no GPU is visible in the container ({inventory.error or 'nvidia-smi lists none'})",
                       fix="check GPUS in .env and the NVIDIA Container Toolkit (`wan22ctl doctor`), then "
                           "`wan22ctl up --recreate`")
    if machine.host_ram_gb is not None:
        from dataclasses import replace

        inventory = replace(inventory, host_ram_gb=machine.host_ram_gb)
    return inventory, kit


def _refuse_when_none_valid(out: Output, settings, jobs: list[Job], batch_given: bool) -> None:
    """A batch none of whose lines is valid: its lines are shown, then one error (exit 2)."""
    if batch_given and not batch.valid_jobs(jobs):
        BatchView(out, main_mounts(settings).to_host).summary(jobs)
        raise UserError(batch.NO_VALID_LINE)


def _render_plans(out: Output, data: dict) -> None:
    import shlex

    for item in data["plans"]:
        if item.get("error"):
            out.say(f"{item['label']}: {item['error']}", style="red")
            continue
        p = item["plan"]
        gpus = ", ".join(f"{i}:{n}" for i, n in zip(p["gpus"], p["gpu_names"]))
        req = p["request"]
        clips = f" a clip, {req['clips']} clip(s)" if req.get("clips") else ""
        out.say(f"{p['task']} {req['size']} {req['frame_num']} frames{clips}, "
                f"{req['sample_steps']} steps, seed {req['seed']}", style="bold")
        out.say(f"  regime: {p['regime']}")
        for ref in p["request"].get("loras") or ():
            expert = f" ({ref['expert']}-noise expert)" if ref.get("expert") else ""
            out.say(f"  LoRA: {ref['file']} x {ref['scale']:g}{expert}")
        out.say(f"  GPUs: {p['nproc']} x {p['gpu_memory_gb']:g} GB ({gpus}) via {p['launcher']}")
        out.say(f"  peak GPU memory about {p['est_peak_gpu_gb']:g} GB per GPU; host RAM for loading about "
                f"{p['host_ram_need_gb']:g} GB" + (f" of {p['host_ram_gb']:g} GB free" if p.get("host_ram_gb") else ""))
        resident = f", {p['resident_blocks']} of 40 blocks resident" if p.get("resident_blocks") is not None else ""
        out.say(f"  weights {p['dtype']}, offload {p['offload_mode']}{resident}; "
                f"page-locked host copies about {p['pinned_host_gb']:g} GB")
        for reason in p["reasons"]:
            out.say(f"  - {reason}")
        for warning in p["warnings"]:
            out.say(f"  warning: {warning}", style="yellow")
        out.say("  argv: " + " ".join(shlex.quote(a) for a in p["argv"]))
    for line in data.get("checkpoints", []):
        out.warn(line)


def _show_plans(out: Output, settings, options: RequestOptions, prompt, prompt_file, machine: OfflineGpus,
                placeholder: str | None) -> None:
    """What `plan` and `generate --dry-run` share: the same checks, the same plans, the same output."""
    options = replace(options, dtype_default=settings.wan22_dtype)
    jobs, batch_given = batch.collect(options.with_loras(settings), prompt, prompt_file, placeholder_prompt=placeholder)
    batch.raise_single(jobs, batch_given)
    _refuse_when_none_valid(out, settings, jobs, batch_given)
    inventory, _ = _inventory(settings, machine)
    batch.plan_jobs(jobs, inventory, settings)
    batch.raise_single(jobs, batch_given)
    problems = batch.lora_problems(settings, jobs) + batch.checkpoint_problems(settings, jobs)
    out.result(batch.plans_output(jobs, problems), lambda data: _render_plans(out, data))


# --------------------------------------------------------------------------- runs


def run_one(kit, plan, out: Output, *, wait: bool, label: str, digest: str | None) -> dict:
    """Run one plan in the container; returns the agent's result event (status ok/failed/busy)."""
    result: dict = {}
    cmd = ["generate", "--plan-json", json.dumps(plan.to_dict())]
    if digest:
        cmd += ["--image-digest", digest]
    if plan.request.get("image"):
        cmd += ["--source-image", plan.request["image"]]
    if not wait:
        cmd.append("--no-wait")
    staged = [(plan.request["image"], plan.image)] if plan.image else []
    staged += staged_files(plan)
    try:
        for source, target in staged:
            kit.stage_file(source, target, plan.output_dir)
        with out.run_view(label) as view:
            def on_event(event):
                if event.get("event") == "result":
                    result.update(event)
                view.on_event(event)

            res = kit.run_agent(cmd, on_line=view.on_line, on_event=on_event)
    finally:
        if staged:
            kit.remove_tree(f"{plan.output_dir}/.staging/{plan.run_id}")
    if not result:
        result = {"status": "failed", "exit_code": res.exit_code,
                  "reason": f"the container side ended with exit code {res.exit_code} and no result"}
    if res.exit_code == EXIT_BUSY:
        result["status"] = "busy"
    return result


def _run_here(out: Output, settings, jobs: list[Job], batch_given: bool, kit, *, force: bool, no_wait: bool) -> None:
    batch.refuse_oversized(jobs, force)
    batch.raise_single(jobs, batch_given)
    from wan22ctl.doctor import require  # doctor's cheap checks: GPU architecture, driver, /dev/shm

    first = batch.valid_jobs(jobs)[0]
    require(settings, "generate", task=first.request.task, plan=first.plan)
    digest = kit.image_digest()

    def run(job: Job, label: str) -> dict:
        for warning in job.plan.warnings:
            out.warn(warning)
        return run_one(kit, job.plan, out, wait=not no_wait, label=label, digest=digest)

    batch.run_jobs(jobs, batch_given, run, BatchView(out, main_mounts(settings).to_host),
                   summarise=batch_given or out.json)


def _ran_on_server(out: Output, settings, jobs: list[Job], batch_given: bool) -> bool:
    """With a resident server serving the task (`wan22ctl up --serve`): queue every valid job there,
    then follow them in order as a local run is shown. False when there is no such server (or the
    batch mixes tasks, which one server cannot serve)."""
    from wan22ctl import server_client

    tasks = {j.request.task for j in batch.valid_jobs(jobs)}
    client = server_client.server_for(settings, tasks.pop()) if len(tasks) == 1 else None
    if client is None:
        return False

    def run(job: Job, label: str) -> dict:
        with out.run_view(label) as view:
            final = server_client.follow(client, job.job_id, view.on_job, view.say)
        return server_client.as_run(final)

    try:
        # All at once, so the server goes from one video to the next without waiting for this host.
        for job in batch.valid_jobs(jobs):
            try:
                job.job_id = server_client.submit(client, job.request)["id"]
            except UserError as exc:
                if not batch_given:
                    raise
                job.refuse(exc.message)
                continue
            out.say(f"{job.label + ': ' if batch_given else ''}submitted to the resident server as {job.job_id}")
        batch.run_jobs(jobs, batch_given, run, BatchView(out, main_mounts(settings).to_host),
                       summarise=batch_given or out.json)
    except KeyboardInterrupt:
        raise Interrupted("stopped watching; the server keeps the submitted job(s): `wan22ctl jobs` lists them, "
                          "`wan22ctl cancel ID` stops one") from None
    return True


def _generate(out: Output, options: RequestOptions, prompt, prompt_file, machine: OfflineGpus, *, force: bool,
              no_wait: bool, dry_run: bool) -> None:
    settings = load_cli_settings()
    if dry_run:
        _show_plans(out, settings, options, prompt, prompt_file, machine, placeholder=None)
        return
    options = replace(options, dtype_default=settings.wan22_dtype)
    jobs, batch_given = batch.collect(options.with_loras(settings), prompt, prompt_file)
    batch.raise_single(jobs, batch_given)
    problems = batch.lora_problems(settings, jobs) or batch.checkpoint_problems(settings, jobs)
    if problems:
        raise UserError(problems[0] if len(problems) == 1 else "; ".join(problems))
    _refuse_when_none_valid(out, settings, jobs, batch_given)
    if machine.count is not None:
        raise UserError("--gpu-count plans without Docker; drop it to generate (or add --dry-run)")
    if _ran_on_server(out, settings, jobs, batch_given):
        return
    inventory, kit = _inventory(settings, machine)
    batch.plan_jobs(jobs, inventory, settings)
    batch.raise_single(jobs, batch_given)
    _run_here(out, settings, jobs, batch_given, kit, force=force, no_wait=no_wait)


# --------------------------------------------------------------------------- commands


@request_options
@offline_gpus
def generate(
    options: RequestOptions,
    prompt: PromptOpt = None,
    prompt_file: PromptFileOpt = None,
    machine: OfflineGpus = OfflineGpus(),
    force: Annotated[bool, typer.Option("--force", help="Run even when the plan expects CUDA out of memory.")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Fail at once if another generation holds the GPUs.")] = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate videos with Wan2.2 in the container; outputs land in OUTPUT_DIR with a JSON sidecar."""
    try:
        _generate(Output(as_json), options, prompt, prompt_file, machine, force=force, no_wait=no_wait, dry_run=dry_run)
    except KeyboardInterrupt:
        raise Interrupted("interrupted: the generation was stopped in the container; no partial file is left") from None


@request_options
@offline_gpus
def plan(options: RequestOptions, prompt: PromptOpt = None, prompt_file: PromptFileOpt = None,
         machine: OfflineGpus = OfflineGpus(), as_json: JsonOpt = False) -> None:
    """Show how a generation would run: GPUs, torchrun or python, memory flags, the regime, the exact argv, and why."""
    _show_plans(Output(as_json), load_cli_settings(), options, prompt, prompt_file, machine,
                placeholder=PLACEHOLDER_PROMPT)


def register(app: typer.Typer) -> None:
    """Add `generate` and `plan` to the root app."""
    app.command("generate")(generate)
    app.command("plan")(plan)
