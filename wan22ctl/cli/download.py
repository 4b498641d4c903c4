"""`wan22ctl download | verify | models`: checkpoints into the host-mounted folders, verified.

Usage examples:
    wan22ctl download ti2va                  # T2V + I2V, inside the container, into CHECKPOINT_DIR
    wan22ctl download ti2v-5b --dry-run      # files, sizes, free-space verdict; nothing written
    wan22ctl download t2v --local            # same code on the host (no container needed)
    wan22ctl download fun-control            # VideoX-Fun models: always on the host, into VIDEOX_MODELS_DIR
    wan22ctl verify t2v                      # re-hash every file against the hub
    wan22ctl models --json                   # complete / partial / absent for each catalog model

By default the work runs in the main container through `wan22ctl-agent download` (the container
is started, or created, when it is not running; a running one is used as it is). HF_TOKEN and
HF_ENDPOINT reach that one exec's environment only, never the container's configuration.
VideoX-Fun models (fun-control, cogvideox-fun) are fetched on the host: the main container does
not mount VIDEOX_MODELS_DIR and the VideoX-Fun image need not carry the kit.
`--dry-run` plans on the host against the same host folders (nothing starts, nothing is written).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Annotated

import typer

from wan22ctl.cli.options import DryRunOpt, JsonOpt, LocalOpt, RevisionOpt, SelectorsArg, WorkersOpt
from wan22ctl.cli.output import Output
from wan22ctl.paths import CONTAINER_CHECKPOINT_DIR, main_mounts
from wan22ctl.settings import load_cli_settings

# Passed through to the agent when set on the host (retry tuning for slow or flaky links).
_PASSTHROUGH_ENV = ("WAN22CTL_HUB_RETRIES", "WAN22CTL_HUB_BACKOFF_S", "HF_HUB_DOWNLOAD_TIMEOUT", "MODELSCOPE_ENDPOINT")


def _host_roots(settings) -> dict[str, str]:
    return {"checkpoints": settings.checkpoint_dir, "videox": settings.videox_models_dir}


def _exec_env(settings) -> dict[str, str]:
    """The agent's environment for one exec: endpoint, token (only here), retry knobs."""
    env = {"HF_ENDPOINT": settings.hf_endpoint, "PYTHONUNBUFFERED": "1"}
    if settings.hf_token:
        env["HF_TOKEN"] = settings.hf_token
    env.update({k: os.environ[k] for k in _PASSTHROUGH_ENV if k in os.environ})
    return env


def _container(settings, view):
    """The running main container, started (or created) when needed; refused when it mounts
    another folder than CHECKPOINT_DIR (.env changed since `up`)."""
    from wan22ctl import catalog
    from wan22ctl.docker.client import connect
    from wan22ctl.docker.kit import KitContainer
    from wan22ctl.errors import EnvError
    from wan22ctl.plan.container import plan_container

    client = connect()
    kit = KitContainer.find(settings, client=client)
    if kit is None or not kit.is_running:
        spec = plan_container(settings, catalog.MAIN)
        kit, result = KitContainer.up(client, spec, catalog.MAIN)
        view.log(f"{spec.name} {result.action} for the download (stop it with `wan22ctl down`)")
        return kit
    source = kit.mount_source(CONTAINER_CHECKPOINT_DIR)
    if source is not None and os.path.realpath(source) != os.path.realpath(settings.checkpoint_dir):
        raise EnvError(
            f"{kit.name} mounts {source} at {CONTAINER_CHECKPOINT_DIR}, but CHECKPOINT_DIR is {settings.checkpoint_dir}",
            fix="run `wan22ctl up` (recreates the container with the new mount) or download with --local",
        )
    return kit


def _run_agent(settings, view, argv: list[str]) -> None:
    """Run `wan22ctl-agent ARGV` in the container, rendering its events; exit with its code on failure."""
    result = _container(settings, view).run_agent([*argv, "--events"], environment=_exec_env(settings),
                                                  on_event=view.handle, on_line=lambda _stream, line: view.log(line))
    if result.exit_code != 0:
        raise typer.Exit(result.exit_code)


@contextmanager
def _interrupt_note(view):
    """On Ctrl-C say what survives (typer then exits 130)."""
    try:
        yield
    except KeyboardInterrupt:
        view.log("interrupted: finished files are verified and kept, partial files are kept; "
                 "rerun the same command to resume")
        raise


def _split(models, local: bool):
    """(models for the container, models for the host)."""
    if local:
        return [], list(models)
    return [m for m in models if m.mount == "checkpoints"], [m for m in models if m.mount != "checkpoints"]


def download(
    selectors: SelectorsArg,
    local: LocalOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Download even when the disk preflight says it won't fit.")] = False,
    source: Annotated[str, typer.Option("--source", help="hf (Hugging Face or HF_ENDPOINT mirror) or modelscope.")] = "hf",
    workers: WorkersOpt = 8,
    revision: RevisionOpt = "main",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Download checkpoints: disk preflight, parallel resumable transfer, sha256 verification, manifest."""
    from wan22ctl.agent.downloads import run_download
    from wan22ctl.errors import UserError
    from wan22ctl.hub.progress import DownloadView
    from wan22ctl.plan.download import resolve_models

    if source not in ("hf", "modelscope"):
        raise UserError(f"unknown --source {source!r}; choose hf or modelscope")
    settings = load_cli_settings()
    out = Output(as_json)
    models = resolve_models(selectors)
    hf_only = [m.key for m in models if source == "modelscope" and not m.modelscope_id]
    if hf_only:
        raise UserError(f"{', '.join(hf_only)}: the catalog knows no ModelScope copy; download with --source hf")
    if not dry_run:
        from wan22ctl.doctor import require  # doctor's cheap checks: host folders usable

        require(settings, "download", models=models)
    in_container, on_host = _split(models, local or dry_run)
    with DownloadView(out.err, quiet=as_json, path_map=main_mounts(settings).as_dict()) as view, _interrupt_note(view):
        if on_host:
            if not local and not dry_run:
                view.log(f"{', '.join(m.key for m in on_host)}: VideoX-Fun models are fetched on the host "
                         f"into VIDEOX_MODELS_DIR={settings.videox_models_dir}")
            run_download([m.key for m in on_host], _host_roots(settings), endpoint=settings.hf_endpoint,
                         token=settings.hf_token or None, force=force, source=source, dry_run=dry_run,
                         workers=workers, revision=revision, on_event=view.sink)
        if in_container:
            argv = ["download", *[m.key for m in in_container], "--workers", str(workers), "--revision", revision,
                    "--source", source]
            _run_agent(settings, view, argv + (["--force"] if force else []))
    plans = [e["plan"] for e in view.events if e.get("event") == "plan"]
    done = [e for e in view.events if e.get("event") == "model_done"]
    out.result({"dry_run": dry_run, "plans": plans, "models": done})


def verify(
    selectors: SelectorsArg,
    local: LocalOpt = False,
    workers: WorkersOpt = 4,
    revision: RevisionOpt = "main",
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every checkpoint file against the hub; exit 1 naming corrupt or missing files."""
    from wan22ctl.agent.downloads import run_verify
    from wan22ctl.hub.progress import DownloadView
    from wan22ctl.plan.download import resolve_models

    settings = load_cli_settings()
    out = Output(as_json)
    models = resolve_models(selectors)
    in_container, on_host = _split(models, local)
    failure = None
    with DownloadView(out.err, quiet=as_json, path_map=main_mounts(settings).as_dict()) as view:
        if on_host:
            from wan22ctl.errors import RunFailed

            try:
                run_verify([m.key for m in on_host], _host_roots(settings), endpoint=settings.hf_endpoint,
                           token=settings.hf_token or None, workers=workers, revision=revision,
                           on_event=view.sink)
            except RunFailed as exc:
                failure = exc
        if in_container:
            try:
                _run_agent(settings, view, ["verify", *[m.key for m in in_container], "--workers", str(workers),
                                            "--revision", revision])
            except typer.Exit as exc:
                failure = failure or exc
    out.result({"models": [e for e in view.events if e.get("event") == "verified"]})
    if failure is not None:
        raise failure


def models(as_json: JsonOpt = False) -> None:
    """Each catalog model: complete / partial (what is missing) / absent, size, revision, path."""
    from wan22ctl.agent.downloads import model_rows, render_models

    rows = model_rows(_host_roots(load_cli_settings()))
    out = Output(as_json)
    out.result({"models": rows}, lambda d: render_models(d["models"], out.console))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("download")(download)
    app.command("verify")(verify)
    app.command("models")(models)
