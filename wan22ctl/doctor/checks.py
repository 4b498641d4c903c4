"""The checks: each a small function `(Context) -> CheckResult`, in the order the table shows them.

`Context` gathers facts once per run (Docker client, image, running container, GPU inventory,
probe) so checks can share them. A check whose prerequisite failed (no daemon, no GPUs seen)
says SKIP and names what it waited for, rather than repeating the same failure.

Where GPU facts come from: `nvidia-smi` run inside the running kit container when there is one
(`docker exec`), else in a short-lived probe container from DOCKER_IMAGE with the GPU request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from wan22ctl import catalog
from wan22ctl.doctor import probes, rules
from wan22ctl.doctor.result import FAIL, PASS, SKIP, WARN, CheckResult
from wan22ctl.plan.inventory import NVIDIA_SMI_QUERY, Gpu, parse_nvidia_smi
from wan22ctl.settings import Settings

MIN_API_FOR_GPUS = "1.40"  # DeviceRequests (`--gpus`) arrived with Engine 19.03 / API 1.40


@dataclass
class Context:
    """Settings, the task, and every fact gathered so far (each fetched at most once)."""

    settings: Settings
    task: str | None = None
    models: tuple[catalog.Model, ...] = ()  # what must be on disk (the task's model, or download's)
    allow_probe: bool = True  # False for preflights: no probe container, only the running one
    plan: object | None = None  # a LaunchPlan `generate` already made; else doctor plans the default request
    _cache: dict = field(default_factory=dict)

    def _once(self, key: str, fetch: Callable):
        if key not in self._cache:
            self._cache[key] = fetch()
        return self._cache[key]

    # ---------------------------------------------------------------- Docker
    def client(self):
        """The docker-py client, or None when the daemon is unreachable (`docker_error` says why)."""
        def fetch():
            from wan22ctl.docker.client import connect
            from wan22ctl.errors import EnvError

            try:
                return connect()
            except EnvError as exc:
                self._cache["docker_error"] = exc
                return None
        return self._once("client", fetch)

    @property
    def docker_error(self):
        """The EnvError `connect()` raised (message + fix), when the daemon is unreachable."""
        self.client()
        return self._cache.get("docker_error")

    def image(self) -> probes.ImageFacts | None:
        client = self.client()
        return self._once("image", lambda: client and probes.image_facts(client, self.settings.docker_image))

    def container(self):
        """The kit's main container when it exists (running or not), else None."""
        client = self.client()

        def fetch():
            from wan22ctl.docker.containers import find

            return client and find(client, self.settings.container_name)
        return self._once("container", fetch)

    def running(self):
        c = self.container()
        return c if c is not None and c.status == "running" else None

    def probe(self) -> probes.ProbeResult | None:
        """The `--gpus` probe; None when there is no daemon or no image to run it from."""
        def fetch():
            from wan22ctl.plan.spec import gpu_request

            client, image = self.client(), self.image()
            if client is None or image is None:
                return None
            return probes.run_probe(client, image.ref, list(NVIDIA_SMI_QUERY), gpu_request(self.settings.gpus),
                                    probes.probe_name(self.settings.container_name))
        return self._once("probe", fetch)

    def inventory(self) -> tuple[list[Gpu], str, str]:
        """(GPUs, where they were seen, why none were) — exec in the running container, else the probe.

        `where` is empty when there was nowhere to look (no daemon, no image, no running
        container for a preflight): the GPU checks then SKIP instead of blaming the GPUs.
        """
        def fetch():
            running = self.running()
            if running is not None:
                code, text = probes.exec_text(running, list(NVIDIA_SMI_QUERY))
                gpus = parse_nvidia_smi(text) if code == 0 else []
                where = f"nvidia-smi in {running.name}"
                return gpus, where, "" if gpus else _first_line(text) or f"exit {code}"
            if not self.allow_probe:
                return [], "", f"{self.settings.container_name} is not running"
            probe = self.probe()
            if probe is None:
                return [], "", "no image to run nvidia-smi in" if self.client() else "Docker unreachable"
            if not probe.started:
                return [], "a --gpus probe container", probe.error
            gpus = parse_nvidia_smi(probe.output) if probe.exit_code == 0 else []
            return gpus, "nvidia-smi in a --gpus probe container", "" if gpus else _first_line(probe.output)
        return self._once("inventory", fetch)

    def hf_endpoint_status(self) -> tuple[int | None, str]:
        """(HTTP status, error) of one GET to HF_ENDPOINT; status None when it did not answer."""
        def fetch():
            from huggingface_hub.utils import get_session

            endpoint = self.settings.hf_endpoint.rstrip("/")
            try:
                response = get_session().get(f"{endpoint}/api/models", params={"limit": 1}, timeout=15)
                return response.status_code, ""
            except Exception as exc:  # connection refused, DNS, TLS, timeout: all mean unreachable
                return None, f"{type(exc).__name__}: {exc}"
        return self._once("hf_endpoint", fetch)

    def host_memory(self) -> tuple[float, float] | None:
        """(total, available) GB of the Docker host's RAM; available = total when only the daemon knows."""
        def fetch():
            client = self.client()
            if probes.daemon_is_local() or client is None:
                mem = probes.host_memory_gb()
                if mem:
                    return mem
            if client is not None:
                total = client.info().get("MemTotal", 0) / 1024**3
                return total, total
            return None
        return self._once("host_memory", fetch)

    def memory_plan(self):
        """The launch plan `generate --task T` would make here (`wan22ctl.plan.launch`), or None."""
        if self.plan is not None:
            return self.plan
        gpus, _, _ = self.inventory()
        if not self.task or not gpus:
            return None
        mem = self.host_memory()
        return self._once("plan", lambda: rules.launch_plan(self.task, gpus, mem[1] if mem else None,
                                                            self.settings.wan22_dtype))


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _result(check_id: str, name: str, verdict: rules.Verdict, value: str, **data) -> CheckResult:
    shown = f"{value} ({verdict.note})" if verdict.note else value
    return CheckResult(check_id, name, verdict.status, shown, verdict.requirement,
                       verdict.fix if verdict.status != PASS else None, data)


def _skip(check_id: str, name: str, why: str, requirement: str, fix: str | None = None) -> CheckResult:
    return CheckResult(check_id, name, SKIP, why, requirement, fix)


def _gb(value: float) -> str:
    return f"{value:.1f} GB" if value < 10 else f"{value:.0f} GB"


# ============================================================================ Docker


def check_docker(ctx: Context) -> CheckResult:
    """The daemon answers, and its API is new enough for GPU requests."""
    name, requirement = "Docker daemon", f"reachable, API >= {MIN_API_FOR_GPUS} (GPU requests)"
    client = ctx.client()
    if client is None:
        err = ctx.docker_error
        return CheckResult("docker.daemon", name, FAIL, err.message, requirement, err.fix)
    version = client.version()
    api = version.get("ApiVersion", "?")
    value = f"Engine {version.get('Version', '?')}, API {api}"
    if rules.version_tuple(api) < rules.version_tuple(MIN_API_FOR_GPUS):
        status = WARN if ctx.settings.gpus.kind == "none" else FAIL  # only GPU requests need the newer API
        return CheckResult("docker.daemon", name, status, value, requirement,
                           "upgrade Docker Engine to 19.03 or newer (https://docs.docker.com/engine/install/)",
                           {"api_version": api})
    return CheckResult("docker.daemon", name, PASS, value, requirement, None,
                       {"api_version": api, "engine_version": version.get("Version")})


def check_host_folders(ctx: Context) -> CheckResult:
    """OUTPUT_DIR, CHECKPOINT_DIR and HF_HOME exist (or can be made) and are writable."""
    name, requirement = "host folders", "OUTPUT_DIR, CHECKPOINT_DIR, HF_HOME writable (or creatable)"
    problems = []
    folders = {"OUTPUT_DIR": ctx.settings.output_dir, "CHECKPOINT_DIR": ctx.settings.checkpoint_dir,
               "HF_HOME": ctx.settings.hf_home}
    for key, path in folders.items():
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            problems.append((key, path))
    if problems:
        key, path = problems[0]
        return CheckResult("host.folders", name, FAIL, ", ".join(f"{k}={p} is not a writable folder" for k, p in problems),
                           requirement, f"sudo mkdir -p {path} && sudo chown $USER {path}, or set {key} to a folder you own")
    return CheckResult("host.folders", name, PASS, "writable", requirement)


def check_image(ctx: Context) -> CheckResult:
    """DOCKER_IMAGE is present locally, or (pull mode) the registry knows it."""
    ref, mode = ctx.settings.docker_image, ctx.settings.image_mode
    name, requirement = "image", f"{ref} present, or {'buildable' if mode == 'build' else 'pullable'} (IMAGE_MODE={mode})"
    client = ctx.client()
    if client is None:
        return _skip("image.present", name, "Docker unreachable", requirement)
    image = ctx.image()
    if image is not None:
        return CheckResult("image.present", name, PASS, f"present ({image.id}, created {image.created[:19]})",
                           requirement, None, {"id": image.id, "created": image.created})
    if mode == "build":
        return CheckResult("image.present", name, WARN, "not built yet", requirement,
                           "`wan22ctl build` (or `wan22ctl up`, which builds it first; the GPU stack takes a while)")
    import docker

    from wan22ctl.docker.client import explanation

    try:
        client.images.get_registry_data(ref)
    except docker.errors.APIError as exc:
        return CheckResult("image.present", name, FAIL, f"absent, and the registry says: {explanation(exc)}",
                           requirement, "check DOCKER_IMAGE and REGISTRY_USERNAME/REGISTRY_PASSWORD, or set IMAGE_MODE=build")
    return CheckResult("image.present", name, PASS, "absent locally, pullable", requirement)


def check_nvidia_runtime(ctx: Context) -> CheckResult:
    """Docker can hand GPUs to a container: proven by the running container, else a probe."""
    from wan22ctl.docker.client import NVIDIA_FIX

    name, requirement = "NVIDIA runtime", "a `--gpus` container starts (NVIDIA Container Toolkit)"
    running = ctx.running()
    if running is not None and running.attrs.get("HostConfig", {}).get("DeviceRequests"):
        gpus, where, _ = ctx.inventory()
        if gpus:
            return CheckResult("nvidia.runtime", name, PASS, f"{running.name} runs with GPUs", requirement)
    probe = ctx.probe()
    if probe is None:
        why = "Docker unreachable" if ctx.client() is None else "no image to probe with"
        return _skip("nvidia.runtime", name, why, requirement, "`wan22ctl build` or `wan22ctl pull`")
    if probe.nvidia_error:
        return CheckResult("nvidia.runtime", name, FAIL, f"probe refused: {probe.error}", requirement, NVIDIA_FIX)
    if not probe.started:
        return CheckResult("nvidia.runtime", name, FAIL, f"probe failed: {probe.error}", requirement,
                           "check `docker run --rm --gpus all IMAGE nvidia-smi` by hand; " + NVIDIA_FIX)
    return CheckResult("nvidia.runtime", name, PASS, f"probe ran (exit {probe.exit_code})", requirement)


def check_container(ctx: Context) -> CheckResult:
    """The kit container: absent (WARN: `up` first), running and healthy, or unhealthy (FAIL)."""
    from wan22ctl.docker.containers import health_log
    from wan22ctl.plan.spec import LABEL_STACK

    cname = ctx.settings.container_name
    name, requirement = "container", f"{cname} running and healthy"
    if ctx.client() is None:
        return _skip("container.health", name, "Docker unreachable", requirement)
    container = ctx.container()
    if container is None:
        return CheckResult("container.health", name, WARN, "not created", requirement, "`wan22ctl up`")
    if container.labels.get(LABEL_STACK) is None:
        return CheckResult("container.health", name, FAIL, "exists but was not made by wan22ctl", requirement,
                           f"`docker rm -f {cname}` or set another CONTAINER_NAME")
    container.reload()
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status", "none")
    value = f"{state.get('Status')}, health {health}"
    data = {"state": state.get("Status"), "health": health}
    if state.get("Status") != "running":
        return CheckResult("container.health", name, WARN, value, requirement, "`wan22ctl up`", data)
    if health == "unhealthy":
        return CheckResult("container.health", name, FAIL, f"{value}: {health_log(container)[-200:]}", requirement,
                           "`wan22ctl logs`, then `wan22ctl up --recreate`", data)
    if health == "starting":
        return CheckResult("container.health", name, WARN, value, requirement, "wait a few seconds and rerun", data)
    return CheckResult("container.health", name, PASS, value, requirement, None, data)


# ============================================================================ GPUs


def _gpu_summary(gpus: list[Gpu]) -> str:
    groups: dict[tuple, int] = {}
    for g in gpus:
        key = (g.name, g.memory_gb, g.compute_cap)
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{n}x {name} {mem:.0f} GB (cc {cap})" for (name, mem, cap), n in groups.items())


def check_gpus_visible(ctx: Context) -> CheckResult:
    name, requirement = "GPUs in container", "at least one GPU visible to nvidia-smi in the container"
    gpus, where, why = ctx.inventory()
    if gpus:
        return CheckResult("gpu.visible", name, PASS, _gpu_summary(gpus), requirement, None,
                           {"source": where, "gpus": [g.to_dict() for g in gpus]})
    if not where:
        return _skip("gpu.visible", name, why, requirement)
    from wan22ctl.docker.client import NVIDIA_FIX

    probe = ctx.probe() if ctx.allow_probe and ctx.running() is None else None
    if probe is not None and not probe.started:
        # The NVIDIA runtime row already names the cause and its fix.
        return _skip("gpu.visible", name, "the --gpus probe did not start (see NVIDIA runtime)", requirement)
    running = ctx.running()
    if ctx.settings.gpus.kind == "none" or (running is not None and not running.attrs["HostConfig"].get("DeviceRequests")):
        fix = "start the container with GPUs: GPUS=all in .env, then `wan22ctl up --recreate`"
    else:
        fix = NVIDIA_FIX
    return CheckResult("gpu.visible", name, FAIL, f"none ({why or 'nvidia-smi reported no GPU'})", requirement, fix,
                       {"source": where, "gpus": []})


def image_arch_list(ctx: Context) -> str:
    """The architectures the image was built for: its ENV, else the setting (the build default)."""
    image = ctx.image()
    return (image.env.get("TORCH_CUDA_ARCH_LIST") if image else None) or ctx.settings.torch_cuda_arch_list


def check_gpu_arch(ctx: Context) -> CheckResult:
    name = "GPU architecture"
    arch_list = image_arch_list(ctx)
    gpus, _, _ = ctx.inventory()
    if not gpus:
        return _skip("gpu.arch", name, "no GPU seen", f"compute capability in {arch_list}")
    worst, shown = None, []
    order = {PASS: 0, WARN: 1, FAIL: 2}
    for cap in sorted({g.compute_cap for g in gpus}):
        verdict = rules.arch_verdict(cap, arch_list)
        model = next(g.name for g in gpus if g.compute_cap == cap)
        shown.append(f"{model} cc {cap}" + (f" ({verdict.note})" if verdict.note else ""))
        if worst is None or order[verdict.status] > order[worst.status]:
            worst = verdict
    assert worst is not None
    return CheckResult("gpu.arch", name, worst.status, "; ".join(shown), worst.requirement,
                       worst.fix if worst.status != PASS else None, {"arch_list": arch_list})


def image_cuda_version(ctx: Context) -> str | None:
    """The CUDA version the image's torch runs on: the kit's label (the pinned torch wheel's bundled
    runtime), else env CUDA_VERSION / the label of nvidia/cuda bases."""
    image = ctx.image()
    if image is None:
        return None
    return (image.labels.get("io.wan22ctl.cuda-version") or image.env.get("CUDA_VERSION")
            or image.labels.get("com.nvidia.cuda.version"))


def check_driver(ctx: Context) -> CheckResult:
    name = "NVIDIA driver"
    gpus, _, _ = ctx.inventory()
    cuda = image_cuda_version(ctx)
    if not gpus:
        return _skip("gpu.driver", name, "no GPU seen", "driver new enough for the image's CUDA")
    driver = gpus[0].driver
    if not cuda:
        return _skip("gpu.driver", name, f"driver {driver}; the image declares no CUDA version (GPU_STACK=false?)",
                     "driver new enough for the image's CUDA")
    verdict = rules.driver_verdict(driver, cuda)
    return _result("gpu.driver", name, verdict, f"driver {driver}, image CUDA {cuda}", driver=driver, cuda=cuda)


# ============================================================================ memory and disk (task)


def check_vram(ctx: Context) -> CheckResult:
    name = "GPU memory"
    if not ctx.task:
        return _skip("gpu.vram", name, "no --task given", "the task's per-GPU peak", "rerun with --task T")
    plan = ctx.memory_plan()
    if plan is None:
        return _skip("gpu.vram", name, "no GPU seen", f"the per-GPU peak of {ctx.task}")
    verdict = rules.vram_verdict(plan)
    value = f"plan: {plan.launcher} on {plan.nproc} x {plan.gpu_memory_gb:.0f} GB"
    return _result("gpu.vram", name, verdict, value, nproc=plan.nproc, launcher=plan.launcher,
                   est_peak_gb=plan.est_peak_gpu_gb, gpu_memory_gb=plan.gpu_memory_gb)


def check_host_ram(ctx: Context) -> CheckResult:
    name = "host RAM"
    if not ctx.task:
        return _skip("host.ram", name, "no --task given", "what the task's ranks load on the CPU", "rerun with --task T")
    mem = ctx.host_memory()
    plan = ctx.memory_plan()
    if mem is None:
        return _skip("host.ram", name, "cannot read host memory", "what the task's ranks load on the CPU")
    total, available = mem
    if plan is None:
        # No GPU seen: judge the smallest plan (one process) so a hopeless host still shows.
        plan = rules.launch_plan(ctx.task, [Gpu(0, "any", 80.0, "9.0", "")], None)
    verdict = rules.host_ram_verdict(plan, total, available)
    return _result("host.ram", name, verdict, f"{_gb(total)} total, {_gb(available)} available",
                   total_gb=round(total, 1), available_gb=round(available, 1), need_gb=plan.host_ram_need_gb)


def check_pinned_ram(ctx: Context) -> CheckResult:
    name = "page-locked host RAM"
    if not ctx.task:
        return _skip("host.pinned", name, "no --task given", "the page-locked copies of the task's weights",
                     "rerun with --task T")
    mem, plan = ctx.host_memory(), ctx.memory_plan()
    if mem is None or plan is None:
        return _skip("host.pinned", name, "cannot read host memory" if mem is None else "no GPU seen",
                     "the page-locked copies of the task's weights")
    total, available = mem
    verdict = rules.pinned_ram_verdict(plan, total, available)
    return _result("host.pinned", name, verdict, f"{_gb(total)} total, {_gb(available)} available",
                   pinned_gb=plan.pinned_host_gb, offload=plan.offload_mode, dtype=plan.dtype)


def _still_needed_gb(model: catalog.Model, root: str) -> tuple[float, str]:
    """GB a model still needs on disk: the catalog size minus what its folder already holds."""
    from wan22ctl.hub.state import model_dir, model_state

    state, _missing, _manifest = model_state(model, root)
    if state == "complete":
        return 0.0, state
    have = probes.dir_bytes(str(model_dir(model, root))) / 1e9
    return max(model.approx_gb - have, 0.0), state


def check_disk(ctx: Context) -> CheckResult:
    name = "disk at CHECKPOINT_DIR"
    root = ctx.settings.checkpoint_dir
    models = [m for m in ctx.models if m.mount == "checkpoints"]
    if not models:
        return _skip("disk.checkpoints", name, "no --task given", "room for the task's models", "rerun with --task T")
    needed, states = 0.0, {}
    for model in models:
        gb, state = _still_needed_gb(model, root)
        needed += gb
        states[model.repo_id] = state
    needed = round(needed, 1)
    free, where = probes.free_gb(root)
    verdict = rules.disk_verdict(free, needed, where)
    value = f"{_gb(free) if free >= 0.1 else f'{free * 1000:.1f} MB'} free at {where}; " + ", ".join(
        f"{repo.split('/')[-1]} {state}" for repo, state in states.items())
    return _result("disk.checkpoints", name, verdict, value, free_gb=round(free, 3), needed_gb=needed, models=states)


# ============================================================================ inside the container


def check_shm(ctx: Context) -> CheckResult:
    name, requirement = "/dev/shm", f">= {catalog.MIN_SHM_GB:g} GB"
    running = ctx.running()
    if running is None:
        return _skip("container.shm", name, "container not running", requirement, "`wan22ctl up`, then rerun")
    code, text = probes.exec_text(running, ["df", "-k", "/dev/shm"])
    rows = [line.split() for line in text.splitlines()[1:] if line.split()]
    if code != 0 or not rows or not rows[-1][1].isdigit():
        return CheckResult("container.shm", name, WARN, f"cannot read: {_first_line(text)}", requirement)
    size_gb = int(rows[-1][1]) / 1024**2
    plan = ctx.memory_plan()
    verdict = rules.shm_verdict(size_gb, plan.nproc if plan else 1)
    return _result("container.shm", name, verdict, _gb(size_gb) if size_gb >= 0.1 else f"{size_gb * 1024:.0f} MB",
                   size_gb=round(size_gb, 3))


def check_memlock(ctx: Context) -> CheckResult:
    name, requirement = "memlock", "unlimited"
    running = ctx.running()
    if running is None:
        return _skip("container.memlock", name, "container not running", requirement, "`wan22ctl up`, then rerun")
    code, text = probes.exec_text(running, ["sh", "-c", "ulimit -l"])
    value = _first_line(text)
    if code != 0 or not value:
        return CheckResult("container.memlock", name, WARN, f"cannot read ({value})", requirement)
    verdict = rules.memlock_verdict(value)
    shown = value if value == "unlimited" else f"{value} KB"
    return _result("container.memlock", name, verdict, shown, limit_kb=value)


# ============================================================================ Hugging Face


def _hf_api(ctx: Context):
    from huggingface_hub import HfApi

    return HfApi(endpoint=ctx.settings.hf_endpoint.rstrip("/"))


def _token(ctx: Context) -> str | bool:
    # False, not None: never fall back to a token saved by `hf auth login` that the container won't have.
    return ctx.settings.hf_token or False


def check_hf_endpoint(ctx: Context) -> CheckResult:
    endpoint = ctx.settings.hf_endpoint.rstrip("/")
    name, requirement = "HF endpoint", f"{endpoint} answers HTTP"
    status, error = ctx.hf_endpoint_status()
    if status is None:
        return CheckResult("hf.endpoint", name, FAIL, f"unreachable ({error[:160]})", requirement,
                           "check the network/proxy (HTTPS_PROXY), or set HF_ENDPOINT to a reachable mirror "
                           "(e.g. https://hf-mirror.com)")
    return CheckResult("hf.endpoint", name, PASS, f"HTTP {status}", requirement, None, {"http_status": status})


def _http_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def check_hf_token(ctx: Context) -> CheckResult:
    name, requirement = "HF token", "valid (`whoami`) when set; public Wan-AI repos need none"
    if ctx.hf_endpoint_status()[0] is None:
        return _skip("hf.token", name, "endpoint unreachable", requirement)
    token = _token(ctx)
    if not token:
        return _skip("hf.token", name, "HF_TOKEN not set", requirement)
    try:
        info = _hf_api(ctx).whoami(token=token)
    except Exception as exc:
        status = _http_status(exc)
        if status == 401:
            return CheckResult("hf.token", name, FAIL, "rejected (401)", requirement,
                               "create a read token at https://huggingface.co/settings/tokens and set HF_TOKEN in .env")
        # Mirrors (hf-mirror, olah) have no whoami: the repo check below still tries the token.
        return CheckResult("hf.token", name, WARN, f"set; this endpoint has no whoami (HTTP {status})", requirement,
                           "nothing if the repo check passes: it uses the token")
    return CheckResult("hf.token", name, PASS, f"valid (user {info.get('name', '?')})", requirement)


def check_hf_repo(ctx: Context) -> CheckResult:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    name = "HF repo access"
    repos = [m.repo_id for m in ctx.models]
    if not repos:
        return _skip("hf.repo", name, "no --task given", "the task's repo readable", "rerun with --task T")
    requirement = f"{', '.join(repos)} readable at revision main"
    if ctx.hf_endpoint_status()[0] is None:
        return _skip("hf.repo", name, "endpoint unreachable", requirement)
    api, token, endpoint = _hf_api(ctx), _token(ctx), ctx.settings.hf_endpoint.rstrip("/")
    for repo in repos:
        try:
            api.model_info(repo, revision="main", token=token, timeout=30)
        except GatedRepoError:
            if not token:
                return CheckResult("hf.repo", name, FAIL, f"{repo}: needs a token", requirement,
                                   "set HF_TOKEN in .env (a read token from https://huggingface.co/settings/tokens)")
            return CheckResult("hf.repo", name, FAIL, f"{repo}: gated, this token has no access", requirement,
                               f"accept the conditions at {endpoint}/{repo} with the token's account")
        except RepositoryNotFoundError as exc:
            if _http_status(exc) == 401 and token:
                return CheckResult("hf.repo", name, FAIL, f"{repo}: token rejected (401)", requirement,
                                   "set a valid HF_TOKEN in .env")
            return CheckResult("hf.repo", name, FAIL, f"{repo}: not found, or no access", requirement,
                               "check the repo id / HF_ENDPOINT; for a private repo set HF_TOKEN")
        except Exception as exc:
            return CheckResult("hf.repo", name, FAIL, f"{repo}: {type(exc).__name__}: {str(exc)[:160]}",
                               requirement, "check HF_ENDPOINT and the network")
    return CheckResult("hf.repo", name, PASS, "readable", requirement)


# ============================================================================ the lists

ALL_CHECKS: tuple[Callable[[Context], CheckResult], ...] = (
    check_docker, check_host_folders, check_image, check_nvidia_runtime, check_gpus_visible, check_gpu_arch,
    check_driver, check_vram, check_host_ram, check_pinned_ram, check_disk, check_shm, check_memlock,
    check_hf_endpoint, check_hf_token, check_hf_repo, check_container,
)

# The cheap subset each command runs before anything slow (no probe container, no download).
STAGE_CHECKS: dict[str, tuple[Callable[[Context], CheckResult], ...]] = {
    "up": (check_docker, check_host_folders),
    # The download's own preflight judges disk space from the hub's real sizes (catalog sizes
    # are estimates), so only what it cannot see runs here.
    "download": (check_host_folders,),
    # GPU memory and host RAM are generate's own plan verdicts (it refuses a plan that does not
    # fit unless --force); these are what the plan cannot see.
    "generate": (check_gpu_arch, check_driver, check_shm),
}
