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

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Annotated, Optional

import typer

from wan22ctl.cli.options import DryRunOpt, JsonOpt
from wan22ctl.cli.output import Output
from wan22ctl.errors import EnvError, RunFailed, UserError
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


def write_tree(out: Path, files: dict[str, str]) -> list[str]:
    """Write the rendered files; a file there that a render did not write is never overwritten."""
    from wan22ctl.plan.kube import HEADER

    for rel in files:
        path = out / rel
        if path.exists() and not path.read_text(errors="replace").startswith(HEADER):
            raise UserError(f"{path} exists and was not written by `wan22ctl kube render`; it is left alone",
                            fix="move it away, or render into another folder with -o")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".partial")
        tmp.write_text(text)
        os.replace(tmp, path)
    return sorted(files)


def _render(settings, plan, out: Path) -> list[str]:
    from wan22ctl.plan import kube

    tree = kube.render_tree(plan, kube.settings_env(settings), settings["HF_ENDPOINT"])
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


# --------------------------------------------------------------------------- apply


class Kubectl:
    """kubectl as a subprocess: secrets go through stdin, failures become one-line errors."""

    def __init__(self, namespace: str, dry_run: bool, out: Output):
        self.namespace = namespace
        self.dry_run = dry_run
        self.say = out.say
        self.binary = shutil.which("kubectl")
        if self.binary is None:
            raise EnvError("kubectl is not installed", fix="install kubectl (1.27 or newer) and point KUBECONFIG at "
                                                           "your cluster")

    def run(self, *args: str, stdin: str | None = None, check: bool = True, show: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
        argv = [self.binary, *args]
        if show:
            self.say("+ kubectl " + " ".join(args) + (" < (from settings)" if stdin is not None else ""))
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RunFailed(f"kubectl {args[0]} failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
        return out

    def reachable(self) -> None:
        out = self.run("version", "--request-timeout=10s", "-o", "json", check=False, show=False, timeout=60)
        try:
            server = json.loads(out.stdout or "{}").get("serverVersion")
        except json.JSONDecodeError:
            server = None
        if server is None:
            reason = (out.stderr.strip().splitlines() or ["no answer"])[-1]
            context = self.run("config", "current-context", check=False, show=False).stdout.strip() or "(none)"
            raise EnvError(f"no Kubernetes cluster is reachable (context {context}): {reason}",
                           fix="point KUBECONFIG (or `kubectl config use-context`) at your cluster; "
                               "`wan22ctl kube render` works without one")

    def secret_value(self, name: str, key: str) -> str | None:
        import base64

        out = self.run("get", "secret", name, "-n", self.namespace, "-o", f"jsonpath={{.data.{key}}}",
                       check=False, show=False)
        if out.returncode != 0 or not out.stdout:
            return None
        return base64.b64decode(out.stdout).decode()

    def put_secret(self, name: str, key: str, value: str) -> None:
        from wan22ctl.plan.kube import LABELS

        doc = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": name, "namespace": self.namespace, "labels": LABELS}, "stringData": {key: value}}
        if self.dry_run:
            self.say(f"+ kubectl apply --server-side -f - < Secret {name} (key {key}, from settings)")
            return
        # Server-side apply: client-side apply would copy the value into the
        # last-applied-configuration annotation, which `kubectl describe` shows.
        self.run("apply", "--server-side", "--field-manager=wan22ctl", "--force-conflicts", "-f", "-",
                 stdin=json.dumps(doc), show=False)
        self.say(f"+ Secret {name} (key {key}) applied")


def _secrets(settings, plan, kubectl: Kubectl, overlay: str) -> None:
    """Create or update the Secrets the overlay reads, from settings; generate what has no setting."""
    import secrets as random

    from wan22ctl.plan import kube

    api_key = settings["WAN22_API_KEY"] or kubectl.secret_value(kube.SECRET_API_KEY, "key")
    if not api_key:
        api_key = random.token_urlsafe(32)
        kubectl.say(f"no WAN22_API_KEY set: a new key goes into Secret {kube.SECRET_API_KEY} "
              f"(read it with: kubectl -n {plan.namespace} get secret {kube.SECRET_API_KEY} "
              "-o jsonpath='{.data.key}' | base64 -d)")
    kubectl.put_secret(kube.SECRET_API_KEY, "key", api_key)
    if settings["HF_TOKEN"]:
        kubectl.put_secret(kube.SECRET_HF_TOKEN, "token", settings["HF_TOKEN"])
    if "postgres" in kube.OVERLAYS[overlay]:
        password = kubectl.secret_value(kube.SECRET_POSTGRES, "password")
        if password is None:  # once: the database keeps the password it was created with
            password = random.token_hex(24)
            kubectl.put_secret(kube.SECRET_POSTGRES, "password", password)
        kubectl.put_secret(kube.SECRET_QUEUE, "url", kube.postgres_url(plan.namespace, password))
    elif settings["WAN22_QUEUE_URL"]:
        kubectl.put_secret(kube.SECRET_QUEUE, "url", settings["WAN22_QUEUE_URL"])
    elif kubectl.dry_run or kubectl.secret_value(kube.SECRET_QUEUE, "url") is None:
        raise UserError(f"overlay {overlay} uses an existing PostgreSQL, but WAN22_QUEUE_URL is not set",
                        fix="set WAN22_QUEUE_URL=postgresql://user:password@host:5432/db in .env, or use "
                            "--overlay postgres (a database in the cluster)")


def apply(overlay: Annotated[str, typer.Option("--overlay", help="The overlay to apply.")] = "existing-db",
          output: OutOpt = Path("k8s"), dry_run: DryRunOpt = False) -> None:
    """Render, store the Secrets from settings, then `kubectl apply -k` the overlay."""
    from wan22ctl.plan import kube

    settings, plan = _plan([overlay])
    kubectl = Kubectl(plan.namespace, dry_run, Output())
    if not dry_run:
        kubectl.reachable()
    _render(settings, plan, output)
    if dry_run:
        kubectl.say(f"+ kubectl apply -f {output}/base/namespace.yaml")
    else:
        kubectl.run("apply", "-f", str(output / "base" / "namespace.yaml"))
    _secrets(settings, plan, kubectl, overlay)
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
