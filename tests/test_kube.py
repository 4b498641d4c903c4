"""`wan22ctl kube render|apply` through the real CLI, checked with real tools: `kubectl kustomize`
builds every overlay, `kubernetes-validate --strict` validates every object against two
Kubernetes versions, `kubectl set env --local` decodes them with kubectl's compiled-in scheme
(quantities included), and the tests below check Pod Security "baseline" and KEDA's documented
postgresql trigger fields. No cluster runs here: `kube apply` is checked up to the cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import clean_environ

OVERLAYS = ("existing-db", "postgres", "keda", "postgres-keda")
K8S_VERSIONS = ("1.28", "1.35")  # oldest and newest the tree is meant for


def _need(tool: str) -> str:
    path = shutil.which(tool) or (shutil.which(tool, path=os.path.dirname(sys.executable)))
    if path is None:  # in CI a skip fails (tests/ci_policy.py)
        pytest.skip(f"{tool} is not installed (kubectl: preinstalled on these machines; "
                    "kubernetes-validate: pip install -e '.[test]')")
    return path


def wan22ctl(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=cwd, capture_output=True, text=True,
                          env=clean_environ() | (env or {}), timeout=120)


def render(tmp: Path, env: dict | None = None, *args: str) -> Path:
    out = wan22ctl(tmp, "kube", "render", "-o", "k8s", *args, env=env)
    assert out.returncode == 0, out.stderr
    return tmp / "k8s"


def kustomize(tree: Path, overlay: str) -> list[dict]:
    out = subprocess.run([_need("kubectl"), "kustomize", str(tree / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, list[dict]]:
    """Every overlay of a t2v-A14B render, built by kubectl kustomize."""
    tmp = tmp_path_factory.mktemp("kube")
    tree = render(tmp, {"SERVER_TASK": "t2v-A14B", "KUBE_NODE_SELECTOR": "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
                        "KUBE_MAX_REPLICAS": "6", "KUBE_STORAGE_CLASS": "nfs-rwx"})
    return {o: kustomize(tree, o) for o in OVERLAYS}


def _write(tmp: Path, name: str, docs: list[dict]) -> Path:
    path = tmp / name
    path.write_text("---\n".join(yaml.safe_dump(d) for d in docs))
    return path


def test_every_overlay_validates_strictly_against_two_versions(built, tmp_path):
    validate = _need("kubernetes-validate")
    for overlay, docs in built.items():
        path = _write(tmp_path, f"{overlay}.yaml", docs)
        for version in K8S_VERSIONS:
            out = subprocess.run([validate, "--strict", "-k", version, str(path)], capture_output=True, text=True,
                                 timeout=300)
            assert out.returncode == 0 and "ERROR" not in out.stdout + out.stderr, out.stdout + out.stderr
            passed = out.stdout.count(" passed for resource ")
            crds = sum(d["apiVersion"].startswith("keda.sh/") for d in docs)
            assert passed == len(docs) - crds, out.stdout  # everything but KEDA's CRDs had a schema
    # the validator does fail on what a wrong field would look like
    bad = [dict(built["existing-db"][0], spec={"replica": 1})]
    path = _write(tmp_path, "bad.yaml", bad)
    out = subprocess.run([validate, "--strict", "-k", K8S_VERSIONS[0], str(path)], capture_output=True, text=True)
    assert out.returncode != 0


def _as_pod_bearing(docs: list[dict]) -> list[dict]:
    """The objects `kubectl set env` decodes (those with a pod template); each PVC's spec rides in
    a StatefulSet's volumeClaimTemplates, so its storage quantity is decoded by the same scheme."""
    out = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    claims = [{"metadata": {"name": d["metadata"]["name"]}, "spec": d["spec"]}
              for d in docs if d["kind"] == "PersistentVolumeClaim"]
    if claims:
        out.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "pvc-carrier"},
                    "spec": {"serviceName": "x", "selector": {"matchLabels": {"a": "b"}},
                             "template": {"metadata": {"labels": {"a": "b"}},
                                          "spec": {"containers": [{"name": "c", "image": "x"}]}},
                             "volumeClaimTemplates": claims}})
    return out


def test_kubectl_decodes_every_core_object_quantities_included(built, tmp_path):
    kubectl = _need("kubectl")
    for overlay, docs in built.items():
        core = _as_pod_bearing(docs)
        assert len(core) >= 3
        out = subprocess.run([kubectl, "set", "env", "--local", "-f", str(_write(tmp_path, f"{overlay}.yaml", core)),
                              "X=1", "-o", "yaml"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    server = next(d for d in built["existing-db"] if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(server))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "one"
    out = subprocess.run([kubectl, "set", "env", "--local", "-f", str(_write(tmp_path, "broken.yaml", [broken])),
                          "X=1", "-o", "yaml"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "quantities must match" in out.stderr
    claim = next(d for d in built["existing-db"] if d["kind"] == "PersistentVolumeClaim")
    claim = yaml.safe_load(yaml.safe_dump(claim))
    claim["spec"]["resources"]["requests"]["storage"] = "150 GiB"
    out = subprocess.run([kubectl, "set", "env", "--local", "-f",
                          str(_write(tmp_path, "claim.yaml", _as_pod_bearing([claim]))), "X=1", "-o", "yaml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "quantities must match" in out.stderr


# --------------------------------------------------------------------------- Pod Security baseline

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def baseline_violations(pod: dict) -> list[str]:
    """The Pod Security Standards "baseline" rules (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    bad = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            bad.append(f"{field}: true")
    if any("hostPath" in v for v in pod.get("volumes", [])):
        bad.append("hostPath volume")
    psc = pod.get("securityContext") or {}
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("hostProcess")
    contexts = [("pod", psc)]
    for c in pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", []):
        sc = c.get("securityContext") or {}
        contexts.append((c["name"], sc))
        if sc.get("privileged"):
            bad.append(f"{c['name']}: privileged")
        extra = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if extra:
            bad.append(f"{c['name']}: capabilities {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{c['name']}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{c['name']}: procMount")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{c['name']}: hostProcess")
    for who, sc in contexts:
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{who}: seccomp Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{who}: appArmor Unconfined")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t",
                                  "container_engine_t") or se.get("user") or se.get("role"):
            bad.append(f"{who}: seLinuxOptions")
    if any(s["name"] not in SAFE_SYSCTLS for s in psc.get("sysctls", [])):
        bad.append("unsafe sysctl")
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value == "unconfined":
            bad.append("appArmor annotation unconfined")
    return bad


def pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
    return out


def test_every_pod_passes_pod_security_baseline_and_the_namespace_enforces_it(built):
    for overlay, docs in built.items():
        pods = pod_templates(docs)
        assert len(pods) >= 2
        for name, pod in pods:
            assert baseline_violations(pod) == [], (overlay, name)
        ns = next(d for d in docs if d["kind"] == "Namespace")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    # The checker does catch what the single-host Docker container uses (privileged, host IPC).
    from wan22ctl.plan.container import plan_main_container
    from wan22ctl.settings import load_settings

    spec = plan_main_container(load_settings(environ={}))
    docker_like = {"hostIPC": spec.ipc_mode == "host",
                   "containers": [{"name": "c", "securityContext": {"privileged": spec.privileged,
                                                                   "seccompProfile": {"type": "Unconfined"}}}]}
    assert set(baseline_violations(docker_like)) == {"hostIPC: true", "c: privileged", "c: seccomp Unconfined"}


# --------------------------------------------------------------------------- what the pods get

def _server(docs):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "wan22-server")


def test_server_pods_from_settings_catalog_and_planner(built):
    docs = built["existing-db"]
    dep = _server(docs)
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    res = server["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    startup = server["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz" and startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 120
    assert "--plan" in server["command"] and server["command"][server["command"].index("--plan") + 1] == "auto"
    env = {e["name"]: e for e in server["env"]}
    assert env["WAN22_QUEUE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "wan22-queue", "key": "url"}
    assert env["WAN22_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "HF_TOKEN" not in env
    pvc = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert pvc["wan22-checkpoints"]["spec"]["resources"]["requests"]["storage"] == "150Gi"  # 126 GB A14B + room
    assert all(p["spec"]["accessModes"] == ["ReadWriteMany"] and p["spec"]["storageClassName"] == "nfs-rwx"
               for p in pvc.values())
    job = next(d for d in docs if d["kind"] == "Job")
    jc = job["spec"]["template"]["spec"]["containers"][0]
    assert jc["command"] == ["wan22ctl-agent", "download", "t2v", "--events"]
    token = [e for e in jc["env"] if e["name"] == "HF_TOKEN"]
    assert token[0]["valueFrom"]["secretKeyRef"]["name"] == "wan22-hf-token"
    # The HF token reaches the download Job only.
    for d in docs:
        if d["kind"] != "Job":
            assert "wan22-hf-token" not in yaml.safe_dump(d), d["metadata"]["name"]
    svc = next(d for d in docs if d["kind"] == "Service")
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())


def test_server_preset_reaches_replicas_api_and_download(tmp_path):
    """SERVER_PRESET=lightning (as `up --serve`): the replicas and the API pod start with --preset, the
    download Job fetches the preset's LoRAs beside the model, and both pods wait for both."""
    tree = render(tmp_path, {"SERVER_TASK": "t2v-A14B", "SERVER_PRESET": "lightning"})
    docs = kustomize(tree, "keda")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name in ("wan22-server", "wan22-api"):
        pod = deployments[name]["spec"]["template"]["spec"]
        command = pod["containers"][0]["command"]
        assert command[command.index("--preset") + 1] == "lightning", name
        wait = pod["initContainers"][0]["command"]
        assert wait == ["wan22ctl-agent", "models", "--wait-for", "t2v", "--wait-for", "lightning-t2v"], name
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["checkpoints"]["readOnly"] is True, name
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "wan22ctl-agent", "download", "t2v", "lightning-t2v", "--events"]
    # without the preset the API pod needs no checkpoints
    (tmp_path / "plain").mkdir()
    plain = kustomize(render(tmp_path / "plain", {"SERVER_TASK": "t2v-A14B"}), "keda")
    api = next(d for d in plain if d["kind"] == "Deployment" and d["metadata"]["name"] == "wan22-api")
    assert "--preset" not in api["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "initContainers" not in api["spec"]["template"]["spec"]


def test_server_preset_without_loras_for_the_task_is_refused(tmp_path):
    out = wan22ctl(tmp_path, "kube", "render", "-o", "k8s", env={"SERVER_TASK": "ti2v-5B", "SERVER_PRESET": "lightning"})
    assert out.returncode == 2 and not (tmp_path / "k8s").exists()
    assert out.stderr.startswith("error: SERVER_PRESET=lightning has no distilled LoRA for SERVER_TASK=ti2v-5B"), out.stderr


def test_multi_gpu_pods_use_generates_planner(tmp_path):
    tree = render(tmp_path, {"SERVER_TASK": "t2v-A14B", "KUBE_GPUS_PER_POD": "8"}, "--overlay", "postgres")
    server = _server(kustomize(tree, "postgres"))["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "8"
    from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory

    launch = plan_launch(build_request("t2v-A14B", "x", seed=0, gpus="8"), synthetic_inventory(8, 80), run_id="k")
    assert launch.nproc == 8 and launch.launcher == "torchrun"
    out = wan22ctl(tmp_path, "kube", "render", "--json", "-o", "again", env={"SERVER_TASK": "t2v-A14B",
                                                                             "KUBE_GPUS_PER_POD": "8"})
    import json

    plan = json.loads(out.stdout)["plan"]
    assert plan["gpus_per_pod"] == 8 and plan["server_flags"]["dit_fsdp"] is True
    assert int(plan["memory_request"].removesuffix("Gi")) >= launch.host_ram_need_gb
    bad = wan22ctl(tmp_path, "kube", "render", "-o", "bad", env={"SERVER_TASK": "t2v-A14B", "KUBE_GPUS_PER_POD": "3"})
    assert bad.returncode == 2 and "must divide 40" in bad.stderr and not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- KEDA

# KEDA's postgresql scaler (keda.sh/docs/2.x/scalers/postgresql; pkg/scalers/postgresql_scaler.go):
KEDA_PG_METADATA = {"query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv", "host", "port",
                    "userName", "passwordFromEnv", "dbName", "sslmode", "metricName"}
KEDA_PG_AUTH_PARAMS = {"connection", "host", "port", "userName", "password", "dbName", "sslmode"}


def test_scaledobject_uses_kedas_documented_postgresql_trigger(built, pg_url):
    docs = built["postgres-keda"]
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == "wan22-server" and _server(docs)["metadata"]["name"] == target["name"]
    assert "replicas" not in _server(docs)["spec"]  # the HPA owns it; a re-apply must not reset it
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 6)
    [trigger] = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "postgresql" and set(meta) <= KEDA_PG_METADATA
    assert {"query", "targetQueryValue"} <= set(meta) and all(isinstance(v, str) for v in meta.values())
    float(meta["targetQueryValue"]), float(meta["activationTargetQueryValue"])
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication"
                and d["metadata"]["name"] == trigger["authenticationRef"]["name"])
    refs = auth["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in refs} <= KEDA_PG_AUTH_PARAMS
    assert ("connection" in {r["parameter"] for r in refs}) or {"host", "userName", "dbName"} <= set(meta)
    server_env = {e["name"]: e for e in _server(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}
    conn = next(r for r in refs if r["parameter"] == "connection")
    assert {"name": conn["name"], "key": conn["key"]} == server_env["WAN22_QUEUE_URL"]["valueFrom"]["secretKeyRef"]
    # Zero GPU pods still accept jobs: an API-only Deployment answers through the same Service.
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "wan22-api")
    assert "--api-only" in api["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(api)
    # The query runs on the server's real schema and counts the backlog of this task.
    import psycopg

    from wan22ctl.agent.server.pgstore import PgJobStore

    store = PgJobStore(pg_url, task="t2v-A14B", replica="r")
    try:
        for i in range(3):
            store.submit({"task": "t2v-A14B", "prompt": f"p{i}"}, f"h{i}")
        store.submit({"task": "ti2v-5B", "prompt": "other task"}, "h9")
        store.claim_next()
        done, _ = store.submit({"task": "t2v-A14B", "prompt": "cancelled"}, "h10")
        store.request_cancel(done.id)
        with psycopg.connect(pg_url) as conn:
            assert conn.execute(meta["query"]).fetchone()[0] == 3  # 2 queued + 1 running
    finally:
        store.close()


# --------------------------------------------------------------------------- the CLI's promises

def test_render_keeps_secrets_out_and_foreign_files_alone(tmp_path):
    secrets = {"HF_TOKEN": "hf_secret_token_123", "WAN22_API_KEY": "api-key-secret-456",
               "WAN22_QUEUE_URL": "postgresql://u:db-password-789@db.example:5432/q"}
    tree = render(tmp_path, secrets)
    for path in tree.rglob("*.yaml"):
        text = path.read_text()
        assert not any(v in text for v in secrets.values()), path
        assert "db-password" not in text
    foreign = tree / "base" / "server.yaml"
    foreign.write_text("# my own edits\n")
    out = wan22ctl(tmp_path, "kube", "render", "-o", "k8s")
    assert out.returncode == 2 and "was not written by `wan22ctl kube render`" in out.stderr
    assert foreign.read_text() == "# my own edits\n"
    bad = wan22ctl(tmp_path, "kube", "render", "--overlay", "helm", "-o", "x")
    assert bad.returncode == 2 and "unknown overlay 'helm'" in bad.stderr


def test_apply_without_a_cluster_exits_3(tmp_path):
    _need("kubectl")
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "c", "user": "u"}}]}))
    env = {"KUBECONFIG": str(config), "PATH": os.environ["PATH"]}
    out = wan22ctl(tmp_path, "kube", "apply", "--overlay", "postgres", env=env)
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("error: no Kubernetes cluster is reachable (context nowhere)")
    assert "fix: point KUBECONFIG" in lines[1] and len(lines) == 2
    assert not (tmp_path / "k8s").exists()  # nothing written before the cluster answered


def test_apply_dry_run_names_each_step_and_needs_a_queue_url(tmp_path):
    _need("kubectl")
    out = wan22ctl(tmp_path, "kube", "apply", "--overlay", "keda", "--dry-run", env={"PATH": os.environ["PATH"]})
    assert out.returncode == 2 and "WAN22_QUEUE_URL is not set" in out.stderr
    env = {"PATH": os.environ["PATH"], "WAN22_QUEUE_URL": "postgresql://u:pw-secret@db:5432/q",
           "WAN22_API_KEY": "key-secret"}
    out = wan22ctl(tmp_path, "kube", "apply", "--overlay", "keda", "--dry-run", env=env)
    assert out.returncode == 0, out.stderr
    assert "Secret wan22-queue" in out.stdout and "Secret wan22-api-key" in out.stdout
    assert f"kubectl apply -k k8s/overlays/keda" in out.stdout
    assert "pw-secret" not in out.stdout + out.stderr and "key-secret" not in out.stdout + out.stderr
