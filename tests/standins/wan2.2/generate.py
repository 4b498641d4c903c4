#!/usr/bin/env python3
"""Stand-in for Wan2.2's generate.py (commit 42bf4cf) in test images: same flags, same output shape.

The argparse block below mirrors upstream's `_parse_args()` flag for flag (names, types,
defaults, choices), and `_validate_args()` / the checks at the top of `generate()` are
upstream's, so a wrong argv fails here exactly as it would there. Instead of loading models it
prints upstream's log lines (rank 0, stdout, `[time] INFO: ...`), draws a tqdm-style bar on
stderr from every rank, and copies a tiny valid MP4 to --save_file.

Stdlib only, so it runs on the test image's torch-less system python, except for one line: where
the stand-in `wan` package lies beside it (this folder, the GPU image's Wan2.2 tree) it imports
`wan` first, as upstream does, which needs the image's packages and a GPU at the same point.

Behaviour on request, by a marker in the prompt:
  @@fail     raise RuntimeError half way through denoising (exit 1, traceback)
  @@hang     stop at step 2 and sleep until killed
  @@nosave   log upstream's "save_video failed" and exit 0 without writing (upstream swallows it)
  @@badsave  write half an MP4 (a cut-short write) and exit 0
  @@nomerge  s2v: log upstream's "merge_video_audio failed" (ffmpeg missing) and exit 0, the video silent
  @@slow     0.25 s per denoising step (default WAN22_STANDIN_STEP_S or 0.005 s)
s2v-14B and animate-14B run their clips as upstream does: one bar a clip, the clip count from the
audio's length (WAV, read with the standard library; other formats make one clip; with
--enable_tts the "speech" is the prompt recording, copied to tts.wav in the working folder once
CosyVoice2-0.5B is found there, as WanS2V.tts writes it) or from
src_pose.mp4's frame count; the audio, pose video and source folder are opened where upstream
opens them, and animate's refert_num is asserted after the "load", as WanAnimate.generate does.
Every process appends one JSON line (argv, RANK, WORLD_SIZE, CUDA_VISIBLE_DEVICES, pid) to
WAN22_STANDIN_LOG (default /tmp/wan22-standin-calls.jsonl).
"""
import argparse
import json
import logging
import os
import random
import shutil
import sys
import time
import warnings
from datetime import datetime

warnings.filterwarnings('ignore')

if __name__ == "__main__" and os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "wan")):
    import wan  # noqa: F401  (upstream's generate.py imports it before parsing any argument)

# --- wan.configs facts (SIZE_CONFIGS, SUPPORTED_SIZES, WAN_CONFIGS keys, num_heads, defaults)
SIZE_CONFIGS = {
    '720*1280': (720, 1280),
    '1280*720': (1280, 720),
    '480*832': (480, 832),
    '832*480': (832, 480),
    '704*1280': (704, 1280),
    '1280*704': (1280, 704),
    '1024*704': (1024, 704),
    '704*1024': (704, 1024),
}
SUPPORTED_SIZES = {
    't2v-A14B': ('720*1280', '1280*720', '480*832', '832*480'),
    'i2v-A14B': ('720*1280', '1280*720', '480*832', '832*480'),
    'ti2v-5B': ('704*1280', '1280*704'),
    's2v-14B': ('720*1280', '1280*720', '480*832', '832*480', '1024*704',
                '704*1024', '704*1280', '1280*704'),
    'animate-14B': ('720*1280', '1280*720')
}


class _Cfg(dict):
    __getattr__ = dict.__getitem__


WAN_CONFIGS = {
    't2v-A14B': _Cfg(num_heads=40, sample_steps=40, sample_shift=12.0, sample_guide_scale=(3.0, 4.0), frame_num=81, sample_fps=16),
    'i2v-A14B': _Cfg(num_heads=40, sample_steps=40, sample_shift=5.0, sample_guide_scale=(3.5, 3.5), frame_num=81, sample_fps=16),
    'ti2v-5B': _Cfg(num_heads=24, sample_steps=50, sample_shift=5.0, sample_guide_scale=5.0, frame_num=121, sample_fps=24),
    'animate-14B': _Cfg(num_heads=40, sample_steps=20, sample_shift=5.0, sample_guide_scale=1.0, frame_num=77, sample_fps=30),
    's2v-14B': _Cfg(num_heads=40, sample_steps=40, sample_shift=3, sample_guide_scale=4.5, frame_num=81, sample_fps=16),
}

EXAMPLE_PROMPT = {
    "t2v-A14B": {"prompt": "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."},
    "i2v-A14B": {"prompt": "Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard.", "image": "examples/i2v_input.JPG"},
    "ti2v-5B": {"prompt": "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage."},
    "animate-14B": {"prompt": "视频中的人在做动作", "video": "", "pose": "", "mask": ""},
    "s2v-14B": {"prompt": "Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard.",
                "image": "examples/i2v_input.JPG", "audio": "examples/talk.wav",
                "tts_prompt_audio": "examples/zero_shot_prompt.wav", "tts_prompt_text": "希望你以后能够做的比我还好呦。",
                "tts_text": "收到好友从远方寄来的生日礼物。"},
}
PIPELINE = {"t2v-A14B": "WanT2V", "i2v-A14B": "WanI2V", "ti2v-5B": "WanTI2V", "animate-14B": "Wan-Animate", "s2v-14B": "WanS2V"}


def str2bool(v):
    """wan.utils.utils.str2bool."""
    if isinstance(v, bool):
        return v
    v_lower = v.lower()
    if v_lower in ('yes', 'true', 't', 'y', '1'):
        return True
    elif v_lower in ('no', 'false', 'f', 'n', '0'):
        return False
    else:
        raise argparse.ArgumentTypeError('Boolean value expected (True/False)')


def _validate_args(args):
    assert args.ckpt_dir is not None, "Please specify the checkpoint directory."
    assert args.task in WAN_CONFIGS, f"Unsupport task: {args.task}"
    assert args.task in EXAMPLE_PROMPT, f"Unsupport task: {args.task}"
    if args.prompt is None:
        args.prompt = EXAMPLE_PROMPT[args.task]["prompt"]
    if args.image is None and "image" in EXAMPLE_PROMPT[args.task]:
        args.image = EXAMPLE_PROMPT[args.task]["image"]
    if args.audio is None and args.enable_tts is False and "audio" in EXAMPLE_PROMPT[args.task]:
        args.audio = EXAMPLE_PROMPT[args.task]["audio"]
    if (args.tts_prompt_audio is None or args.tts_text is None) and args.enable_tts is True and "audio" in EXAMPLE_PROMPT[args.task]:
        args.tts_prompt_audio = EXAMPLE_PROMPT[args.task]["tts_prompt_audio"]
        args.tts_prompt_text = EXAMPLE_PROMPT[args.task]["tts_prompt_text"]
        args.tts_text = EXAMPLE_PROMPT[args.task]["tts_text"]
    if args.task == "i2v-A14B":
        assert args.image is not None, "Please specify the image path for i2v."
    cfg = WAN_CONFIGS[args.task]
    if args.sample_steps is None:
        args.sample_steps = cfg.sample_steps
    if args.sample_shift is None:
        args.sample_shift = cfg.sample_shift
    if args.sample_guide_scale is None:
        args.sample_guide_scale = cfg.sample_guide_scale
    if args.frame_num is None:
        args.frame_num = cfg.frame_num
    args.base_seed = args.base_seed if args.base_seed >= 0 else random.randint(0, sys.maxsize)
    if not 's2v' in args.task:
        assert args.size in SUPPORTED_SIZES[args.task], \
            f"Unsupport size {args.size} for task {args.task}, supported sizes are: {', '.join(SUPPORTED_SIZES[args.task])}"


def _parse_args():
    parser = argparse.ArgumentParser(description="Generate a image or video from a text prompt or image using Wan")
    parser.add_argument("--task", type=str, default="t2v-A14B", choices=list(WAN_CONFIGS.keys()), help="The task to run.")
    parser.add_argument("--size", type=str, default="1280*720", choices=list(SIZE_CONFIGS.keys()),
                        help="The area (width*height) of the generated video.")
    parser.add_argument("--frame_num", type=int, default=None, help="How many frames of video are generated. The number should be 4n+1")
    parser.add_argument("--ckpt_dir", type=str, default=None, help="The path to the checkpoint directory.")
    parser.add_argument("--offload_model", type=str2bool, default=None, help="Whether to offload the model to CPU after each model forward.")
    parser.add_argument("--ulysses_size", type=int, default=1, help="The size of the ulysses parallelism in DiT.")
    parser.add_argument("--t5_fsdp", action="store_true", default=False, help="Whether to use FSDP for T5.")
    parser.add_argument("--t5_cpu", action="store_true", default=False, help="Whether to place T5 model on CPU.")
    parser.add_argument("--dit_fsdp", action="store_true", default=False, help="Whether to use FSDP for DiT.")
    parser.add_argument("--save_file", type=str, default=None, help="The file to save the generated video to.")
    parser.add_argument("--prompt", type=str, default=None, help="The prompt to generate the video from.")
    parser.add_argument("--use_prompt_extend", action="store_true", default=False, help="Whether to use prompt extend.")
    parser.add_argument("--prompt_extend_method", type=str, default="local_qwen", choices=["dashscope", "local_qwen"],
                        help="The prompt extend method to use.")
    parser.add_argument("--prompt_extend_model", type=str, default=None, help="The prompt extend model to use.")
    parser.add_argument("--prompt_extend_target_lang", type=str, default="zh", choices=["zh", "en"],
                        help="The target language of prompt extend.")
    parser.add_argument("--base_seed", type=int, default=-1, help="The seed to use for generating the video.")
    parser.add_argument("--image", type=str, default=None, help="The image to generate the video from.")
    parser.add_argument("--sample_solver", type=str, default='unipc', choices=['unipc', 'dpm++'], help="The solver used to sample.")
    parser.add_argument("--sample_steps", type=int, default=None, help="The sampling steps.")
    parser.add_argument("--sample_shift", type=float, default=None, help="Sampling shift factor for flow matching schedulers.")
    parser.add_argument("--sample_guide_scale", type=float, default=None, help="Classifier free guidance scale.")
    parser.add_argument("--convert_model_dtype", action="store_true", default=False, help="Whether to convert model paramerters dtype.")
    # animate
    parser.add_argument("--src_root_path", type=str, default=None, help="The file of the process output path. Default None.")
    parser.add_argument("--refert_num", type=int, default=77, help="How many frames used for temporal guidance.")
    parser.add_argument("--replace_flag", action="store_true", default=False, help="Whether to use replace.")
    parser.add_argument("--use_relighting_lora", action="store_true", default=False, help="Whether to use relighting lora.")
    # s2v
    parser.add_argument("--num_clip", type=int, default=None, help="Number of video clips to generate.")
    parser.add_argument("--audio", type=str, default=None, help="Path to the audio file, e.g. wav, mp3")
    parser.add_argument("--enable_tts", action="store_true", default=False, help="Use CosyVoice to synthesis audio")
    parser.add_argument("--tts_prompt_audio", type=str, default=None, help="Path to the tts prompt audio file.")
    parser.add_argument("--tts_prompt_text", type=str, default=None, help="Content to the tts prompt audio.")
    parser.add_argument("--tts_text", type=str, default=None, help="Text wish to synthesize")
    parser.add_argument("--pose_video", type=str, default=None, help="Provide Dw-pose sequence to do Pose Driven")
    parser.add_argument("--start_from_ref", action="store_true", default=False,
                        help="whether set the reference image as the starting point for generation")
    parser.add_argument("--infer_frames", type=int, default=80, help="Number of frames per clip (must be multiple of 4)")
    args = parser.parse_args()
    _validate_args(args)
    return args


def _init_logging(rank):
    if rank == 0:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s",
                            handlers=[logging.StreamHandler(stream=sys.stdout)])
    else:
        logging.basicConfig(level=logging.ERROR)


def _fmt(seconds):
    seconds = int(seconds)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _tqdm(total, step_s, hang_at=None, fail_at=None):
    """Draw tqdm's default bar on stderr ('\\r'-separated redraws) while 'denoising'."""
    start = time.time()
    for n in range(total + 1):
        elapsed = time.time() - start
        if n == 0:
            line = f"  0%|          | 0/{total} [00:00<?, ?it/s]"
        else:
            rate = elapsed / n if n else 0
            pct = int(100 * n / total)
            bar = ("█" * (10 * n // total)).ljust(10)
            line = f"{pct:3d}%|{bar}| {n}/{total} [{_fmt(elapsed)}<{_fmt(rate * (total - n))}, {rate:5.2f}s/it]"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()
        if n == total:
            break
        if hang_at is not None and n == hang_at:
            while True:
                time.sleep(3600)
        if fail_at is not None and n == fail_at:
            sys.stderr.write("\n")
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.60 GiB (stand-in failure on request)")
        time.sleep(step_s)
    sys.stderr.write("\n")
    sys.stderr.flush()


def _record(args):
    path = os.environ.get("WAN22_STANDIN_LOG", "/tmp/wan22-standin-calls.jsonl")
    entry = {
        "argv": sys.argv[1:], "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(),
        **{k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES",
                                          "CUDA_DEVICE_ORDER", "WAN22_ATTENTION", "MASTER_PORT")},
    }
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _wav_seconds(path):
    import wave

    try:
        with wave.open(path) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return None


def _tts(args):
    """WanS2V.tts: CosyVoice2 loaded from CosyVoice2-0.5B in the working folder (upstream downloads
    it there when absent; the stand-in has no network and raises), speech written to tts.wav.
    The stand-in's speech is the prompt recording itself; its "clone" of CosyVoice's code (upstream:
    git clone into ./CosyVoice when absent) is a folder holding a marker file."""
    if not os.path.exists("CosyVoice"):
        os.makedirs("CosyVoice/cosyvoice")
        with open("CosyVoice/cloned-by-pid", "w") as f:
            f.write(str(os.getpid()))
    os.listdir("CosyVoice2-0.5B")
    shutil.copyfile(args.tts_prompt_audio, "tts.wav")
    return "tts.wav"


def _mp4_frames(path):
    """The first stsz box's sample count (the stand-in's pose videos have one track)."""
    with open(path, "rb") as f:
        data = f.read()
    at = data.find(b"stsz")
    return int.from_bytes(data[at + 12:at + 16], "big") if at >= 0 else 1


def _clips(args):
    """How many clips upstream's loops run (speech2video.py / animate.py), the inputs opened where they are."""
    if args.task == "s2v-14B":
        if args.enable_tts:
            args.audio = _tts(args)
        with open(args.image, "rb"), open(args.audio, "rb"):  # PIL and librosa raise FileNotFoundError alike
            pass
        if args.pose_video is not None:
            open(args.pose_video, "rb").close()
        seconds = _wav_seconds(args.audio) or 0
        clips = int(int(seconds * 30) / (args.infer_frames * 30 / 16)) + 1  # AudioEncoder.get_audio_embed_bucket_fps
        return clips if args.num_clip is None or args.num_clip > clips else args.num_clip
    if args.task == "animate-14B":
        assert args.refert_num == 1 or args.refert_num == 5, "refert_num should be 1 or 5."
        names = ["src_pose.mp4", "src_face.mp4", "src_ref.png"] + (["src_bg.mp4", "src_mask.mp4"] if args.replace_flag else [])
        for name in names:
            open(os.path.join(args.src_root_path, name), "rb").close()
        frames, step = _mp4_frames(os.path.join(args.src_root_path, "src_pose.mp4")), args.frame_num - args.refert_num
        rest = (frames - args.refert_num) % step
        target, start, clips = frames + (step - rest if rest else 0), 0, 0
        while start + args.refert_num < target:  # WanAnimate.generate's window loop
            clips, start = clips + 1, start + step
        return clips
    return 1


def _fixture():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("WAN22_STANDIN_MP4") or next(
        p for p in ("/opt/standins/tiny.mp4", os.path.join(here, "tiny.mp4")) if os.path.exists(p))


def generate(args):
    rank = int(os.getenv("RANK", 0))
    world_size = int(os.getenv("WORLD_SIZE", 1))
    _init_logging(rank)
    _record(args)
    if args.offload_model is None:
        args.offload_model = False if world_size > 1 else True
        logging.info(f"offload_model is not specified, set to {args.offload_model}.")
    if world_size == 1:
        assert not (args.t5_fsdp or args.dit_fsdp), f"t5_fsdp and dit_fsdp are not supported in non-distributed environments."
        assert not (args.ulysses_size > 1), f"sequence parallel are not supported in non-distributed environments."
    if args.ulysses_size > 1:
        assert args.ulysses_size == world_size, f"The number of ulysses_size should be equal to the world size."
    cfg = WAN_CONFIGS[args.task]
    if args.ulysses_size > 1:
        assert cfg.num_heads % args.ulysses_size == 0, f"`{cfg.num_heads=}` cannot be divided evenly by `{args.ulysses_size=}`."
    logging.info(f"Generation job args: {args}")
    logging.info(f"Generation model config: {dict(cfg)}")
    logging.info(f"Input prompt: {args.prompt}")
    if args.image is not None:
        with open(args.image, "rb"):  # PIL's Image.open raises FileNotFoundError the same way
            pass
        logging.info(f"Input image: {args.image}")
    logging.info(f"Creating {PIPELINE[args.task]} pipeline.")
    if not os.path.isdir(args.ckpt_dir):
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{os.path.join(args.ckpt_dir, 'models_t5_umt5-xxl-enc-bf16.pth')}'")
    time.sleep(float(os.environ.get("WAN22_STANDIN_LOAD_S", "0.05")))
    logging.info(f"Creating WanModel from {args.ckpt_dir}")
    logging.info("Generating video ...")
    clips = _clips(args)
    time.sleep(0.2)  # "text encoding": long enough that stdout and stderr arrive in order
    prompt = args.prompt
    step_s = 0.25 if "@@slow" in prompt else float(os.environ.get("WAN22_STANDIN_STEP_S", "0.005"))
    for clip in range(clips):
        _tqdm(args.sample_steps, step_s,
              hang_at=2 if "@@hang" in prompt and clip == clips - 1 else None,
              fail_at=args.sample_steps // 2 if "@@fail" in prompt and clip == clips - 1 else None)
        time.sleep(0.1)  # "VAE decode"
    if rank == 0:
        if args.save_file is None:
            formatted_time = datetime.now().strftime("%Y%m%d_%H%M%S")
            formatted_prompt = args.prompt.replace(" ", "_").replace("/", "_")[:50]
            args.save_file = f"{args.task}_{args.size}_{args.ulysses_size}_{formatted_prompt}_{formatted_time}" + '.mp4'
        logging.info(f"Saving generated video to {args.save_file}")
        if "@@nosave" in prompt:
            logging.info("save_video failed, error: Could not find a backend to open `%s`` with iomode `wI`." % args.save_file)
        elif "@@badsave" in prompt:
            with open(_fixture(), "rb") as f:  # a write cut short: the first half of a real MP4
                data = f.read()
            with open(args.save_file, "wb") as f:
                f.write(data[:len(data) // 2])
        else:
            shutil.copyfile(_fixture(), args.save_file)
        if "s2v" in args.task:  # upstream's merge_video_audio: ffmpeg muxes the speech in, in place
            logging.info("Start merging video and audio...")
            if "@@nomerge" in prompt:  # what it logs (and swallows) where ffmpeg is missing
                logging.error("merge_video_audio failed with error: [Errno 2] No such file or directory: 'ffmpeg'")
            else:
                logging.info(f"Merge completed, saved to {args.save_file}")
    logging.info("Finished.")


if __name__ == "__main__":
    args = _parse_args()
    generate(args)
