"""`wan22ctl-agent download|verify|models`: checkpoint downloads, the same code inside and outside Docker.

    wan22ctl-agent download ti2va                 # T2V + I2V into $WAN22_CHECKPOINT_DIR (/opt/checkpoints)
    wan22ctl-agent download ti2v-5b --dry-run     # the plan (files, sizes, free space), nothing written
    wan22ctl-agent verify t2v                     # re-hash every file against the hub
    wan22ctl-agent models --json                  # complete / partial / absent per catalog model

HF_TOKEN and HF_ENDPOINT come from the process environment (`wan22ctl download` passes them to
this exec only). Roots: --checkpoint-dir (default $WAN22_CHECKPOINT_DIR or /opt/checkpoints) and
--videox-models-dir (default $WAN22_VIDEOX_MODELS_DIR or VideoX-Fun's models/ folder).
Output: `@@wan22ctl` event lines when stdout is not a terminal (the host renders them), a rich
progress display when it is (`download_model.sh` in an attached shell).
`wan22ctl download --local` calls `run_download()` / `run_verify()` in-process on the host.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

from wan22ctl import catalog, paths
from wan22ctl.errors import EnvError, RunFailed
from wan22ctl.plan.download import DownloadPlan, resolve_models, space_refusal

DEFAULT_ENDPOINT = "https://huggingface.co"


def default_roots() -> dict[str, str]:
    return {
        "checkpoints": os.environ.get("WAN22_CHECKPOINT_DIR", paths.CONTAINER_CHECKPOINT_DIR),
        "videox": os.environ.get("WAN22_VIDEOX_MODELS_DIR", paths.CONTAINER_VIDEOX_MODELS_DIR),
    }


def run_download(selectors: list[str], roots: dict[str, str], *, endpoint: str, token: str | None,
                 force: bool = False, source: str = "hf", dry_run: bool = False, workers: int = 8,
                 revision: str = "main", on_event: Callable[..., None]) -> DownloadPlan | None:
    """Plan, preflight, fetch and verify; the plan (None for ModelScope, which plans on its own)."""
    from wan22ctl.hub import download as engine

    models = resolve_models(selectors)
    if source == "modelscope":
        from wan22ctl.hub import modelscope

        if dry_run:
            raise EnvError("--dry-run needs the Hugging Face source (ModelScope gives no size listing here)",
                           fix="drop --source modelscope for the plan")
        for m in models:
            modelscope.download(m, roots, workers=workers, on_event=on_event)
        return None
    plan = engine.prepare(models, roots, endpoint=endpoint, token=token, revision=revision, force=force,
                          on_event=on_event)
    on_event("plan", plan=plan.to_dict(), dry_run=dry_run)
    if dry_run:
        return plan
    refusal = space_refusal(plan)
    if refusal and not force:
        raise EnvError(refusal + "; nothing was downloaded",
                       fix="free space or point CHECKPOINT_DIR/VIDEOX_MODELS_DIR at a bigger disk (--force tries anyway)")
    if refusal:
        on_event("warning", message=refusal + " (--force: downloading anyway)")
    engine.execute(plan, token=token, workers=workers, on_event=on_event)
    return plan


def run_verify(selectors: list[str], roots: dict[str, str], *, endpoint: str, token: str | None,
               workers: int = 8, revision: str = "main", on_event: Callable[..., None]) -> list[dict]:
    """Re-hash each model against the hub; RunFailed naming the bad files when any do not match."""
    from wan22ctl.hub import download as engine

    models = resolve_models(selectors)
    results = engine.verify(models, roots, endpoint=endpoint, token=token, revision=revision, workers=workers,
                            on_event=on_event)
    broken = [r for r in results if r["state"] != "complete"]
    if broken:
        parts = []
        for r in broken:
            what = [f"{len(r['bad'])} corrupt" if r["bad"] else "", f"{len(r['missing'])} missing" if r["missing"] else ""]
            parts.append(f"{r['key']}: {', '.join(w for w in what if w)} ({', '.join((r['bad'] + r['missing'])[:5])})")
        raise RunFailed("verification failed: " + "; ".join(parts),
                        fix=f"run `wan22ctl download {' '.join(r['key'] for r in broken)}` to fetch them again")
    return results


def model_rows(roots: dict[str, str]) -> list[dict]:
    """Every catalog model with its state on disk (no network)."""
    from wan22ctl.hub.state import model_dir, model_state

    rows = []
    for m in catalog.MODELS:
        state, missing, manifest = model_state(m, roots[m.mount])
        rows.append({
            "key": m.key, "repo": m.repo_id, "state": state, "missing": missing,
            "size_bytes": manifest.get("total_bytes") if manifest else None,
            "approx_gb": m.approx_gb,
            "revision": manifest.get("commit") if manifest else None,
            "path": str(model_dir(m, roots[m.mount])), "mount": m.mount,
        })
    return rows


def render_models(rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    from wan22ctl.plan.download import human_bytes

    table = Table(show_header=True, header_style="bold")
    for col in ("model", "repo", "state", "size", "revision", "path"):
        table.add_column(col)
    for r in rows:
        state = r["state"]
        if state == "partial":
            state += f" (missing {len(r['missing'])}: {', '.join(r['missing'][:3])}{' ...' if len(r['missing']) > 3 else ''})"
        size = human_bytes(r["size_bytes"]) if r["size_bytes"] is not None else f"~{r['approx_gb']:.0f} GB"
        table.add_row(r["key"], r["repo"], state, size, (r["revision"] or "-")[:12], r["path"])
    (console or Console(highlight=False)).print(table)


# --------------------------------------------------------------------------- argparse side


def _sink(args):
    """(on_event, context manager): rich display on a terminal, event lines otherwise."""
    from contextlib import nullcontext

    from wan22ctl import protocol

    if sys.stdout.isatty() and not getattr(args, "events", False):
        from wan22ctl.hub.progress import DownloadView

        view = DownloadView()
        return view.sink, view
    return protocol.emit, nullcontext()


def _roots(args) -> dict[str, str]:
    roots = default_roots()
    if args.checkpoint_dir:
        roots["checkpoints"] = args.checkpoint_dir
    if args.videox_models_dir:
        roots["videox"] = args.videox_models_dir
    return roots


def _cmd_download(args) -> int:
    on_event, ctx = _sink(args)
    with ctx:
        run_download(args.selectors, _roots(args), endpoint=os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
                     token=os.environ.get("HF_TOKEN") or None, force=args.force, source=args.source,
                     dry_run=args.dry_run, workers=args.workers, revision=args.revision, on_event=on_event)
    return 0


def _cmd_verify(args) -> int:
    on_event, ctx = _sink(args)
    with ctx:
        run_verify(args.selectors, _roots(args), endpoint=os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
                   token=os.environ.get("HF_TOKEN") or None, workers=args.workers, revision=args.revision,
                   on_event=on_event)
    return 0


def _cmd_models(args) -> int:
    for key in args.wait_for or ():
        code = _wait_for(key, _roots(args))
        if code:
            return code
    if args.wait_for:
        return 0
    rows = model_rows(_roots(args))
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
    else:
        render_models(rows)
    return 0


def _wait_for(key: str, roots: dict[str, str], every_s: float = 15.0) -> int:
    """Block until a model is complete on disk (a Kubernetes init container waits for the download Job)."""
    import time

    if key not in catalog.MODEL_BY_KEY:
        print(f"error: unknown model {key!r}; choose one of {', '.join(catalog.MODEL_BY_KEY)}", file=sys.stderr)
        return 2
    said = None
    while True:
        row = next(r for r in model_rows(roots) if r["key"] == key)
        if row["state"] == "complete":
            print(f"{key}: complete", flush=True)
            return 0
        if row["state"] != said:
            print(f"{key}: {row['state']}; waiting for the download to finish", flush=True)
            said = row["state"]
        time.sleep(every_s)


def _common(p) -> None:
    p.add_argument("--checkpoint-dir", help="root of Wan2.2 checkpoints (default $WAN22_CHECKPOINT_DIR or /opt/checkpoints)")
    p.add_argument("--videox-models-dir", help="VideoX-Fun models/ root (default $WAN22_VIDEOX_MODELS_DIR)")


def add_parser(sub) -> None:
    names = ", ".join(catalog.valid_selectors())
    d = sub.add_parser("download", help="download checkpoints (resumable, verified, disk preflight)")
    d.add_argument("selectors", nargs="+", metavar="SELECTOR", help=f"one of: {names}")
    d.add_argument("--force", action="store_true", help="download even when the disk preflight says it won't fit")
    d.add_argument("--source", choices=("hf", "modelscope"), default="hf")
    d.add_argument("--dry-run", action="store_true", help="print the plan; download nothing")
    d.add_argument("--workers", type=int, default=8, help="files transferred in parallel")
    d.add_argument("--revision", default="main", help="branch, tag or commit of the repos")
    d.add_argument("--events", action="store_true", help="event lines even on a terminal")
    _common(d)
    d.set_defaults(func=_cmd_download)

    v = sub.add_parser("verify", help="re-hash checkpoint files against the hub's sha256 / git ids")
    v.add_argument("selectors", nargs="+", metavar="SELECTOR", help=f"one of: {names}")
    v.add_argument("--workers", type=int, default=4)
    v.add_argument("--revision", default="main")
    v.add_argument("--events", action="store_true", help="event lines even on a terminal")
    _common(v)
    v.set_defaults(func=_cmd_verify)

    m = sub.add_parser("models", help="state of each catalog model on disk")
    m.add_argument("--json", action="store_true")
    m.add_argument("--wait-for", metavar="MODEL", action="append",
                   help="wait until this model (a catalog key) is complete, then exit 0; repeatable")
    _common(m)
    m.set_defaults(func=_cmd_models)
