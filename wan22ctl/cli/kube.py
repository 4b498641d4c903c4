"""`wan22ctl kube render|apply`: the resident server on Kubernetes, many GPU pods on one PostgreSQL queue.

Examples:
    wan22ctl kube render                          # k8s/: base, components and every overlay
    wan22ctl kube render --overlay postgres -o deploy/k8s
    wan22ctl kube render --json                   # the plan (GPUs per pod, sizes, probes, secrets)
    wan22ctl kube apply --overlay postgres-keda   # secrets from settings, then kubectl apply -k
    wan22ctl kube apply --overlay keda --dry-run  # what it would run

`render` needs no cluster. `apply` needs `kubectl` and a reachable cluster (KUBECONFIG / the
current context); it stores WAN22_API_KEY, HF_TOKEN and WAN22_QUEUE_URL in Secrets through
kubectl's standard input (never its arguments, never a file), generating an API key and the
in-cluster database's password when none exist yet. docs/kubernetes.md has the walk-through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from wan22ctl.cli.options import DryRunOpt, JsonOpt
from wan22ctl.cli.output import Output
from wan22ctl.kubectl import Kubectl, apply_secrets, write_tree
from wan22ctl.settings import load_cli_settings

kube_app = typer.Typer(help="Kubernetes: render manifests from settings, apply them to a cluster.",
                       no_args_is_help=True)

OverlayOpt = Annotated[Optional[list[str]], typer.Option("--overlay", help="Overlay(s) to write: existing-db, "
                                                                        "postgres, keda, postgres-keda (default: all).")]
OutOpt = Annotated[Path, typer.Option("-o", "--output", help="Folder of the kustomize tree.")]


def _plan(overlays):
    from wan22ctl.plan import kube

    settings = load_cli_settings()
    plan = kube.plan_kube(settings, tuple(overlays) if overlays else None)
    return settings, plan


def _render(settings, plan, out: Path) -> list[str]:
    from wan22ctl.plan import kube

    tree = kube.render_tree(plan, kube.settings_env(settings), settings.hf_endpoint)
    return write_tree(out, {rel: kube.to_yaml(docs) for rel, docs in tree.items()})


def render(overlay: OverlayOpt = None, output: OutOpt = Path("k8s"), as_json: JsonOpt = False) -> None:
    """Write the kustomize tree (base, components, overlays) rendered from settings and the catalog."""
    settings, plan = _plan(overlay)
    written = _render(settings, plan, output)
    out = Output(as_json)

    def human(_):
        out.say(f"{len(written)} files under {output}/ for {plan.task} in namespace {plan.namespace}:")
        for rel in written:
            out.say(f"  {rel}")
        out.say(f"GPU pods: {plan.gpus_per_pod} x nvidia.com/gpu ({plan.launcher}), memory {plan.memory_request}, "
                f"/dev/shm {plan.shm}; checkpoints {plan.checkpoint_pvc}, outputs {plan.output_pvc} (ReadWriteMany)")
        for line in plan.reasons:
            out.say(f"  - {line}")
        for line in plan.warnings:
            out.warn(line)
        out.say(f"apply one overlay: wan22ctl kube apply --overlay {plan.overlays[0]}   "
                f"(or kubectl apply -k {output}/overlays/{plan.overlays[0]} after creating the Secrets)")

    out.result({"plan": plan.to_dict(), "output": str(output), "files": written}, human)


def apply(overlay: Annotated[str, typer.Option("--overlay", help="The overlay to apply.")] = "existing-db",
          output: OutOpt = Path("k8s"), dry_run: DryRunOpt = False) -> None:
    """Render, store the Secrets from settings, then `kubectl apply -k` the overlay."""
    from wan22ctl.plan import kube

    settings, plan = _plan([overlay])
    kubectl = Kubectl(plan.namespace, dry_run, Output().say)
    if not dry_run:
        kubectl.reachable()
    _render(settings, plan, output)
    if dry_run:
        kubectl.say(f"+ kubectl apply -f {output}/base/namespace.yaml")
    else:
        kubectl.run("apply", "-f", str(output / "base" / "namespace.yaml"))
    apply_secrets(settings, plan, kubectl, overlay)
    target = output / "overlays" / overlay
    if dry_run:
        kubectl.say(f"+ kubectl apply -k {target}")
        return
    applied = kubectl.run("apply", "-k", str(target))
    kubectl.say(applied.stdout.rstrip())
    kubectl.say(f"next: kubectl -n {plan.namespace} logs -f job/wan22-download-{plan.model}   (the checkpoints), then\n"
          f"      kubectl -n {plan.namespace} port-forward svc/{kube.SERVER} 8000:8000   (the API)")


def register(app: typer.Typer) -> None:
    """Add the `kube` group to the root app."""
    kube_app.command("render")(render)
    kube_app.command("apply")(apply)
    app.add_typer(kube_app, name="kube")
