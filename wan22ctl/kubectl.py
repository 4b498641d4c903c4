"""kubectl as a subprocess, and the rendered kustomize tree on disk: the adapters `wan22ctl kube`
calls. Secrets reach kubectl through its standard input (never its arguments, never a file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from wan22ctl.errors import EnvError, RunFailed, UserError


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


class Kubectl:
    """kubectl as a subprocess: secrets go through stdin, failures become one-line errors."""

    def __init__(self, namespace: str, dry_run: bool, say: Callable[[str], None]):
        self.namespace = namespace
        self.dry_run = dry_run
        self.say = say
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


def apply_secrets(settings, plan, kubectl: Kubectl, overlay: str) -> None:
    """Create or update the Secrets the overlay reads, from settings; generate what has no setting."""
    import secrets as random

    from wan22ctl.plan import kube

    api_key = settings.wan22_api_key or kubectl.secret_value(kube.SECRET_API_KEY, "key")
    if not api_key:
        api_key = random.token_urlsafe(32)
        kubectl.say(f"no WAN22_API_KEY set: a new key goes into Secret {kube.SECRET_API_KEY} "
              f"(read it with: kubectl -n {plan.namespace} get secret {kube.SECRET_API_KEY} "
              "-o jsonpath='{.data.key}' | base64 -d)")
    kubectl.put_secret(kube.SECRET_API_KEY, "key", api_key)
    if settings.hf_token:
        kubectl.put_secret(kube.SECRET_HF_TOKEN, "token", settings.hf_token)
    if "postgres" in kube.OVERLAYS[overlay]:
        password = kubectl.secret_value(kube.SECRET_POSTGRES, "password")
        if password is None:  # once: the database keeps the password it was created with
            password = random.token_hex(24)
            kubectl.put_secret(kube.SECRET_POSTGRES, "password", password)
        kubectl.put_secret(kube.SECRET_QUEUE, "url", kube.postgres_url(plan.namespace, password))
    elif settings.wan22_queue_url:
        kubectl.put_secret(kube.SECRET_QUEUE, "url", settings.wan22_queue_url)
    elif kubectl.dry_run or kubectl.secret_value(kube.SECRET_QUEUE, "url") is None:
        raise UserError(f"overlay {overlay} uses an existing PostgreSQL, but WAN22_QUEUE_URL is not set",
                        fix="set WAN22_QUEUE_URL=postgresql://user:password@host:5432/db in .env, or use "
                            "--overlay postgres (a database in the cluster)")
