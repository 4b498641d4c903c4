"""The VideoX-Fun stack, planned: its container spec, its UI launch, and the checks around them.

Two plans live here, both pure:
- `plan_videox_container(settings)`: the container `wan22ctl up --stack videox-fun` creates
  (and `docker-compose.yml`'s `videox-fun` service renders, a test keeps the two equal).
- `plan_ui_launch(env, ...)`: what the container-side launcher (`wan22ctl.agent.videox`) hands
  VideoX-Fun's UI entry points — GPU memory mode, model path, config, port, server name.

The container runs the kit from a read-only mount of the host's own `wan22ctl` package, so the
same launcher works in the pulled PAI image (which has VideoX-Fun's Python stack but neither
VideoX-Fun nor the kit) and in the image built from our Dockerfile's `videox-fun` target.
Facts about VideoX-Fun come from aigc-apps/VideoX-Fun at VIDEOX_REF (examples/*/app.py,
videox_fun/ui/*_ui.py, config/wan2.2/).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from wan22ctl import paths
from wan22ctl.catalog import VIDEOX
from wan22ctl.plan.image import image_ref
from wan22ctl.plan.spec import ContainerSpec, Healthcheck, Mount, gpu_request
from wan22ctl.settings import Settings

# The port VideoX-Fun listens on inside the container when the port is published (bridge
# networking); with host networking it listens on VIDEOX_PORT itself.
UI_CONTAINER_PORT = 7860
CONTAINER_VIDEOX_OUTPUT_DIR = f"{paths.CONTAINER_OUTPUT_DIR}/videox-fun"
MODEL_SUBDIRS = ("Diffusion_Transformer", "Personalized_Model")
# Model loading happens before Gradio listens (host mode): minutes for a 5B model from disk.
UI_START_PERIOD_S = 900

GPU_MEMORY_MODES = ("model_full_load", "model_cpu_offload", "model_cpu_offload_and_qfloat8", "sequential_cpu_offload")

# GPU memory (MiB, as nvidia-smi reports it) -> mode, largest first. The 5B models hold about
# 22 GB of bf16 weights (DiT ~10 GB, UMT5-XXL ~11 GB, VAE); full load needs them plus 720p
# activations; model_cpu_offload keeps one model at a time on the GPU; qfloat8 halves the DiT;
# sequential offload streams layer by layer and fits 12 GB cards (VideoX-Fun's README).
GPU_MEMORY_THRESHOLDS_MIB: tuple[tuple[int, str], ...] = (
    (40_000, "model_full_load"),  # A100/H100 40-80 GB, L40S/A6000 48 GB
    (22_000, "model_cpu_offload"),  # 24 GB cards (4090, 3090, A10)
    (14_000, "model_cpu_offload_and_qfloat8"),  # 16 GB cards (V100 16G, 4080)
)
FALLBACK_GPU_MEMORY_MODE = "sequential_cpu_offload"
# The A14B Fun models hold two 14B experts in bf16 (about 28.6 GB each; 64 GB on disk with T5 and
# the VAE, VideoX-Fun's README). Full load keeps both experts, T5 and 720p activations (~20 GB)
# on the GPU; model_cpu_offload one expert at a time; qfloat8 halves the expert. Estimates from
# those sizes, not measured.
A14B_GPU_MEMORY_THRESHOLDS_MIB: tuple[tuple[int, str], ...] = (
    (120_000, "model_full_load"),  # H200 141 GB, B200
    (70_000, "model_cpu_offload"),  # A100/H100 80 GB
    (40_000, "model_cpu_offload_and_qfloat8"),  # 48 GB cards (L40S, A6000)
)


@dataclass(frozen=True)
class VideoXUi:
    """One family of VideoX-Fun UIs: which module's `ui`/`ui_host` serve it and with what config."""

    name_prefix: str  # folder names under Diffusion_Transformer this entry serves
    ui_module: str  # module exposing ui(...) and ui_host(...)
    scheduler_dict: str  # name in videox_fun.ui.controller
    config_path: str | None  # relative to the VideoX-Fun checkout; None: the UI takes no config
    # Set for models VideoX-Fun's UIs cannot drive at VIDEOX_REF (no camera or VACE inputs): the
    # example script that runs them instead, in the container.
    predict_script: str | None = None


# Longest prefix first. Wan2.2-Fun 5B models use the 5B config (Wan2.2 VAE, single DiT);
# examples/wan2.2_fun/app.py and predict_v2v_control_5b.py at VIDEOX_REF.
# The A14B Fun models use the i2v config (Wan2.1 VAE, experts in low_noise_model/ and
# high_noise_model/, boundary 0.900; examples/wan2.2_fun/app.py); VACE-Fun A14B the t2v config.
VIDEOX_UIS: tuple[VideoXUi, ...] = (
    VideoXUi("Wan2.2-Fun-5B-Control-Camera", "", "flow_scheduler_dict", "config/wan2.2/wan_civitai_5b.yaml",
             "examples/wan2.2_fun/predict_v2v_control_camera_5b.py"),
    VideoXUi("Wan2.2-Fun-A14B-Control-Camera", "", "flow_scheduler_dict", "config/wan2.2/wan_civitai_i2v.yaml",
             "examples/wan2.2_fun/predict_v2v_control_camera.py"),
    VideoXUi("Wan2.2-VACE-Fun-A14B", "", "flow_scheduler_dict", "config/wan2.2/wan_civitai_t2v.yaml",
             "examples/wan2.2_vace_fun/predict_v2v_control.py"),
    VideoXUi("Wan2.2-Fun-5B", "videox_fun.ui.wan2_2_fun_ui", "flow_scheduler_dict", "config/wan2.2/wan_civitai_5b.yaml"),
    VideoXUi("Wan2.2-Fun-A14B", "videox_fun.ui.wan2_2_fun_ui", "flow_scheduler_dict", "config/wan2.2/wan_civitai_i2v.yaml"),
    VideoXUi("CogVideoX-Fun", "videox_fun.ui.cogvideox_fun_ui", "ddpm_scheduler_dict", None),
)


def ui_for_model(model: str) -> VideoXUi:
    """The UI entry for a model folder name; unknown names get the Wan2.2-Fun 5B UI."""
    base = os.path.basename(model.rstrip("/"))
    for entry in VIDEOX_UIS:
        if base.lower().startswith(entry.name_prefix.lower()):
            return entry
    return VIDEOX_UIS[0]


def model_type_for(model: str) -> str:
    """VideoX-Fun's model_type: 'Control' for control models, else 'Inpaint'."""
    return "Control" if "control" in os.path.basename(model.rstrip("/")).lower() else "Inpaint"


def is_a14b(model: str) -> bool:
    return "a14b" in os.path.basename(model.rstrip("/")).lower()


def choose_gpu_memory_mode(total_mib: int | None, model: str = "") -> str:
    """The GPU memory mode for `model` on a GPU with `total_mib` MiB (None: unknown, the safest mode)."""
    if total_mib is None:
        return FALLBACK_GPU_MEMORY_MODE
    for threshold, mode in A14B_GPU_MEMORY_THRESHOLDS_MIB if is_a14b(model) else GPU_MEMORY_THRESHOLDS_MIB:
        if total_mib >= threshold:
            return mode
    return FALLBACK_GPU_MEMORY_MODE


# ---------------------------------------------------------------------------- container spec


def kit_package_dir() -> str:
    """The host's `wan22ctl` package folder (mounted read-only into the container)."""
    return str(Path(__file__).resolve().parents[1])


def container_ui_port(settings: Settings) -> int:
    """The port VideoX-Fun binds inside the container."""
    return settings.videox_port if settings.videox_host_network else UI_CONTAINER_PORT


def videox_environment(settings: Settings) -> dict[str, str]:
    """The launcher's environment: plain settings, never a secret."""
    return {
        "PYTHONPATH": paths.CONTAINER_KIT_DIR,
        "PYTHONUNBUFFERED": "1",
        "PYTORCH_ALLOC_CONF": "expandable_segments:True",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility,video",
        "VIDEOX_DIR": paths.CONTAINER_VIDEOX_DIR,
        "VIDEOX_REPO": settings["VIDEOX_REPO"],
        "VIDEOX_REF": settings["VIDEOX_REF"],
        "VIDEOX_MODEL": settings["VIDEOX_MODEL"],
        "VIDEOX_UI_MODE": settings["VIDEOX_UI_MODE"],
        "VIDEOX_GPU_MEMORY_MODE": settings["VIDEOX_GPU_MEMORY_MODE"],
        "VIDEOX_SERVER_NAME": "0.0.0.0",
        "VIDEOX_SERVER_PORT": str(container_ui_port(settings)),
        "VIDEOX_OUTPUT_DIR": CONTAINER_VIDEOX_OUTPUT_DIR,
    }


def launcher_command() -> tuple[str, ...]:
    """The container's command: our launcher, run by the image's own Python."""
    return ("python3", "-m", "wan22ctl.agent.videox", "ui")


def ui_health_command() -> tuple[str, ...]:
    return ("python3", "-m", "wan22ctl.agent.videox", "ui-health")


def plan_videox_container(settings: Settings) -> ContainerSpec:
    """The VideoX-Fun container: the seed's `docker run` (host network or a published port,
    GPUs, unconfined seccomp, large /dev/shm) with models/ and outputs on host storage."""
    host_network = settings.videox_host_network
    return ContainerSpec(
        stack="videox-fun",
        name=settings["VIDEOX_CONTAINER_NAME"],
        image=image_ref(settings, VIDEOX),
        command=launcher_command(),
        environment=videox_environment(settings),
        mounts=(
            Mount(settings["VIDEOX_MODELS_DIR"], paths.CONTAINER_VIDEOX_MODELS_DIR),
            Mount(settings["OUTPUT_DIR"], paths.CONTAINER_OUTPUT_DIR),
            Mount(kit_package_dir(), f"{paths.CONTAINER_KIT_DIR}/wan22ctl", read_only=True),
        ),
        gpus=gpu_request(settings.gpus),
        ipc_mode=None,
        uts_mode=None,
        security_opt=("seccomp=unconfined",),
        privileged=False,
        memlock=None,
        shm_size=settings["VIDEOX_SHM_SIZE"],
        tty=False,
        stdin_open=False,
        restart_policy=settings["RESTART_POLICY"],
        network_mode="host" if host_network else None,
        ports={} if host_network else {f"{UI_CONTAINER_PORT}/tcp": settings.videox_port},
        healthcheck=Healthcheck(test=ui_health_command(), interval_s=10, timeout_s=5, retries=3,
                                start_period_s=UI_START_PERIOD_S),
        working_dir=paths.CONTAINER_VIDEOX_DIR,
    )


_SIZE_RE = re.compile(r"^(\d+)([bkmg]?)$")
_UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def size_bytes(size: str) -> int:
    """'200g' -> bytes (the SHM_SIZE forms settings accept)."""
    m = _SIZE_RE.match(size.strip().lower())
    if not m:
        raise ValueError(size)
    return int(m.group(1)) * _UNIT[m.group(2)]


def shm_warning(shm_size: str, host_memory_bytes: int | None) -> str | None:
    """A warning when /dev/shm may grow past the Docker host's memory (None when it fits or is unknown).

    /dev/shm is a tmpfs limit, not a reservation, so Docker accepts any size; filling it beyond
    the host's memory swaps or triggers the OOM killer instead of failing cleanly.
    """
    if not host_memory_bytes:
        return None
    wanted = size_bytes(shm_size)
    if wanted <= host_memory_bytes:
        return None
    return (f"VIDEOX_SHM_SIZE={shm_size} is more than the Docker host's memory "
            f"({host_memory_bytes / 1024**3:.0f} GiB); /dev/shm filling up would exhaust it. "
            f"Set VIDEOX_SHM_SIZE to at most {host_memory_bytes // 1024**3}g in .env")


def ui_host_address(docker_host: str | None) -> str:
    """Where the host reaches the UI: the Docker host's name for tcp:// / ssh:// daemons, else localhost."""
    if docker_host and "://" in docker_host and not docker_host.startswith(("unix://", "npipe://")):
        rest = docker_host.split("://", 1)[1]
        host = rest.rsplit("@", 1)[-1].split("/", 1)[0]
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return host or "localhost"
    return "localhost"


def ui_url(settings: Settings, docker_host: str | None = None) -> str:
    """The URL the UI answers on from this machine."""
    return f"http://{ui_host_address(docker_host)}:{settings['VIDEOX_PORT']}/"


# ---------------------------------------------------------------------------- UI launch (container side)


@dataclass(frozen=True)
class UiLaunch:
    """What the launcher passes to VideoX-Fun's UI entry points (and prints before starting)."""

    videox_dir: str
    ui_module: str
    scheduler_dict: str
    ui_mode: str  # "host": model loaded at start; "normal": VideoX-Fun's model picker
    model_path: str
    model_type: str
    config_path: str | None
    gpu_memory_mode: str
    gpu_memory_reason: str
    server_name: str
    server_port: int
    savedir: str

    def to_dict(self) -> dict:
        return asdict(self)


def model_dir(env: Mapping[str, str]) -> str:
    """The folder VIDEOX_MODEL names (absolute, or under models/Diffusion_Transformer)."""
    videox_dir = env.get("VIDEOX_DIR", paths.CONTAINER_VIDEOX_DIR)
    model = env.get("VIDEOX_MODEL", "Wan2.2-Fun-5B-Control")
    if os.path.isabs(model):
        return model
    return os.path.join(videox_dir, "models", "Diffusion_Transformer", model)


def _selector(path: str) -> str:
    """The `download` selector of the catalog model in folder `path` (fun-control when none is)."""
    from wan22ctl import catalog

    base = os.path.basename(path.rstrip("/"))
    return next((m.key for m in catalog.MODELS if m.mount == "videox" and os.path.basename(m.subdir) == base),
                "fun-control")


def plan_ui_launch(env: Mapping[str, str], gpu_total_mib: int | None, model_present: bool) -> UiLaunch:
    """The UI launch from the container's environment, the first GPU's memory and whether the model is there.

    Raises ValueError (with the fix) when host mode is asked for and the model is missing.
    """
    videox_dir = env.get("VIDEOX_DIR", paths.CONTAINER_VIDEOX_DIR)
    path = model_dir(env)
    entry = ui_for_model(path)
    if entry.predict_script:
        raise ValueError(f"VideoX-Fun's UI cannot drive {os.path.basename(path)} (no camera or VACE inputs at "
                         f"VIDEOX_REF); set VIDEOX_MODEL to a Fun InP/Control model, or run its example in the "
                         f"container: python {entry.predict_script} (model_name = {path})")
    ui_mode = env.get("VIDEOX_UI_MODE", "auto")
    if ui_mode == "auto":
        ui_mode = "host" if model_present else "normal"
    elif ui_mode == "host" and not model_present:
        raise ValueError(f"VIDEOX_UI_MODE=host but {path} is missing or empty; download it "
                         f"(`wan22ctl download {_selector(path)}`) or set VIDEOX_UI_MODE=normal")
    mode = env.get("VIDEOX_GPU_MEMORY_MODE", "auto")
    if mode == "auto":
        mode = choose_gpu_memory_mode(gpu_total_mib, path)
        size = "two 14B experts" if is_a14b(path) else "a 5B model"
        reason = (f"auto: first GPU has {gpu_total_mib} MiB for {size}" if gpu_total_mib is not None
                  else "auto: GPU memory unknown (nvidia-smi failed), the safest mode")
    elif mode in GPU_MEMORY_MODES:
        reason = "VIDEOX_GPU_MEMORY_MODE"
    else:
        raise ValueError(f"VIDEOX_GPU_MEMORY_MODE={mode!r} must be auto or one of {', '.join(GPU_MEMORY_MODES)}")
    return UiLaunch(
        videox_dir=videox_dir,
        ui_module=entry.ui_module,
        scheduler_dict=entry.scheduler_dict,
        ui_mode=ui_mode,
        model_path=path,
        model_type=model_type_for(path),
        config_path=entry.config_path,
        gpu_memory_mode=mode,
        gpu_memory_reason=reason,
        server_name=env.get("VIDEOX_SERVER_NAME", "0.0.0.0"),
        server_port=int(env.get("VIDEOX_SERVER_PORT", str(UI_CONTAINER_PORT))),
        savedir=env.get("VIDEOX_OUTPUT_DIR", CONTAINER_VIDEOX_OUTPUT_DIR),
    )
