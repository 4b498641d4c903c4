"""Kubernetes manifests from the same settings and catalog: a kustomize tree as plain data.

`plan_kube(settings)` decides (pure, no cluster needed) and `render_tree(plan)` turns the decision
into files; `wan22ctl kube render` writes them and `wan22ctl kube apply` applies one overlay.

    base/                       namespace (Pod Security "baseline" enforced), the two shared volumes,
                                the checkpoint download Job, the server Deployment and its Service
    components/postgres/        a single-instance PostgreSQL StatefulSet for small teams
    components/keda/            KEDA ScaledObject (postgresql trigger on the backlog, 0..N GPU pods)
                                plus a CPU-only API Deployment that keeps accepting jobs at zero
    overlays/existing-db/       base; the queue URL comes from Secret wan22-queue
    overlays/postgres/          base + components/postgres
    overlays/keda/              base + components/keda
    overlays/postgres-keda/     base + both

Decisions and where they come from:
- GPUs per pod, torchrun ranks and memory flags: `plan.launch.plan_launch` for SERVER_TASK on
  KUBE_GPUS_PER_POD GPUs of KUBE_GPU_MEMORY_GB, as `generate` plans (the pod re-plans with
  `--plan auto` from what nvidia-smi shows it, the same function); host RAM to request, too.
- Checkpoint volume size: the catalog's size of the task's model plus room for partial files.
- Startup probe: long enough to read the checkpoints from a network volume and load them.
- Security: no privileged container, no host IPC/PID/network, no hostPath, RuntimeDefault
  seccomp: the Pod Security "baseline" profile (docs/kubernetes.md says why the Docker
  container's privileged/host-IPC flags are not needed here).
Secrets are referenced by name only; `kube apply` creates them from settings through stdin.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from wan22ctl import catalog, paths
from wan22ctl.plan.container import MAIN_ENVIRONMENT, SERVER_CONTAINER_PORT
from wan22ctl.settings import Settings

OVERLAYS: dict[str, tuple[str, ...]] = {  # overlay -> components
    "existing-db": (),
    "postgres": ("postgres",),
    "keda": ("keda",),
    "postgres-keda": ("postgres", "keda"),
}
HEADER = "# Rendered by `wan22ctl kube render` from settings and the model catalog; a new render replaces it.\n"

SERVER = "wan22-server"
API = "wan22-api"
POSTGRES = "wan22-postgres"
CHECKPOINTS_PVC = "wan22-checkpoints"
OUTPUTS_PVC = "wan22-outputs"
SECRET_QUEUE = "wan22-queue"  # key url: postgresql://…
SECRET_API_KEY = "wan22-api-key"  # key key
SECRET_HF_TOKEN = "wan22-hf-token"  # key token (download Job only)
SECRET_POSTGRES = "wan22-postgres"  # key password (postgres overlays)
POSTGRES_IMAGE = "postgres:15-bookworm"
POSTGRES_USER = POSTGRES_DB = "wan22"
API_KEY_PATH = "/var/run/secrets/wan22/api-key"
LEASE_S = 30
# Reading checkpoints from a network volume: assume no more than this (bytes/s) for the startup
# probe, plus a fixed part for torch/CUDA start-up and the pipeline build.
SLOW_VOLUME_BPS = 250e6
LOAD_FIXED_S = 180
PVC_HEADROOM = 1.25  # partial files of a resumed download beside the complete ones
# SIGTERM stops the running job after its current step and re-queues it; a step of A14B at 720P
# on one GPU, plus VAE decode and save when the signal came after the last step.
GRACE_S = 300

LABELS = {"app.kubernetes.io/name": "wan22ctl", "app.kubernetes.io/part-of": "wan22ctl"}
API_LABEL = {"wan22ctl.io/api": "true"}  # every pod that answers the API; the Service selects them


@dataclass(frozen=True)
class SecretNeed:
    """A Secret the manifests read, and the setting `kube apply` fills it from."""

    name: str
    key: str
    setting: str | None  # None: made by `kube apply` (a generated password or composed URL)
    required: bool
    purpose: str


@dataclass(frozen=True)
class KubePlan:
    """What `kube render` writes, decided from settings; printable with --json."""

    namespace: str
    task: str
    model: str
    image: str
    replicas: int
    max_replicas: int
    gpus_per_pod: int
    launcher: str
    server_flags: dict
    host_ram_gb: int
    memory_request: str
    cpu_request: str
    shm: str
    checkpoint_pvc: str
    output_pvc: str
    storage_class: str | None
    node_selector: dict
    tolerations: list
    startup_probe_s: int
    termination_grace_s: int
    overlays: tuple[str, ...]
    secrets: tuple[SecretNeed, ...]
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())
    preset: str | None = None  # SERVER_PRESET: the replicas merge its LoRAs at load
    lora_model: str | None = None  # the preset's catalog LoRA model, downloaded beside `model`

    @property
    def models(self) -> tuple[str, ...]:
        """What the download Job fetches and the pods wait for."""
        return (self.model, self.lora_model) if self.lora_model else (self.model,)

    def to_dict(self) -> dict:
        return asdict(self)


def shm_quantity(size: str) -> str:
    """SHM_SIZE (16g, 512m, bytes) as a Kubernetes quantity (16Gi, 512Mi, bytes)."""
    unit = {"g": "Gi", "m": "Mi", "k": "Ki", "b": ""}.get(size[-1].lower()) if size[-1].isalpha() else ""
    number = size[:-1] if size[-1].isalpha() else size
    return f"{int(number)}{unit}"


def checkpoint_size_gi(*models: catalog.Model) -> int:
    """The checkpoint volume: the models (the task's, a preset's LoRAs) plus headroom, rounded up to 10 Gi."""
    return int(math.ceil(sum(m.approx_gb for m in models) * 1e9 / 2**30 * PVC_HEADROOM / 10) * 10)


def _parse_tolerations(value: str) -> list[dict]:
    out = []
    for item in filter(None, value.split(",")):
        key_value, effect = item.rsplit(":", 1)
        key, eq, val = key_value.partition("=")
        out.append({"key": key, "operator": "Equal", "value": val, "effect": effect} if eq
                   else {"key": key, "operator": "Exists", "effect": effect})
    return out


def plan_kube(settings: Settings, overlays: tuple[str, ...] | None = None) -> KubePlan:
    """Decide the manifests' contents from settings, the catalog and the launch planner."""
    from wan22ctl.errors import UserError
    from wan22ctl.plan.container import server_preset_lora
    from wan22ctl.plan.launch import plan_launch, server_request, synthetic_inventory

    chosen = tuple(overlays or OVERLAYS)
    unknown = [o for o in chosen if o not in OVERLAYS]
    if unknown:
        raise UserError(f"unknown overlay {unknown[0]!r}; choose from {', '.join(OVERLAYS)}")
    task = settings["SERVER_TASK"]
    model = catalog.model_for_task(task)
    lora_key = server_preset_lora(settings)
    stored = (model, catalog.MODEL_BY_KEY[lora_key]) if lora_key else (model,)
    gpus = settings.kube_gpus_per_pod
    mem = float(settings.kube_gpu_memory_gb)
    # WAN22_DTYPE is about the A14B experts (as for `server --plan auto`): other tasks keep bf16
    request = server_request(task, gpus=str(gpus), dtype=settings["WAN22_DTYPE"] if catalog.TASKS[task].moe else "bf16")
    launch = plan_launch(request, synthetic_inventory(gpus, mem, f"GPU {mem:g} GB (KUBE_GPU_MEMORY_GB)"),
                         run_id="kube", attention=settings["WAN22_ATTENTION"], compile_mode=settings["WAN22_COMPILE"])
    shm = shm_quantity(settings["SHM_SIZE"])
    shm_gi = _gi(shm)
    host_ram = int(math.ceil(launch.host_ram_need_gb))
    load_s = LOAD_FIXED_S + model.approx_gb * 1e9 / SLOW_VOLUME_BPS
    startup_s = int(math.ceil(load_s * 1.5 / 60) * 60)
    # The pod re-plans host RAM from its node and attention at start; those lines say nothing here.
    kept = [r for r in launch.reasons[1:] if not r.startswith(("host RAM not checked", "started through"))]
    reasons = [f"{launch.nproc} GPU(s) per pod: {launch.reasons[0]}", *kept,
               f"memory request {host_ram + shm_gi}Gi: loading needs about {launch.host_ram_need_gb:.0f} GB of host RAM "
               f"(every rank reads the weights on the CPU) plus {shm} of /dev/shm, which counts as pod memory",
               f"checkpoint volume {checkpoint_size_gi(*stored)}Gi: "
               + " and ".join(f"{m.repo_id} is about {m.approx_gb:g} GB" for m in stored) + ", "
               f"+{int((PVC_HEADROOM - 1) * 100)}% for partial files while a download resumes",
               *([f"--preset {settings['SERVER_PRESET']}: every replica merges the {lora_key} LoRAs once at load and "
                  f"requests that name no preset get its settings; the download Job fetches {lora_key} beside "
                  f"{model.key}, and the API pod waits for both to check requests against the same LoRA set"]
                 if lora_key else []),
               f"startup probe allows {startup_s} s: {LOAD_FIXED_S} s to start plus reading "
               f"{model.approx_gb:g} GB at {SLOW_VOLUME_BPS / 1e6:.0f} MB/s, times 1.5"]
    secrets = [
        SecretNeed(SECRET_API_KEY, "key", "WAN22_API_KEY", True,
                   "clients' Bearer key; `kube apply` generates one when the setting is empty"),
        SecretNeed(SECRET_HF_TOKEN, "token", "HF_TOKEN", False, "Hugging Face token, read by the download Job only"),
        SecretNeed(SECRET_QUEUE, "url", "WAN22_QUEUE_URL", True,
                   "the shared queue's URL (postgres overlays: composed from wan22-postgres)"),
    ]
    if any("postgres" in OVERLAYS[o] for o in chosen):
        secrets.append(SecretNeed(SECRET_POSTGRES, "password", None, False,
                                  "postgres overlays: the in-cluster database's password, generated once"))
    return KubePlan(
        namespace=settings["KUBE_NAMESPACE"], task=task, model=model.key, image=settings["DOCKER_IMAGE"],
        replicas=settings.kube_replicas, max_replicas=settings.kube_max_replicas,
        gpus_per_pod=launch.nproc, launcher=launch.launcher,
        server_flags={"offload_model": launch.offload_model, "ulysses_size": launch.ulysses_size,
                      "dit_fsdp": launch.dit_fsdp, "t5_fsdp": launch.t5_fsdp,
                      "convert_model_dtype": launch.convert_model_dtype, "t5_cpu": launch.t5_cpu,
                      "est_peak_gpu_gb": launch.est_peak_gpu_gb},
        host_ram_gb=host_ram, memory_request=f"{host_ram + shm_gi}Gi", cpu_request=str(4 * launch.nproc), shm=shm,
        checkpoint_pvc=f"{checkpoint_size_gi(*stored)}Gi", output_pvc=settings["KUBE_OUTPUT_SIZE"],
        storage_class=settings["KUBE_STORAGE_CLASS"] or None,
        node_selector=dict(kv.split("=", 1) for kv in filter(None, settings["KUBE_NODE_SELECTOR"].split(","))),
        tolerations=_parse_tolerations(settings["KUBE_TOLERATIONS"]), startup_probe_s=startup_s,
        termination_grace_s=GRACE_S, overlays=chosen, secrets=tuple(secrets), reasons=tuple(reasons),
        warnings=tuple(launch.warnings), preset=settings["SERVER_PRESET"] or None, lora_model=lora_key)


def _gi(quantity: str) -> int:
    """A memory quantity rounded up to whole Gi."""
    factors = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    unit = quantity[-2:] if quantity[-2:] in factors else ""
    number = int(quantity[:-2] if unit else quantity)
    return int(math.ceil(number * factors.get(unit, 1) / 2**30))


# --------------------------------------------------------------------------- objects


def _meta(name: str, component: str, **extra) -> dict:
    return {"name": name, "labels": {**LABELS, "app.kubernetes.io/component": component}, **extra}


def _pvc(name: str, size: str, storage_class: str | None, component: str) -> dict:
    spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(name, component), "spec": spec}


def _pod_security() -> dict:
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict:
    # Baseline forbids privilege and added capabilities; dropping escalation costs nothing here.
    return {"allowPrivilegeEscalation": False, "privileged": False}


def _env(items: dict) -> list[dict]:
    return [{"name": k, "value": v} for k, v in items.items()]


def _queue_env() -> dict:
    return {"name": "WAN22_QUEUE_URL", "valueFrom": {"secretKeyRef": {"name": SECRET_QUEUE, "key": "url"}}}


def _server_command(plan: KubePlan, api_only: bool) -> list[str]:
    command = ["python3", "-m", "wan22ctl.agent", "server", "--task", plan.task, "--host", "0.0.0.0",
               "--port", str(SERVER_CONTAINER_PORT), "--api-key-file", API_KEY_PATH]
    if plan.preset:  # the API pod checks requests against the same LoRA set the replicas merged
        command += ["--preset", plan.preset]
    if api_only:
        return command + ["--api-only"]
    return command + ["--plan", "auto", "--lease-seconds", str(LEASE_S), "--gpu-lock-dir", "/tmp/wan22ctl-locks"]


def _server_env(plan: KubePlan, settings_env: dict) -> list[dict]:
    env = _env({**MAIN_ENVIRONMENT, "PYTHONPATH": paths.CONTAINER_KIT_DIR, **settings_env})
    env.append({"name": "WAN22_REPLICA_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.append(_queue_env())
    return env


def _probe(path: str, period: int, failures: int, timeout: int = 5) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": timeout}


def _wait_for_checkpoints(plan: KubePlan) -> dict:
    """Init container: the pod starts once the download Job has completed every model it needs."""
    return {
        "name": "wait-for-checkpoints", "image": plan.image,
        "command": ["wan22ctl-agent", "models", *(a for m in plan.models for a in ("--wait-for", m))],
        "env": _env({"WAN22_CHECKPOINT_DIR": paths.CONTAINER_CHECKPOINT_DIR}),
        "volumeMounts": [{"name": "checkpoints", "mountPath": paths.CONTAINER_CHECKPOINT_DIR, "readOnly": True}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "securityContext": _container_security(),
    }


def server_deployment(plan: KubePlan, settings_env: dict) -> dict:
    """The GPU replicas: each loads the pipeline once and pulls jobs from the shared queue."""
    gpu = str(plan.gpus_per_pod)
    container = {
        "name": "server", "image": plan.image, "command": _server_command(plan, api_only=False),
        "env": _server_env(plan, settings_env),
        "ports": [{"name": "http", "containerPort": SERVER_CONTAINER_PORT}],
        "resources": {"limits": {"nvidia.com/gpu": gpu},
                      "requests": {"nvidia.com/gpu": gpu, "cpu": plan.cpu_request, "memory": plan.memory_request}},
        "startupProbe": _probe("/readyz", 10, plan.startup_probe_s // 10),
        "readinessProbe": _probe("/readyz", 10, 3),
        "livenessProbe": _probe("/healthz", 20, 6, timeout=10),
        "volumeMounts": [
            {"name": "checkpoints", "mountPath": paths.CONTAINER_CHECKPOINT_DIR, "readOnly": True},
            {"name": "outputs", "mountPath": paths.CONTAINER_OUTPUT_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "api-key", "mountPath": "/var/run/secrets/wan22", "readOnly": True},
        ],
        "securityContext": _container_security(),
    }
    pod = {
        "terminationGracePeriodSeconds": plan.termination_grace_s,
        "securityContext": _pod_security(),
        "initContainers": [_wait_for_checkpoints(plan)],
        "containers": [container],
        "volumes": [
            {"name": "checkpoints", "persistentVolumeClaim": {"claimName": CHECKPOINTS_PVC, "readOnly": True}},
            {"name": "outputs", "persistentVolumeClaim": {"claimName": OUTPUTS_PVC}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": plan.shm}},
            {"name": "api-key", "secret": {"secretName": SECRET_API_KEY,
                                           "items": [{"key": "key", "path": "api-key"}]}},
        ],
    }
    if plan.node_selector:
        pod["nodeSelector"] = dict(plan.node_selector)
    if plan.tolerations:
        pod["tolerations"] = list(plan.tolerations)
    selector = {**LABELS, "app.kubernetes.io/component": "server"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(SERVER, "server"),
        "spec": {
            "replicas": plan.replicas,
            # GPUs are scarce: replace a pod only after the old one is gone (its job re-queued).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**selector, **API_LABEL}}, "spec": pod},
        },
    }


def api_deployment(plan: KubePlan, settings_env: dict) -> dict:
    """The front that answers the API (submit, list, get, events, cancel, content) with no GPU, so
    clients keep submitting while KEDA has the GPU replicas at zero."""
    selector = {**LABELS, "app.kubernetes.io/component": "api"}
    container = {
        "name": "api", "image": plan.image, "command": _server_command(plan, api_only=True),
        "env": _server_env(plan, settings_env),
        "ports": [{"name": "http", "containerPort": SERVER_CONTAINER_PORT}],
        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}},
        "readinessProbe": _probe("/readyz", 10, 3),
        "livenessProbe": _probe("/healthz", 20, 6, timeout=10),
        "volumeMounts": [{"name": "outputs", "mountPath": paths.CONTAINER_OUTPUT_DIR},
                         {"name": "api-key", "mountPath": "/var/run/secrets/wan22", "readOnly": True}],
        "securityContext": _container_security(),
    }
    pod = {"securityContext": _pod_security(), "containers": [container],
           "volumes": [{"name": "outputs", "persistentVolumeClaim": {"claimName": OUTPUTS_PVC}},
                       {"name": "api-key", "secret": {"secretName": SECRET_API_KEY,
                                                      "items": [{"key": "key", "path": "api-key"}]}}]}
    if plan.preset:
        # The preset's LoRA set is checked against the DiT configs and files as the replicas check
        # it, so the API refuses a request naming another set (400) before it reaches the queue.
        container["volumeMounts"].insert(0, {"name": "checkpoints", "mountPath": paths.CONTAINER_CHECKPOINT_DIR,
                                             "readOnly": True})
        pod["volumes"].insert(0, {"name": "checkpoints",
                                  "persistentVolumeClaim": {"claimName": CHECKPOINTS_PVC, "readOnly": True}})
        pod["initContainers"] = [_wait_for_checkpoints(plan)]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(API, "api"),
        "spec": {
            "replicas": 1, "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**selector, **API_LABEL}}, "spec": pod},
        },
    }


def download_job(plan: KubePlan, hf_endpoint: str) -> dict:
    """Fills the checkpoint volume once with the agent's resumable, verifying download."""
    env = _env({"WAN22_CHECKPOINT_DIR": paths.CONTAINER_CHECKPOINT_DIR, "HF_ENDPOINT": hf_endpoint,
                "PYTHONUNBUFFERED": "1"})
    env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET_HF_TOKEN, "key": "token",
                                                                   "optional": True}}})
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(f"wan22-download-{plan.model}", "download"),
        "spec": {
            "backoffLimit": 10,  # each retry resumes the partial files, so retries are cheap
            "template": {"metadata": {"labels": {**LABELS, "app.kubernetes.io/component": "download"}}, "spec": {
                "restartPolicy": "OnFailure", "securityContext": _pod_security(),
                "containers": [{
                    "name": "download", "image": plan.image,
                    "command": ["wan22ctl-agent", "download", *plan.models, "--events"], "env": env,
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                    "volumeMounts": [{"name": "checkpoints", "mountPath": paths.CONTAINER_CHECKPOINT_DIR}],
                    "securityContext": _container_security(),
                }],
                "volumes": [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": CHECKPOINTS_PVC}}],
            }},
        },
    }


def service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(SERVER, "server"),
            "spec": {"type": "ClusterIP", "selector": {**LABELS, **API_LABEL},
                     "ports": [{"name": "http", "port": SERVER_CONTAINER_PORT, "targetPort": "http"}]}}


def namespace(plan: KubePlan) -> dict:
    # Enforce what the pods are written to meet; a pod that needed more would be refused.
    labels = {**LABELS, "pod-security.kubernetes.io/enforce": "baseline",
              "pod-security.kubernetes.io/warn": "baseline"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": plan.namespace, "labels": labels}}


def postgres_objects(plan: KubePlan) -> list[dict]:
    """A single PostgreSQL for small teams: one pod, its own ReadWriteOnce volume."""
    selector = {**LABELS, "app.kubernetes.io/component": "postgres"}
    container = {
        "name": "postgres", "image": POSTGRES_IMAGE,
        "env": [{"name": "POSTGRES_USER", "value": POSTGRES_USER}, {"name": "POSTGRES_DB", "value": POSTGRES_DB},
                {"name": "POSTGRES_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": SECRET_POSTGRES, "key": "password"}}},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        "readinessProbe": {"exec": {"command": ["pg_isready", "-U", POSTGRES_USER, "-d", POSTGRES_DB]},
                           "periodSeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        "securityContext": _container_security(),
    }
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(POSTGRES, "postgres"),
        "spec": {
            "serviceName": POSTGRES, "replicas": 1, "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector},
                         "spec": {"securityContext": _pod_security(), "containers": [container]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}],
        },
    }
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(POSTGRES, "postgres"),
           "spec": {"selector": selector, "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}]}}
    return [statefulset, svc]


def postgres_url(namespace_: str, password: str) -> str:
    """The in-cluster database's URL: the Service's full name, which KEDA (another namespace) resolves too."""
    return f"postgresql://{POSTGRES_USER}:{password}@{POSTGRES}.{namespace_}.svc.cluster.local:5432/{POSTGRES_DB}"


def keda_objects(plan: KubePlan) -> list[dict]:
    """ScaledObject on the backlog (queued + running jobs of the task), and its TriggerAuthentication."""
    from wan22ctl.agent.server.pgstore import backlog_query

    scaled = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _meta(SERVER, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVER},
            "minReplicaCount": 0, "maxReplicaCount": plan.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 900,  # after the last job: unload the GPUs only when idle a while
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                # a scale-down may stop a pod mid-job (it re-queues it): wait until the backlog stays low
                "stabilizationWindowSeconds": 600,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]}}}},
            "triggers": [{
                "type": "postgresql",
                "metadata": {"query": backlog_query(plan.task), "targetQueryValue": "1",
                             "activationTargetQueryValue": "0"},
                "authenticationRef": {"name": SECRET_QUEUE},
            }],
        },
    }
    auth = {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication", "metadata": _meta(SECRET_QUEUE, "server"),
            "spec": {"secretTargetRef": [{"parameter": "connection", "name": SECRET_QUEUE, "key": "url"}]}}
    return [scaled, auth]


# --------------------------------------------------------------------------- the tree


def render_tree(plan: KubePlan, settings_env: dict, hf_endpoint: str) -> dict[str, list[dict]]:
    """Relative path -> the YAML documents of that file (kustomization files included)."""
    tree: dict[str, list[dict]] = {
        "base/namespace.yaml": [namespace(plan)],
        "base/volumes.yaml": [_pvc(CHECKPOINTS_PVC, plan.checkpoint_pvc, plan.storage_class, "checkpoints"),
                              _pvc(OUTPUTS_PVC, plan.output_pvc, plan.storage_class, "outputs")],
        "base/download-job.yaml": [download_job(plan, hf_endpoint)],
        "base/server.yaml": [server_deployment(plan, settings_env), service()],
        "base/kustomization.yaml": [{
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": plan.namespace,
            "resources": ["namespace.yaml", "volumes.yaml", "download-job.yaml", "server.yaml"]}],
    }
    used = {c for o in plan.overlays for c in OVERLAYS[o]}
    if "postgres" in used:
        tree["components/postgres/postgres.yaml"] = postgres_objects(plan)
        tree["components/postgres/kustomization.yaml"] = [{
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "resources": ["postgres.yaml"]}]
    if "keda" in used:
        tree["components/keda/keda.yaml"] = keda_objects(plan)
        tree["components/keda/api.yaml"] = [api_deployment(plan, settings_env)]
        tree["components/keda/kustomization.yaml"] = [{
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "resources": ["keda.yaml", "api.yaml"],
            # The HPA that KEDA makes owns the replica count; a re-apply must not reset it.
            "patches": [{"target": {"kind": "Deployment", "name": SERVER},
                         "patch": "- op: remove\n  path: /spec/replicas\n"}]}]
    for overlay in plan.overlays:
        doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
               "namespace": plan.namespace, "resources": ["../../base"]}
        if OVERLAYS[overlay]:
            doc["components"] = [f"../../components/{c}" for c in OVERLAYS[overlay]]
        tree[f"overlays/{overlay}/kustomization.yaml"] = [doc]
    return tree


def settings_env(settings: Settings) -> dict:
    """The server's environment that comes from settings: the single-host server container's."""
    from wan22ctl.plan.container import server_run_env

    return server_run_env(settings)


def to_yaml(documents: list[dict]) -> str:
    import yaml

    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in documents)
