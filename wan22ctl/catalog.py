"""The one table of facts: the kit's stacks, model repos, checkpoint layouts, tasks, sizes, heads,
defaults, GPU rules.

Everything else (container and image plans, download plans, launch plans, validation, doctor)
reads these facts from here.
Sources: Wan2.2 at the pinned commit (`wan/configs/*.py`, `generate.py`) and the Hugging Face
repos; see ../shared/reference/wan22-upstream.md §2-§4.
"""

from __future__ import annotations

from dataclasses import dataclass

from wan22ctl import __version__
from wan22ctl.errors import UserError


@dataclass(frozen=True)
class Stack:
    """One of the kit's containers (`--stack`): the settings naming it and its image, and how `up` treats it."""

    name: str
    container_key: str  # the setting holding the container's name
    image_key: str  # the setting holding the image reference
    image_mode_key: str  # the setting saying build or pull
    build_target: str  # the Dockerfile target
    build_arg_keys: tuple[str, ...]  # settings passed to the build as arguments (never a secret)
    serves: bool  # can run the resident server (`up --serve`)
    preflight: bool  # doctor's cheap checks run before `up` builds or starts it
    wait_healthy: bool  # `up --wait` polls its health check
    next_step: str  # told after `up` ({name}: the container)
    local_build_image: str | None = None  # the tag a build from our Dockerfile gets while the image setting is left at its default


_BUILD_ARGS = ("BASE_IMAGE", "GPU_STACK", "TORCH_CUDA_ARCH_LIST", "TORCH_INDEX_URL", "WAN22_REPO", "WAN22_REF",
               "WAN22_SOURCE", "WAN_ANIMATE_PREP", "WAN_S2V_TTS")

STACKS: dict[str, Stack] = {
    "main": Stack(
        name="main", container_key="CONTAINER_NAME", image_key="DOCKER_IMAGE", image_mode_key="IMAGE_MODE",
        build_target="inference", build_arg_keys=_BUILD_ARGS, serves=True, preflight=True, wait_healthy=True,
        next_step="attach a shell: docker attach {name}   (detach with Ctrl-P Ctrl-Q)",
    ),
    "videox-fun": Stack(
        name="videox-fun", container_key="VIDEOX_CONTAINER_NAME", image_key="VIDEOX_IMAGE",
        image_mode_key="VIDEOX_IMAGE_MODE", build_target="videox-fun",
        build_arg_keys=(*_BUILD_ARGS, "VIDEOX_REPO", "VIDEOX_REF", "VIDEOX_SOURCE"), serves=False, preflight=False,
        # The UI loads its model before it listens (minutes); `wan22ctl ui` waits for that.
        wait_healthy=False, next_step="the UI is starting: `wan22ctl ui` waits until it answers and prints its URL",
        local_build_image=f"wan22ctl/videox-fun:{__version__}",
    ),
}
MAIN = STACKS["main"]
VIDEOX = STACKS["videox-fun"]


def stack(name: str) -> Stack:
    """The stack called `name`; UserError naming the choices when there is none."""
    if name not in STACKS:
        raise UserError(f"unknown stack {name!r}; choose {' or '.join(STACKS)}")
    return STACKS[name]


@dataclass(frozen=True)
class Model:
    """A downloadable checkpoint repository and where it lives under a checkpoint mount."""

    key: str  # short selector, e.g. "t2v"
    repo_id: str  # Hugging Face repo
    modelscope_id: str
    subdir: str  # folder under the mount root (CHECKPOINT_DIR or VIDEOX_MODELS_DIR)
    mount: str  # "checkpoints" (main stack) or "videox" (VideoX-Fun models/)
    required: tuple[str, ...]  # files or folders (ending in "/") a complete directory must contain
    approx_gb: float  # rough size for messages; preflight always uses the hub's real sizes
    description: str
    include: tuple[str, ...] = ()  # repo folders ("x/") or files to fetch; empty: the whole repo
    lora: bool = False  # LoRA files for `generate --lora` / `--preset`, not a checkpoint


_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
_TOKENIZER = "google/umt5-xxl/"


def _a14b_files() -> tuple[str, ...]:
    experts = []
    for expert in ("high_noise_model", "low_noise_model"):
        experts.append(f"{expert}/config.json")
        experts.append(f"{expert}/diffusion_pytorch_model.safetensors.index.json")
        experts += [
            f"{expert}/diffusion_pytorch_model-{i:05d}-of-00006.safetensors" for i in range(1, 7)
        ]
    return (_T5, _TOKENIZER, "Wan2.1_VAE.pth", *experts)


def _wan(key: str, name: str, required: tuple[str, ...], approx_gb: float, description: str) -> Model:
    """A Wan-AI checkpoint: the same name on Hugging Face and ModelScope, in its own folder under CHECKPOINT_DIR."""
    return Model(key=key, repo_id=f"Wan-AI/{name}", modelscope_id=f"Wan-AI/{name}", subdir=name, mount="checkpoints",
                 required=required, approx_gb=approx_gb, description=description)


MODELS: tuple[Model, ...] = (
    _wan("t2v", "Wan2.2-T2V-A14B", _a14b_files(), 126, "text-to-video, MoE 27B (14B active), 480P/720P"),
    _wan("i2v", "Wan2.2-I2V-A14B", _a14b_files(), 126, "image-to-video, MoE 27B (14B active), 480P/720P"),
    _wan("ti2v-5b", "Wan2.2-TI2V-5B",
         (_T5, _TOKENIZER, "Wan2.2_VAE.pth", "config.json", "diffusion_pytorch_model.safetensors.index.json",
          *[f"diffusion_pytorch_model-{i:05d}-of-00003.safetensors" for i in range(1, 4)]),
         34, "text/image-to-video 5B, 720P (1280*704) at 24 fps"),
    Model(
        key="fun-control",
        repo_id="alibaba-pai/Wan2.2-Fun-5B-Control",
        modelscope_id="PAI/Wan2.2-Fun-5B-Control",
        subdir="Diffusion_Transformer/Wan2.2-Fun-5B-Control",
        mount="videox",
        required=("config.json",),
        approx_gb=35,
        description="VideoX-Fun control video (canny/depth/pose) to video, 5B",
    ),
    Model(
        key="cogvideox-fun",
        repo_id="alibaba-pai/CogVideoX-Fun-V1.1-5b-InP",
        modelscope_id="PAI/CogVideoX-Fun-V1.1-5b-InP",
        subdir="Diffusion_Transformer/CogVideoX-Fun-V1.1-5b-InP",
        mount="videox",
        # diffusers layout (CogVideoXPipeline): the pipeline index and its component folders.
        required=("model_index.json", "transformer/", "vae/", "text_encoder/", "tokenizer/", "scheduler/"),
        approx_gb=30,
        description="VideoX-Fun CogVideoX-Fun 5B image-to-video (the seed's model)",
    ),
)


# --------------------------------------------------------------------------- the rest of the family
# Speech-to-video and character animation run through generate.py like the three above; the
# Fun A14B models and the other Fun 5B variants run in the VideoX-Fun UI. Layouts: Wan2.2's
# wan/configs/wan_{s2v,animate}_14B.py and wan/modules/animate/preprocess/preprocess_data.py at
# WAN22_REF; VideoX-Fun's config/wan2.2/*.yaml at VIDEOX_REF (experts in low_noise_model/ and
# high_noise_model/, Wan2.1 VAE for A14B, Wan2.2 VAE for 5B). Shard names are not listed: the
# download manifest covers every file of the hub's listing. Sizes are the VideoX-Fun README's
# (Fun models) or estimates from the shard sizes on the Hub (S2V, Animate); preflight always
# asks the hub.

ANIMATE_PROCESS_CHECKPOINTS = ("process_checkpoint/det/yolov10m.onnx", "process_checkpoint/pose2d/vitpose_h_wholebody.onnx",
                               "process_checkpoint/sam2/sam2_hiera_large.pt")


def _fun_a14b(name: str, description: str) -> Model:
    return Model(
        key=name.lower().replace("wan2.2-", ""),
        repo_id=f"alibaba-pai/{name}", modelscope_id=f"PAI/{name}", subdir=f"Diffusion_Transformer/{name}",
        mount="videox",
        required=(_T5, _TOKENIZER, "Wan2.1_VAE.pth", "low_noise_model/config.json", "high_noise_model/config.json"),
        approx_gb=64, description=description,
    )


def _fun_5b(name: str, description: str) -> Model:
    return Model(
        key=name.lower().replace("wan2.2-", ""), repo_id=f"alibaba-pai/{name}", modelscope_id=f"PAI/{name}",
        subdir=f"Diffusion_Transformer/{name}", mount="videox", required=("config.json",), approx_gb=23,
        description=description,
    )


FAMILY_MODELS: tuple[Model, ...] = (
    _wan("s2v", "Wan2.2-S2V-14B",
         (_T5, _TOKENIZER, "Wan2.1_VAE.pth", "config.json", "diffusion_pytorch_model.safetensors.index.json",
          "wav2vec2-large-xlsr-53-english/"),
         49, "speech-to-video 14B: image + audio (+ pose video), 480P/720P, clips of 80 frames at 16 fps"),
    _wan("animate", "Wan2.2-Animate-14B",
         (_T5, _TOKENIZER, "Wan2.1_VAE.pth", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
          "xlm-roberta-large/", "relighting_lora.ckpt", "config.json",
          "diffusion_pytorch_model.safetensors.index.json", *ANIMATE_PROCESS_CHECKPOINTS),
         75, "character animation / replacement 14B from a preprocessed folder (animate-prep), 77-frame clips at 30 fps"),
    _fun_a14b("Wan2.2-Fun-A14B-InP", "VideoX-Fun A14B (MoE) text/image-to-video with start and end frames"),
    _fun_a14b("Wan2.2-Fun-A14B-Control", "VideoX-Fun A14B (MoE) control video (canny/depth/pose/MLSD) to video"),
    _fun_a14b("Wan2.2-Fun-A14B-Control-Camera", "VideoX-Fun A14B (MoE) camera-motion control (predict script only)"),
    _fun_a14b("Wan2.2-VACE-Fun-A14B", "VideoX-Fun VACE A14B (MoE): control and subject reference (predict script only)"),
    _fun_5b("Wan2.2-Fun-5B-InP", "VideoX-Fun 5B text/image-to-video with start and end frames, 121 frames at 24 fps"),
    _fun_5b("Wan2.2-Fun-5B-Control-Camera", "VideoX-Fun 5B camera-motion control (predict script only)"),
)
MODELS = MODELS + FAMILY_MODELS

# CosyVoice 2 (FunAudioLLM), the text-to-speech model s2v-14B's --enable_tts runs: upstream's
# WanS2V.load_tts opens `CosyVoice2-0.5B` in its working folder (and downloads it from ModelScope
# there when absent, at run time); the kit keeps it under CHECKPOINT_DIR and links it in per run.
COSYVOICE = Model(
    key="cosyvoice", repo_id="FunAudioLLM/CosyVoice2-0.5B", modelscope_id="iic/CosyVoice2-0.5B",
    subdir="CosyVoice2-0.5B", mount="checkpoints",
    required=("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2.onnx", "CosyVoice-BlankEN/"),
    approx_gb=5, description="CosyVoice 2 text-to-speech (0.5B) for s2v-14B's --tts-text",
)
MODELS += (COSYVOICE,)

# Wan2.2-Lightning (ModelTC, weights at lightx2v/Wan2.2-Lightning): one rank-64 LoRA per A14B expert,
# `high_noise_model.safetensors` + `low_noise_model.safetensors` in a folder per release. The repo holds
# several releases and ComfyUI workflows; a selector fetches its folder alone. Not on ModelScope here.
LIGHTNING_REPO = "lightx2v/Wan2.2-Lightning"
LIGHTNING_T2V = "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"  # README: "slightly better than V1"
LIGHTNING_I2V = "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1"
_EXPERT_LORAS = ("high_noise_model.safetensors", "low_noise_model.safetensors")



def _lightning(key: str, release: str, description: str) -> Model:
    """One release folder of the Lightning repo, fetched alone into CHECKPOINT_DIR/loras/<key>."""
    return Model(key=key, repo_id=LIGHTNING_REPO, modelscope_id="", subdir=f"loras/{key}", mount="checkpoints",
                 required=tuple(f"{release}/{f}" for f in _EXPERT_LORAS), approx_gb=2.5, description=description,
                 include=(f"{release}/",), lora=True)


MODELS += (
    _lightning("lightning-t2v", LIGHTNING_T2V, "Wan2.2-Lightning 4-step LoRAs for t2v-A14B (V1.1, rank 64, one per expert)"),
    _lightning("lightning-i2v", LIGHTNING_I2V, "Wan2.2-Lightning 4-step LoRAs for i2v-A14B (V1, rank 64, one per expert)"),
)

MODEL_BY_KEY: dict[str, Model] = {m.key: m for m in MODELS}


def lora_folder(model: Model) -> str:
    """Where a catalog LoRA's files lie, relative to the checkpoint root (its Lightning-layout folder)."""
    return f"{model.subdir}/{model.include[0].rstrip('/')}" if model.include else model.subdir

# Selector aliases: each expands to one or more model keys.
SELECTORS: dict[str, tuple[str, ...]] = {
    "t2v": ("t2v",),
    "i2v": ("i2v",),
    "ti2va": ("t2v", "i2v"),  # the seed's name: T2V + I2V
    "ti2v-5b": ("ti2v-5b",),
    "ti2v": ("ti2v-5b",),
    "fun-control": ("fun-control",),
    "cogvideox-fun": ("cogvideox-fun",),
    "all-wan": ("t2v", "i2v", "ti2v-5b"),
    **{m.key: (m.key,) for m in FAMILY_MODELS},
    "cosyvoice": ("cosyvoice",),
    "fun-a14b": ("fun-a14b-inp", "fun-a14b-control"),  # the two the VideoX-Fun UI serves
    "lightning-t2v": ("lightning-t2v",),
    "lightning-i2v": ("lightning-i2v",),
}


def resolve_selector(selector: str) -> tuple[Model, ...]:
    """Models named by a selector or a full repo id (case-insensitive); KeyError when unknown."""
    s = selector.strip()
    if s.lower() in SELECTORS:
        return tuple(MODEL_BY_KEY[k] for k in SELECTORS[s.lower()])
    for m in MODELS:
        if m.repo_id.lower() == s.lower() and not m.lora:  # a LoRA repo holds several releases: name one
            return (m,)
    raise KeyError(selector)


def valid_selectors() -> list[str]:
    """Everything `download` accepts, for error messages and help."""
    return list(SELECTORS) + list(dict.fromkeys(m.repo_id for m in MODELS if not m.lora))


@dataclass(frozen=True)
class Task:
    """A Wan2.2 `generate.py` task and the facts the kit plans with."""

    name: str  # the --task value
    model_key: str
    num_heads: int
    sizes: tuple[str, ...]  # SUPPORTED_SIZES[task]
    default_size: str
    frame_num: int
    sample_steps: int
    sample_shift: float
    guide_scale: tuple[float, ...]  # config default: (low, high) for MoE, one value otherwise
    fps: int
    needs_image: bool  # i2v requires --image; ti2v takes it optionally
    accepts_image: bool
    moe: bool
    boundary: float | None
    dit_params_b: float  # parameters per DiT expert, billions
    # Single-GPU peak memory (GB) with the official flags, from the official table / README.
    single_gpu_min_gb: int
    # How frames are counted: "4n+1" frames a video, or "4n" frames a clip (s2v's --infer_frames).
    frame_rule: str = "4n+1"
    frame_flag: str = "--frame_num"  # the generate.py flag the frame count goes to
    takes_prompt: bool = True  # animate-14B: generate.py never passes --prompt on (its config prompt is used)
    size_from_inputs: bool = False  # animate-14B: the preprocessed folder fixes the size; --size is only checked
    inputs: tuple[str, ...] = ()  # request fields beyond the common ones (s2v: audio, ...; animate: src_root, ...)
    clips: bool = False  # the denoising loop runs once per clip (upstream's own clip count)
    dit_dtype: str = "fp32"  # how the DiT is stored and loaded: s2v/animate load bf16 (from_pretrained torch_dtype)
    memory_source: str = "official table"  # where the memory figures come from
    unserved_because: str = ""  # why the resident server cannot load it ("": it can; `up --serve`, SERVER_TASK)


TASKS: dict[str, Task] = {
    "t2v-A14B": Task(
        name="t2v-A14B", model_key="t2v", num_heads=40,
        sizes=("720*1280", "1280*720", "480*832", "832*480"), default_size="1280*720",
        frame_num=81, sample_steps=40, sample_shift=12.0, guide_scale=(3.0, 4.0), fps=16,
        needs_image=False, accepts_image=False, moe=True, boundary=0.875,
        dit_params_b=14.3, single_gpu_min_gb=80,
    ),
    "i2v-A14B": Task(
        name="i2v-A14B", model_key="i2v", num_heads=40,
        sizes=("720*1280", "1280*720", "480*832", "832*480"), default_size="1280*720",
        frame_num=81, sample_steps=40, sample_shift=5.0, guide_scale=(3.5, 3.5), fps=16,
        needs_image=True, accepts_image=True, moe=True, boundary=0.900,
        dit_params_b=14.3, single_gpu_min_gb=80,
    ),
    "ti2v-5B": Task(
        name="ti2v-5B", model_key="ti2v-5b", num_heads=24,
        sizes=("704*1280", "1280*704"), default_size="1280*704",
        frame_num=121, sample_steps=50, sample_shift=5.0, guide_scale=(5.0,), fps=24,
        needs_image=False, accepts_image=True, moe=False, boundary=None,
        dit_params_b=5.0, single_gpu_min_gb=24,
    ),
    # Frames a clip: --infer_frames (a multiple of 4, generate.py's default 80; the config's 81 is not used).
    "s2v-14B": Task(
        name="s2v-14B", model_key="s2v", num_heads=40,
        sizes=("720*1280", "1280*720", "480*832", "832*480", "1024*704", "704*1024", "704*1280", "1280*704"),
        default_size="1024*704", frame_num=80, sample_steps=40, sample_shift=3.0, guide_scale=(4.5,), fps=16,
        needs_image=True, accepts_image=True, moe=False, boundary=None,
        dit_params_b=16.0, single_gpu_min_gb=80, frame_rule="4n", frame_flag="--infer_frames",
        inputs=("audio", "pose_video", "num_clip", "start_from_ref", "tts_text", "tts_prompt_audio", "tts_prompt_text"),
        clips=True, dit_dtype="bf16", memory_source="estimate (README: 80 GB for one GPU; no measured table)",
    ),
    # Clips of --frame_num frames (77) overlapping by --refert_num, over the preprocessed pose video.
    "animate-14B": Task(
        name="animate-14B", model_key="animate", num_heads=40,
        sizes=("720*1280", "1280*720"), default_size="1280*720",
        frame_num=77, sample_steps=20, sample_shift=5.0, guide_scale=(1.0,), fps=30,
        needs_image=False, accepts_image=False, moe=False, boundary=None,
        dit_params_b=17.3, single_gpu_min_gb=80, takes_prompt=False, size_from_inputs=True,
        inputs=("src_root", "refert_num", "replace", "relighting_lora"), clips=True, dit_dtype="bf16",
        memory_source="estimate (no official figure)",
        unserved_because="its input is a folder that `wan22ctl animate-prep` makes from a driving video and a "
                         "character image (pose and face videos, minutes of preprocessing models), not something a "
                         "request uploads; run `wan22ctl animate-prep --video V --image I`, then `wan22ctl generate "
                         "--task animate-14B --src-root FOLDER`",
    ),
}

# --refert_num values WanAnimate.generate accepts (it asserts them after the 14B model has loaded);
# generate.py's own default, 77, is refused there.
ANIMATE_REFERT_NUMS = (1, 5)
ANIMATE_DEFAULT_REFERT_NUM = 1
# What Wan2.2's animate preprocessing writes into its --save_path, per mode.
ANIMATE_SOURCE_FILES = ("src_pose.mp4", "src_face.mp4", "src_ref.png")
ANIMATE_REPLACE_FILES = ("src_bg.mp4", "src_mask.mp4")
# S2V: the motion frames each clip continues from (wan_s2v_14B.py transformer.motion_frames) and
# the rate the audio encoder resamples features to (AudioEncoder.video_rate).
S2V_MOTION_FRAMES = 73
S2V_AUDIO_FEATURE_FPS = 30

# generate.py's --sample_solver choices, and the kit's: euler is the Wan2.2-Lightning sampler
# (agent.euler), which the bootstrap hands to upstream's pipelines under the unipc name
UPSTREAM_SOLVERS = ("unipc", "dpm++")
SOLVERS = (*UPSTREAM_SOLVERS, "euler")


@dataclass(frozen=True)
class Preset:
    """Sampling settings a distilled model needs, and the catalog LoRAs that make it."""

    name: str
    sample_steps: int
    guide_scale: float
    sample_shift: float
    solver: str
    loras: dict  # task -> catalog LoRA key (a Lightning-layout folder: one file per expert)
    description: str


# Sources (read 2026-11, ModelTC/Wan2.2-Lightning at 92efeb4): wan/configs/wan_t2v_A14B.py and
# wan_i2v_A14B.py set sample_steps = 4, sample_shift = 5.0, sample_guide_scale = (1.0, 1.0);
# generate.py defaults --sample_solver to "euler" and warns for any other solver with LoRAs ("it's
# used in distillation"); wan/utils/fm_solvers_euler.py is that sampler. With the A14B boundaries
# (0.875, 0.9) its timesteps 1000, 937.5, 833.3, 625 give two steps to each expert. docs/lightning.md.
PRESETS: dict[str, Preset] = {
    "lightning": Preset(
        name="lightning", sample_steps=4, guide_scale=1.0, sample_shift=5.0, solver="euler",
        loras={"t2v-A14B": "lightning-t2v", "i2v-A14B": "lightning-i2v"},
        description="Wan2.2-Lightning: 4 steps (2 per expert), guide scale 1.0 (one forward a step), Euler, shift 5",
    ),
}

# Bytes the T5 encoder (umt5-xxl, bf16) and the VAE take, for memory plans (GB).
T5_GB = 11.4


def task_names() -> list[str]:
    return list(TASKS)


def served_task_names() -> list[str]:
    """The tasks the resident server can load (SERVER_TASK's choices)."""
    return [name for name, t in TASKS.items() if not t.unserved_because]


def check_served(task: str) -> str:
    """`task` when the resident server can load it; UserError saying why not and what to run instead."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; the server runs {', '.join(served_task_names())}")
    if TASKS[task].unserved_because:
        raise UserError(f"the server does not run {task}: {TASKS[task].unserved_because}")
    return task


def s2v_clip_count(audio_seconds: float, infer_frames: int, fps: int = 16) -> int:
    """Clips WanS2V makes for an audio of this length: AudioEncoder.get_audio_embed_bucket_fps's
    `int(feature_frames / (infer_frames * video_rate / fps)) + 1`, feature frames at video_rate."""
    feature_frames = int(audio_seconds * S2V_AUDIO_FEATURE_FPS)
    return int(feature_frames / (infer_frames * S2V_AUDIO_FEATURE_FPS / fps)) + 1


def animate_clip_count(pose_frames: int, clip_len: int, refert_num: int) -> int:
    """Clips WanAnimate.generate runs over `pose_frames` source frames (get_valid_len's padding, then
    windows of clip_len advancing by clip_len - refert_num)."""
    step = clip_len - refert_num
    rest = (pose_frames - refert_num) % step
    target = pose_frames + (step - rest if rest else 0)
    clips, start = 0, 0
    while start + refert_num < target:
        clips += 1
        start += step
    return clips


def model_for_task(task: str) -> Model:
    return MODEL_BY_KEY[TASKS[task].model_key]


def ulysses_degrees(num_heads: int, max_gpus: int) -> list[int]:
    """GPU counts usable for Ulysses sequence parallelism: divisors of the head count."""
    return [n for n in range(1, max_gpus + 1) if num_heads % n == 0]


# --------------------------------------------------------------------------- GPU, driver, memory
# Facts `doctor` (and any plan) judges a machine by.

# Oldest GPU generation the image serves: flash-attn 2 and bf16 tensor cores need Ampere (8.0);
# Turing (7.5, T4/RTX 20xx) has neither.
MIN_COMPUTE_CAPABILITY = "8.0"

# Minimum Linux driver per CUDA toolkit release (GA), NVIDIA CUDA Toolkit release notes, table 3.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}
# Floor of CUDA minor-version compatibility per major: below a toolkit's own minimum but above
# this, precompiled kernels still run (PTX JIT does not); below it nothing runs.
CUDA_MAJOR_MIN_DRIVER: dict[str, str] = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}

# /dev/shm below this makes NCCL (multi-GPU) fail; Docker's default is 64 MiB.
MIN_SHM_GB = 1.0

# The negative prompt upstream always uses (`wan/configs/shared_config.py`, not exposed on
# generate.py's command line); recorded in every sidecar.
SAMPLE_NEG_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# s2v-14B's own negative prompt (wan/configs/wan_s2v_14B.py) and animate-14B's fixed prompt
# (wan_animate_14B.py `prompt`, what Wan-Animate conditions on since generate.py passes none).
S2V_NEG_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，多余的手指，画得不好的手部，"
    "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
ANIMATE_PROMPT = "视频中的人在做动作"


def negative_prompt(task: str) -> str:
    """The negative prompt upstream uses for `task` (none is exposed on generate.py's command line)."""
    return S2V_NEG_PROMPT if task == "s2v-14B" else SAMPLE_NEG_PROMPT
