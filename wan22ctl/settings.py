"""Settings: `.env`, the process environment and command-line flags resolved into one frozen object.

Precedence, highest first: a command-line flag, the process environment, the `.env` file, the
embedded defaults below (the same values `.env.example` carries; a test keeps the two equal).
Every resolved value remembers where it came from, so `wan22ctl config` can say so.
A misspelt key in `.env` is reported with the closest known key; an invalid value stops the
command (exit 2) naming the key and where the value came from.

Each value is parsed once, at load: `settings.gpus` is a `GpuSelection`, `settings.memlock` an
int or None, `settings.privileged` a bool, `settings.server_port` an int (every key, lower-case,
is an attribute holding its typed value). `settings["KEY"]` is the normalised text, which is what
the planners write into container specs and build arguments.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from wan22ctl.catalog import PRESETS, TASKS, served_task_names
from wan22ctl.errors import UserError

# ---------------------------------------------------------------------------- value parsers
# Each parser takes the raw string and returns the normalised string or raises ValueError.

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_RE = re.compile(r"^(\d+)([bkmg]?)$", re.IGNORECASE)


def _text(value: str) -> str:
    return value


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _bool(value: str) -> str:
    v = value.strip().lower()
    if v in _TRUE:
        return "true"
    if v in _FALSE:
        return "false"
    raise ValueError("must be true or false")


# the container side's WAN22_ATTENTION values (wan22ctl.agent.attention.CHOICES; a test keeps them equal)
ATTENTION_CHOICES = ("auto", "flash4", "flash3", "flash2", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return parse


def _byte_size(value: str) -> str:
    v = value.strip().lower()
    if not _SIZE_RE.match(v):
        raise ValueError("must be a size such as 16g, 512m or a number of bytes")
    return v


def _memlock(value: str) -> str:
    v = value.strip().lower()
    if v in ("unlimited", "-1"):
        return "unlimited"
    if v in ("off", "none", "default", ""):
        return "off"
    if v.isdigit():
        return v
    raise ValueError("must be unlimited, off, or a number of bytes")


@dataclass(frozen=True)
class GpuSelection:
    """GPUs asked for: every one, none, the N largest, or these indices (nvidia-smi order)."""

    kind: str  # "all" | "none" | "count" | "ids"
    count: int | None = None
    ids: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.kind == "count":
            return str(self.count)
        if self.kind == "ids":
            return "device=" + ",".join(map(str, self.ids))
        return self.kind


def parse_gpu_selection(value: str | None, *, allow_none: bool = True) -> GpuSelection:
    """The one reading of a GPU selection (the GPUS setting, `generate --gpus`): all, none, a count,
    or indices (`0,2`, `device=1`). ValueError saying what is accepted."""
    v = (value or "all").strip().lower().replace(" ", "")
    if v == "all" or (v == "none" and allow_none):
        return GpuSelection(v)
    if v.isdigit():
        if int(v) < 1:
            raise ValueError("a count must be at least 1")
        return GpuSelection("count", count=int(v))
    if re.fullmatch(r"(device=)?\d+(,\d+)+", v) or re.fullmatch(r"device=\d+", v):
        ids = tuple(int(x) for x in v.removeprefix("device=").split(","))
        if len(set(ids)) != len(ids):
            raise ValueError("an index appears twice")
        return GpuSelection("ids", ids=ids)
    raise ValueError(f"must be all, {'none, ' if allow_none else ''}a count (e.g. 2) or indices (e.g. 0,2 or device=1)")


def _gpus(value: str) -> str:
    return str(parse_gpu_selection(value))


def _source_path(value: str) -> str:
    """A path inside the kit folder (the build context) the Dockerfile can ADD; empty: clone instead."""
    value = value.strip()
    if value.startswith("/") or ".." in Path(value).parts:
        raise ValueError("must be a path inside the kit folder (the build context), such as .upstream/wan2.2.tar.gz")
    return value


def _abs_path(value: str) -> str:
    p = os.path.expanduser(value.strip())
    if not p:
        raise ValueError("must not be empty")
    return os.path.abspath(p)


def _port(value: str) -> str:
    v = value.strip()
    if not v.isdigit() or not 0 < int(v) < 65536:
        raise ValueError("must be a TCP port number (1-65535)")
    return v


def _arch_list(value: str) -> str:
    v = value.strip().strip('"')
    if not re.fullmatch(r"\d+\.\d+(\+PTX)?([; ]\d+\.\d+(\+PTX)?)*", v):
        raise ValueError('must look like "8.9;9.0"')
    return v


def _git_ref(value: str) -> str:
    v = value.strip()
    if not re.fullmatch(r"[0-9A-Za-z._/-]+", v):
        raise ValueError("must be a commit sha, tag or branch name")
    return v


def _server_task(value: str) -> str:
    """A task the resident server can load (case-insensitive); a task it cannot says why."""
    name = {t.lower(): t for t in TASKS}.get(value.strip().lower())
    if name is None:
        raise ValueError(f"must be one of {', '.join(served_task_names())}")
    if TASKS[name].unserved_because:
        raise ValueError(f"the server does not run {name}: {TASKS[name].unserved_because}")
    return name


def _server_preset(value: str) -> str:
    """Empty (no preset) or a catalog preset whose LoRAs the server merges at start."""
    v = value.strip().lower()
    if v and v not in PRESETS:
        raise ValueError(f"must be empty or one of {', '.join(PRESETS)}")
    return v


def _ip_address(value: str) -> str:
    import ipaddress

    v = value.strip()
    try:
        ipaddress.ip_address(v)
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return v


def _memlock_bytes(value: str) -> int | None:
    """The memlock ulimit: -1 for unlimited, None for the engine's default."""
    if value == "off":
        return None
    return -1 if value == "unlimited" else int(value)


def _true(value: str) -> bool:
    return value == "true"


def _quantity(value: str) -> str:
    v = value.strip()
    if not re.fullmatch(r"[1-9]\d*(Ki|Mi|Gi|Ti)", v):
        raise ValueError("must be a Kubernetes size such as 100Gi or 500Mi")
    return v


def _positive_int(value: str) -> str:
    v = value.strip()
    if not v.isdigit() or int(v) < 1:
        raise ValueError("must be a whole number of at least 1")
    return v


def _postgres_url(value: str) -> str:
    v = value.strip()
    if v and not v.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL, or empty for the embedded SQLite queue")
    return v


_LABEL = r"([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?"


def _node_selector(value: str) -> str:
    items = [x.strip() for x in value.split(",") if x.strip()]
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not re.fullmatch(_LABEL, key) or (val and not re.fullmatch(r"[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?", val)):
            raise ValueError("must be label=value pairs separated by commas, e.g. nvidia.com/gpu.present=true")
    return ",".join(items)


def _tolerations(value: str) -> str:
    items = [x.strip() for x in value.split(",") if x.strip()]
    for item in items:
        m = re.fullmatch(rf"({_LABEL})(=[^:]+)?:(NoSchedule|PreferNoSchedule|NoExecute)", item)
        if not m:
            raise ValueError("must be key[=value]:Effect items separated by commas, e.g. nvidia.com/gpu:NoSchedule")
    return ",".join(items)


@dataclass(frozen=True)
class SettingSpec:
    """One known key: its default (the `.env.example` value), parser, typed form, and whether it is secret.

    `parse` checks the raw text and returns it normalised; `typed` turns that text into the value
    code reads (`settings.<key in lower case>`).
    """

    key: str
    default: str
    parse: Callable[[str], str]
    help: str
    secret: bool = False
    group: str = "main"
    typed: Callable[[str], Any] = str


# The one table of settings. `.env.example` is these keys with these defaults, in this order.
SPECS: tuple[SettingSpec, ...] = (
    # -- image
    SettingSpec("DOCKER_IMAGE", "wan22ctl/inference:0.1.0", _nonempty, "image for the inference container", group="image"),
    SettingSpec("IMAGE_MODE", "build", _choice("build", "pull"), "build the image from ./Dockerfile, or pull DOCKER_IMAGE", group="image"),
    SettingSpec("BASE_IMAGE", "huggingface/transformers-pytorch-gpu:4.41.3", _nonempty, "CUDA/PyTorch base image the Dockerfile builds on", group="image"),
    SettingSpec("TORCH_CUDA_ARCH_LIST", "8.9;9.0", _arch_list, "GPU architectures compiled into CUDA extensions (L40S/4090 = 8.9, H100/H200 = 9.0)", group="image"),
    SettingSpec("GPU_STACK", "true", _bool, "install the CUDA stack (torch pins, flash-attn, Wan2.2); false builds only the kit's own layers", group="image", typed=_true),
    SettingSpec("WAN22_REPO", "https://github.com/Wan-Video/Wan2.2.git", _nonempty, "Wan2.2 git repository cloned into the image", group="image"),
    SettingSpec("WAN22_REF", "42bf4cfaa384bc21833865abc2f9e6c0e67233dc", _git_ref, "Wan2.2 commit the image is pinned to", group="image"),
    SettingSpec("WAN22_SOURCE", "", _source_path, "Wan2.2 tree or .tar/.tar.gz inside the kit folder to build from instead of cloning WAN22_REPO (no GitHub needed; name its commit in WAN22_REF)", group="image"),
    SettingSpec("WAN_ANIMATE_PREP", "true", _bool, "install Wan2.2's requirements_animate.txt (what `wan22ctl animate-prep` runs)", group="image", typed=_true),
    SettingSpec("WAN_S2V_TTS", "false", _bool, "install Wan2.2's requirements_s2v.txt (CosyVoice text-to-speech for `generate --task s2v-14B --tts-text`; model: `wan22ctl download cosyvoice`)", group="image", typed=_true),
    SettingSpec("TORCH_INDEX_URL", "https://download.pytorch.org/whl/cu128", _nonempty, "pip index torch comes from (https://pypi.org/simple serves the same CUDA 12.8 build; or a mirror)", group="image"),
    SettingSpec("REGISTRY_USERNAME", "", _text, "user for `wan22ctl push`/`pull` to a private registry", group="image"),
    SettingSpec("REGISTRY_PASSWORD", "", _text, "password or token for that registry (never stored or logged)", secret=True, group="image"),
    # -- container
    SettingSpec("CONTAINER_NAME", "wan22-inference", _nonempty, "name of the inference container", group="container"),
    SettingSpec("GPUS", "all", _gpus, "GPUs given to the container: all, none, a count, or device=0,1", group="container", typed=parse_gpu_selection),
    SettingSpec("SHM_SIZE", "16g", _byte_size, "size of /dev/shm in the container", group="container"),
    SettingSpec("PRIVILEGED", "true", _bool, "run the container privileged", group="container", typed=_true),
    SettingSpec("MEMLOCK", "unlimited", _memlock, "memlock ulimit: unlimited, off, or bytes", group="container", typed=_memlock_bytes),
    SettingSpec("RESTART_POLICY", "unless-stopped", _choice("no", "always", "unless-stopped", "on-failure"), "Docker restart policy of the container", group="container"),
    SettingSpec("OUTPUT_DIR", "/opt/outputs", _abs_path, "host folder mounted at /opt/outputs (generated videos)", group="container"),
    SettingSpec("CHECKPOINT_DIR", "/opt/checkpoints", _abs_path, "host folder mounted at /opt/checkpoints (model weights survive the container)", group="container"),
    SettingSpec("HF_HOME", "/opt/hf-home", _abs_path, "host folder mounted as the container's Hugging Face cache", group="container"),
    SettingSpec("WAN22_ATTENTION", "auto", _choice(*ATTENTION_CHOICES), "attention backend of Wan2.2's DiT: auto (fastest measured for the GPU), flash4, sdpa (cuDNN first), flash3, flash2, sdpa-cudnn, sdpa-flash, sdpa-efficient, sdpa-math", group="container"),
    SettingSpec("WAN22_COMPILE", "auto", _choice("auto", "1", "0"), "torch.compile of the DiT block: auto (one-GPU runs of >= 20 steps and the server), 1, 0", group="container"),
    SettingSpec("WAN22_DTYPE", "bf16", _choice("bf16", "fp8"), "A14B DiT weights: bf16, or fp8 (float8 linears quantized at load; sm_89/sm_90 GPUs; default of --dtype and the server's)", group="container"),
    # -- hub
    SettingSpec("HF_TOKEN", "", _text, "Hugging Face token, passed to downloads at exec time only", secret=True, group="hub"),
    SettingSpec("HF_ENDPOINT", "https://huggingface.co", _nonempty, "Hugging Face endpoint (a mirror such as https://hf-mirror.com)", group="hub"),
    # -- VideoX-Fun stack
    SettingSpec("VIDEOX_IMAGE", "mybigpai-public-registry.cn-beijing.cr.aliyuncs.com/easycv/torch_cuda:cogvideox_fun", _nonempty, "image for the VideoX-Fun stack (left at this default, VIDEOX_IMAGE_MODE=build tags wan22ctl/videox-fun:VERSION instead)", group="videox"),
    SettingSpec("VIDEOX_IMAGE_MODE", "pull", _choice("build", "pull"), "pull VIDEOX_IMAGE, or build the videox-fun target of ./Dockerfile", group="videox"),
    SettingSpec("VIDEOX_CONTAINER_NAME", "wan22-videox-fun", _nonempty, "name of the VideoX-Fun container", group="videox"),
    SettingSpec("VIDEOX_MODELS_DIR", "/opt/videox-models", _abs_path, "host folder mounted as VideoX-Fun's models/ (Diffusion_Transformer, Personalized_Model)", group="videox"),
    SettingSpec("VIDEOX_PORT", "7860", _port, "port of the VideoX-Fun Gradio UI", group="videox", typed=int),
    SettingSpec("VIDEOX_HOST_NETWORK", "true", _bool, "use host networking (else publish VIDEOX_PORT)", group="videox", typed=_true),
    SettingSpec("VIDEOX_SHM_SIZE", "200g", _byte_size, "size of /dev/shm in the VideoX-Fun container", group="videox"),
    SettingSpec("VIDEOX_REPO", "https://github.com/aigc-apps/VideoX-Fun.git", _nonempty, "VideoX-Fun git repository (build mode, and the checkout a pulled image lacks)", group="videox"),
    SettingSpec("VIDEOX_REF", "804a4258e2608f855ccaec8fffa279e75a3b89c6", _git_ref, "VideoX-Fun commit the stack is pinned to", group="videox"),
    SettingSpec("VIDEOX_SOURCE", "", _source_path, "VideoX-Fun tree or .tar/.tar.gz inside the kit folder to build from instead of cloning VIDEOX_REPO", group="videox"),
    SettingSpec("VIDEOX_MODEL", "Wan2.2-Fun-5B-Control", _nonempty, "model the UI loads: a folder under VIDEOX_MODELS_DIR/Diffusion_Transformer", group="videox"),
    SettingSpec("VIDEOX_UI_MODE", "auto", _choice("auto", "host", "normal"), "host: load VIDEOX_MODEL at start; normal: VideoX-Fun's model picker; auto: host when the model is downloaded", group="videox"),
    SettingSpec("VIDEOX_GPU_MEMORY_MODE", "auto", _choice("auto", "model_full_load", "model_cpu_offload", "model_cpu_offload_and_qfloat8", "sequential_cpu_offload"), "VideoX-Fun GPU memory mode (auto: chosen from GPU memory)", group="videox"),
    # -- resident server (`wan22ctl up --serve`, `jobs`, `wait`, `cancel`)
    SettingSpec("SERVER_TASK", "ti2v-5B", _server_task, "task the resident server loads once and serves (`up --serve`)", group="server"),
    SettingSpec("SERVER_PRESET", "", _server_preset, "preset the resident server starts with (`up --serve`): empty, or lightning (its catalog LoRAs merged once at load; requests that name no preset get its 4-step settings)", group="server"),
    SettingSpec("SERVER_PORT", "8000", _port, "host port the resident server is published on", group="server", typed=int),
    SettingSpec("SERVER_HOST", "127.0.0.1", _ip_address, "host address the server port is published on; beyond 127.0.0.1 needs WAN22_API_KEY", group="server"),
    SettingSpec("WAN22_API_KEY", "", _text, "API key the server requires (Authorization: Bearer KEY); never stored in the container spec", secret=True, group="server"),
    SettingSpec("WAN22_API_KEY_FILE", "", _text, "docker-compose.serve.yml only: host file holding the API key (first line), mounted read-only into the server", group="server"),
    SettingSpec("WAN22_QUEUE_URL", "", _postgres_url, "shared job queue for server replicas: postgresql://user:password@host:5432/db (empty: the embedded SQLite file); `kube apply` stores it in a Secret, `up --serve` in a mode-600 file on the outputs mount", secret=True, group="server"),
    # -- Kubernetes (`wan22ctl kube render|apply`)
    SettingSpec("KUBE_NAMESPACE", "wan22", _nonempty, "namespace the manifests are rendered into", group="kube"),
    SettingSpec("KUBE_REPLICAS", "1", _positive_int, "server replicas (GPU pods) without autoscaling", group="kube", typed=int),
    SettingSpec("KUBE_MAX_REPLICAS", "4", _positive_int, "most server replicas KEDA scales to (keda overlays; the least is 0)", group="kube", typed=int),
    SettingSpec("KUBE_GPUS_PER_POD", "1", _positive_int, "GPUs per server pod (torchrun ranks inside the pod, planned as for `generate`)", group="kube", typed=int),
    SettingSpec("KUBE_GPU_MEMORY_GB", "80", _positive_int, "memory of one GPU of the GPU nodes, for the plan (memory flags, host RAM)", group="kube", typed=int),
    SettingSpec("KUBE_NODE_SELECTOR", "", _node_selector, "node labels the GPU pods need, e.g. nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3", group="kube"),
    SettingSpec("KUBE_TOLERATIONS", "nvidia.com/gpu:NoSchedule", _tolerations, "taints the GPU pods tolerate: key[=value]:Effect, comma-separated", group="kube"),
    SettingSpec("KUBE_STORAGE_CLASS", "", _text, "storage class of the shared (ReadWriteMany) volumes; empty: the cluster's default", group="kube"),
    SettingSpec("KUBE_OUTPUT_SIZE", "100Gi", _quantity, "size of the shared outputs volume (videos, sidecars, uploads)", group="kube"),
)

SPEC_BY_KEY: dict[str, SettingSpec] = {s.key: s for s in SPECS}
DEFAULTS: dict[str, str] = {s.key: s.default for s in SPECS}


@dataclass(frozen=True)
class Value:
    """A resolved setting: the normalised text, where it came from, and the typed value."""

    value: str
    source: str  # "flag", "environment", ".env (path)", "default"
    typed: Any = None


@dataclass(frozen=True)
class Settings:
    """Every known key resolved. `settings.gpus` (any key in lower case) is the typed value;
    `settings["GPUS"]` the normalised text."""

    values: Mapping[str, Value]
    env_file: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    def __getitem__(self, key: str) -> str:
        return self.values[key].value

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values") or {}
        if name.upper() in values and name == name.lower():
            return values[name.upper()].typed
        raise AttributeError(name)

    def source(self, key: str) -> str:
        return self.values[key].source

    def masked(self) -> dict[str, str]:
        """Every value, with secrets shown as set/unset only."""
        return {k: (mask(v.value) if SPEC_BY_KEY[k].secret else v.value) for k, v in self.values.items()}

    def with_overrides(self, overrides: Mapping[str, str | None]) -> "Settings":
        """A copy with command-line flags applied (None means the flag was not given)."""
        values = dict(self.values)
        for key, raw in overrides.items():
            if raw is not None:
                values[key] = _parse(key, str(raw), "flag")
        return Settings(values, self.env_file, self.warnings)


def mask(secret: str) -> str:
    """How a secret is shown anywhere: whether it is set, never its characters."""
    return "(set, hidden)" if secret else "(not set)"


def _parse(key: str, raw: str, source: str) -> Value:
    spec = SPEC_BY_KEY[key]
    try:
        value = spec.parse(raw)
        return Value(value, source, spec.typed(value))
    except ValueError as exc:
        shown = mask(raw) if SPEC_BY_KEY[key].secret else repr(raw)
        raise UserError(f"invalid {key}={shown} (from {source}): {exc}") from None


def read_user_text(path: str | os.PathLike, what: str) -> str:
    """The text of a file the user named (a settings file, a prompt file); one UserError naming
    the file when it is missing, a folder, unreadable or not UTF-8."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, not a file")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{what} {p} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None


def find_env_file(explicit: str | os.PathLike | None = None, flag: str = "--env-file") -> Path | None:
    """The `.env` to read: an explicit path (`flag`), else WAN22CTL_ENV_FILE, else ./.env if present.
    Whatever names it, a missing file or a folder is a UserError naming where the name came from."""
    if explicit:
        named, p = flag, Path(explicit)
    elif os.environ.get("WAN22CTL_ENV_FILE"):
        named, p = "WAN22CTL_ENV_FILE", Path(os.environ["WAN22CTL_ENV_FILE"])
    else:
        p = Path(".env")
        if p.is_dir():
            raise UserError(".env is a folder, not a settings file", fix="remove or rename it, or pass --env-file FILE")
        return p if p.exists() else None
    if p.is_dir():
        raise UserError(f"{named} {p} is a folder, not a settings file")
    if not p.exists():
        raise UserError(f"{named} {p} does not exist")
    return p


def unknown_key_warning(key: str, where: str) -> str:
    """The line shown for a key we do not know, with the closest known key when there is one."""
    close = difflib.get_close_matches(key.upper(), SPEC_BY_KEY, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"warning: unknown key {key} in {where}{hint}; it is ignored"


def load_settings(
    env_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Settings:
    """Resolve every known key: flag > process environment > `.env` > embedded default."""
    import io

    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    path = find_env_file(env_file)
    file_values: dict[str, str | None] = {}
    if path:
        file_values = dict(dotenv_values(stream=io.StringIO(read_user_text(path, "settings file"))))
    warnings = tuple(
        unknown_key_warning(k, str(path)) for k in file_values if k not in SPEC_BY_KEY
    )
    values: dict[str, Value] = {}
    for spec in SPECS:
        in_file = file_values.get(spec.key)
        if spec.key in environ and in_file is not None and environ[spec.key] != in_file:
            # Generic names (CONTAINER_NAME, HF_HOME) are often set by the platform; say so.
            shown = mask(environ[spec.key]) if spec.secret else environ[spec.key]
            warnings += (f"note: {spec.key}={shown} from the environment overrides the value in {path}",)
        if spec.key in environ:
            raw, source = environ[spec.key], "environment"
        elif file_values.get(spec.key) is not None:
            raw, source = str(file_values[spec.key]), f".env ({path})"
        else:
            raw, source = spec.default, "default"
        values[spec.key] = _parse(spec.key, raw, source)
    settings = Settings(values, path, warnings)
    return settings.with_overrides(overrides or {})


def load_cli_settings(overrides: Mapping[str, object] | None = None) -> Settings:
    """Settings for one command (flags given as `overrides`, None: not given), its warnings
    (misspelt keys, shadowed values) shown on stderr."""
    settings = load_settings(overrides={k: (None if v is None else str(v)) for k, v in (overrides or {}).items()})
    for line in settings.warnings:
        print(line, file=sys.stderr)
    return settings


def render_env_example() -> str:
    """The text of `.env.example`: every key with its default and help, grouped."""
    lines = [
        "# wan22ctl settings. Copy to .env and edit; every key is optional (these are the defaults).",
        "# Precedence: command-line flag > process environment > .env > these defaults.",
    ]
    group = None
    for spec in SPECS:
        if spec.group != group:
            group = spec.group
            lines += ["", f"# --- {group}"]
        lines.append(f"# {spec.help}")
        lines.append(f"{spec.key}={spec.default}")
    return "\n".join(lines) + "\n"
