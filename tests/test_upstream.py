"""The kit against Wan2.2 at the pinned commit, through the facts file (tests/facts/wan22.json).

The facts are extracted from upstream's own source by tests/wan22_facts.py (its docstring says
how), so these checks run everywhere without the network or upstream's code: the stand-in
generate.py takes exactly upstream's flags, the catalog and the stand-ins hold upstream's task
defaults, and every argv the planner writes parses with upstream's argument parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.wan22_facts import load
from wan22ctl import catalog
from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory
from wan22ctl.settings import DEFAULTS

FACTS = load()
REEXTRACT = "re-extract with tests/wan22_facts.py (see its docstring)"


def _standin_generate():
    spec = importlib.util.spec_from_file_location("standin_generate", REPO / "tests" / "standins" / "wan2.2" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Parser(Exception):
    def __init__(self, parser):
        self.parser = parser


def _actions_of(module) -> list[dict]:
    """The stand-in's real ArgumentParser (caught at parse_args), described as the facts are."""
    def catch(parser, *args, **kwargs):
        raise _Parser(parser)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        module._parse_args()
    except _Parser as caught:
        parser = caught.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    kinds = {argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
             argparse._StoreFalseAction: "store_false", argparse._StoreConstAction: "store_const",
             argparse._AppendAction: "append", argparse._CountAction: "count"}
    return [{
        "flags": list(a.option_strings), "dest": a.dest, "action": kinds[type(a)],
        "type": a.type.__name__ if a.type else None, "default": a.default,
        "choices": list(a.choices) if a.choices is not None else None, "required": a.required,
        "nargs": a.nargs if isinstance(a, argparse._StoreAction) else None,  # store_true's 0 is implied
    } for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def test_facts_are_from_the_pinned_commit():
    assert FACTS["source"]["commit"] == DEFAULTS["WAN22_REF"], REEXTRACT
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^ARG WAN22_REF={FACTS['source']['commit']}$", dockerfile, re.M), REEXTRACT


def test_standin_generate_takes_exactly_upstreams_flags():
    """Every add_argument of upstream's generate.py (flags, action, type, default, choices), in order."""
    assert _actions_of(_standin_generate()) == FACTS["generate_arguments"]


def test_standin_generate_holds_upstreams_config_tables():
    standin = _standin_generate()
    assert {k: list(v) for k, v in standin.SIZE_CONFIGS.items()} == FACTS["size_configs"]
    assert {k: list(v) for k, v in standin.SUPPORTED_SIZES.items()} == FACTS["supported_sizes"]
    for task, upstream in FACTS["task_configs"].items():
        cfg = standin.WAN_CONFIGS[task]
        for key in ("num_heads", "sample_steps", "sample_shift", "sample_guide_scale", "frame_num", "sample_fps"):
            value = list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key]
            assert value == upstream[key], (task, key)


def _guide(value) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


@pytest.mark.parametrize("task", list(catalog.TASKS))
def test_catalog_task_facts_are_upstreams(task):
    t, upstream = catalog.TASKS[task], FACTS["task_configs"][task]
    assert t.num_heads == upstream["num_heads"]
    assert t.sizes == tuple(FACTS["supported_sizes"][task])
    args = {a["dest"]: a for a in FACTS["generate_arguments"]}
    # s2v counts frames a clip with --infer_frames (its config's frame_num is never read)
    frames = args["infer_frames"]["default"] if t.frame_flag == "--infer_frames" else upstream["frame_num"]
    assert t.frame_flag.lstrip("-") in args
    assert (t.frame_num, t.sample_steps, t.sample_shift, t.fps) == \
        (frames, upstream["sample_steps"], upstream["sample_shift"], upstream["sample_fps"])
    assert t.guide_scale == _guide(upstream["sample_guide_scale"])
    assert t.boundary == upstream.get("boundary")
    model = catalog.model_for_task(task)
    assert {upstream["t5_checkpoint"], upstream["vae_checkpoint"], upstream["t5_tokenizer"] + "/"} <= set(model.required)


def test_catalog_shared_facts_are_upstreams():
    args = {a["dest"]: a for a in FACTS["generate_arguments"]}
    assert set(catalog.TASKS) == set(args["task"]["choices"])  # every upstream task is a kit task
    assert catalog.S2V_NEG_PROMPT == FACTS["task_configs"]["s2v-14B"]["sample_neg_prompt"]
    assert catalog.ANIMATE_PROMPT == FACTS["task_configs"]["animate-14B"]["prompt"]
    animate = catalog.model_for_task("animate-14B")
    config = FACTS["task_configs"]["animate-14B"]
    assert {config["clip_checkpoint"], config["clip_tokenizer"] + "/", config["lora_checkpoint"]} <= set(animate.required)
    assert FACTS["task_configs"]["s2v-14B"]["wav2vec"] + "/" in catalog.model_for_task("s2v-14B").required
    assert args["refert_num"]["default"] not in catalog.ANIMATE_REFERT_NUMS  # why the kit always passes one
    assert catalog.UPSTREAM_SOLVERS == tuple(args["sample_solver"]["choices"])
    assert catalog.SAMPLE_NEG_PROMPT == FACTS["task_configs"]["t2v-A14B"]["sample_neg_prompt"]


def _upstream_parser() -> argparse.ArgumentParser:
    """generate.py's parser rebuilt from the facts (str2bool as upstream's wan.utils.utils defines it)."""
    def str2bool(v):
        if v.lower() in ("yes", "true", "t", "y", "1"):
            return True
        if v.lower() in ("no", "false", "f", "n", "0"):
            return False
        raise argparse.ArgumentTypeError("Boolean value expected (True/False)")

    types = {"str": str, "int": int, "float": float, "str2bool": str2bool, None: None}
    parser = argparse.ArgumentParser(exit_on_error=False)
    for a in FACTS["generate_arguments"]:
        kw = {"action": a["action"], "default": a["default"]}
        if a["action"] == "store":
            kw.update(type=types[a["type"]], choices=a["choices"])
        parser.add_argument(*a["flags"], **kw)
    return parser


S2V = {"image": "/host/face.png", "audio": "/host/talk.wav"}


@pytest.mark.parametrize("task, count, mem, extra", [
    ("t2v-A14B", 1, 80, {}), ("t2v-A14B", 8, 80, {}), ("i2v-A14B", 1, 24, {"image": "/host/cat.jpg"}),
    ("ti2v-5B", 1, 141, {"guide_scale": 4.0}), ("ti2v-5B", 3, 24, {"offload": "on"}),
    ("s2v-14B", 1, 80, {**S2V, "pose_video": "/host/pose.mp4", "num_clip": 2, "start_from_ref": True}),
    ("s2v-14B", 8, 80, {**S2V, "frame_num": 48}),
    ("s2v-14B", 1, 141, {"image": "/host/face.png", "tts_text": "hello there", "tts_prompt_audio": "/host/voice.wav",
                         "tts_prompt_text": "what the voice says"}),
    ("animate-14B", 1, 141, {"src_root": "/host/process_results"}),
    ("animate-14B", 4, 80, {"src_root": "/host/process_results", "refert_num": 5, "replace": True,
                            "relighting_lora": True}),
])
def test_every_planned_argv_parses_with_upstreams_parser(task, count, mem, extra):
    prompt = None if task == "animate-14B" else "a red fox"
    request = build_request(task, prompt, seed=3, file_exists=lambda p: True, probe_inputs=False, **extra)
    plan = plan_launch(request, synthetic_inventory(count, mem), None, run_id="r1")
    entry = list(plan.argv).index("wan22ctl.agent.wanrun") + 1
    args = _upstream_parser().parse_args(list(plan.argv[entry:]))
    frames = args.infer_frames if task == "s2v-14B" else args.frame_num
    assert (args.task, args.size, frames, args.sample_steps) == \
        (task, request.size, request.frame_num, request.sample_steps)
    assert args.offload_model is plan.offload_model and args.ulysses_size == (plan.nproc if plan.nproc > 1 else 1)
    if task == "s2v-14B":  # upstream reads these, or falls back to its examples/ files
        assert args.audio == plan.inputs.get("audio") and args.image == plan.image
        assert (args.pose_video, args.num_clip, args.start_from_ref) == \
            (plan.inputs.get("pose_video"), request.num_clip, request.start_from_ref)
        assert (args.enable_tts, args.tts_prompt_audio, args.tts_text, args.tts_prompt_text) == \
            (request.tts_text is not None, plan.inputs.get("tts_prompt_audio"), request.tts_text, request.tts_prompt_text)
    if task == "animate-14B":
        assert args.src_root_path == plan.inputs["src_root"] and args.prompt is None
        assert (args.refert_num, args.replace_flag, args.use_relighting_lora) == \
            (request.refert_num, request.replace, request.relighting_lora)


def test_preset_and_lora_argv_parses_with_upstreams_parser_after_the_bootstrap():
    """The kit's own flags (--lora*, --sample_solver euler) are taken out by wanrun; the rest is upstream's."""
    from wan22ctl.agent.wanrun import split_kit_flags

    lora = {"file": "loras/style_low.safetensors", "scale": 0.5, "expert": "low", "catalog": None}
    request = build_request("t2v-A14B", "a red fox", seed=3, preset="lightning", loras=(lora,))
    plan = plan_launch(request, synthetic_inventory(1, 141), None, run_id="r1")
    entry = list(plan.argv).index("wan22ctl.agent.wanrun") + 1
    rest, specs, euler = split_kit_flags(list(plan.argv[entry:]))
    args = _upstream_parser().parse_args(rest)
    assert euler and (args.sample_solver, args.sample_steps, args.sample_shift, args.sample_guide_scale) == \
        ("unipc", 4, 5.0, 1.0)
    assert [(s.expert, s.scale, s.path.rsplit("/", 1)[-1]) for s in specs] == [
        (None, 1.0, "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"), ("low", 0.5, "style_low.safetensors")]


def test_extractor_reads_argparse_and_configs_without_importing_them(tmp_path):
    """tests/wan22_facts.py on a miniature upstream tree (a git checkout whose imports would fail)."""
    wan = tmp_path / "Wan2.2"
    (wan / "wan" / "configs").mkdir(parents=True)
    (wan / "generate.py").write_text(
        "import torch\nfrom wan.configs import SIZE_CONFIGS, WAN_CONFIGS\n"
        "def _parse_args():\n    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--task', type=str, default='t2v-A14B', choices=list(WAN_CONFIGS.keys()), help='x')\n"
        "    parser.add_argument('--size', type=str, default='1280*720', choices=list(SIZE_CONFIGS.keys()))\n"
        "    parser.add_argument('--offload_model', type=str2bool, default=None)\n"
        "    parser.add_argument('--t5_cpu', action='store_true', default=False)\n")
    (wan / "wan" / "configs" / "__init__.py").write_text(
        "from .wan_t2v_A14B import t2v_A14B\nWAN_CONFIGS = {'t2v-A14B': t2v_A14B}\n"
        "SIZE_CONFIGS = {'1280*720': (1280, 720)}\nSUPPORTED_SIZES = {'t2v-A14B': ('1280*720',)}\n")
    (wan / "wan" / "configs" / "shared_config.py").write_text(
        "import torch\nwan_shared_cfg = EasyDict()\nwan_shared_cfg.t5_dtype = torch.bfloat16\n"
        "wan_shared_cfg.frame_num = 81\n")
    (wan / "wan" / "configs" / "wan_t2v_A14B.py").write_text(
        "t2v_A14B = EasyDict(__name__='Config')\nt2v_A14B.update(wan_shared_cfg)\n"
        "t2v_A14B.sample_shift = 12.0\nt2v_A14B.sample_guide_scale = (3.0, 4.0)\n")
    (wan / "requirements.txt").write_bytes(b"torch>=2.4.0\nflash_attn\nnumpy>=1.23.5,<2")  # no final newline, as upstream's
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(wan)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "mini"], check=True)
    out = tmp_path / "facts.json"
    r = subprocess.run([sys.executable, str(REPO / "tests" / "wan22_facts.py"), str(wan), "--output", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    facts = json.loads(out.read_text())
    assert [(a["dest"], a["action"], a["type"], a["default"], a["choices"]) for a in facts["generate_arguments"]] == [
        ("task", "store", "str", "t2v-A14B", ["t2v-A14B"]), ("size", "store", "str", "1280*720", ["1280*720"]),
        ("offload_model", "store", "str2bool", None, None), ("t5_cpu", "store_true", None, False, None)]
    assert facts["task_configs"] == {"t2v-A14B": {"frame_num": 81, "sample_shift": 12.0, "sample_guide_scale": [3.0, 4.0]}}
    assert facts["supported_sizes"] == {"t2v-A14B": ["1280*720"]} and len(facts["source"]["commit"]) == 40
    assert facts["requirements_txt"] == "torch>=2.4.0\nflash_attn\nnumpy>=1.23.5,<2"
    (wan / "generate.py").write_text("changed\n")
    r = subprocess.run([sys.executable, str(REPO / "tests" / "wan22_facts.py"), str(wan), "--output", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "local changes" in r.stderr


def test_the_standin_trees_requirements_are_upstreams():
    """CI's image build installs the stand-in tree's requirements.txt: it must be upstream's, byte for
    byte (the same packages and pins, and the same build cache key as a build from upstream's tree)."""
    ours = (REPO / "tests" / "standins" / "wan2.2" / "requirements.txt").read_text(encoding="utf-8")
    assert ours == FACTS["requirements_txt"], REEXTRACT

