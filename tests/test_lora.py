"""wan22ctl.agent.lora, the Euler sampler and the guide-1.0 skip, on the CPU.

LoRA files are real .safetensors written by the `safetensors` library in every format the kit
reads (Wan-native/lightx2v with alpha and full differences, ComfyUI/kohya, diffusers/PEFT); they are
mapped onto a stand-in module tree with Wan's parameter names and shapes (written out here by hand
from upstream's `wan/modules/model.py`, not from the kit's own table) and merged through the same
`from_pretrained` hook that Wan's process uses. The merge is compared with a float64 reference
computation of W + scale·(alpha/rank)·B·A. The bootstrap (`wanrun`) runs as the launcher runs it
against a stand-in generate.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from wan22ctl import loras  # noqa: E402
from wan22ctl.agent import euler, lora, speedups  # noqa: E402
from wan22ctl.loras import LoraError, LoraSpec  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MP4 = os.path.join(REPO, "tests", "standins", "tiny.mp4")
CONFIG = {"dim": 32, "ffn_dim": 48, "num_layers": 2, "in_dim": 4, "out_dim": 4, "freq_dim": 8, "text_dim": 16,
          "num_heads": 2, "model_type": "t2v"}
nn = torch.nn


class _Attn(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = nn.Module(), nn.Module()
        self.norm_q.weight = nn.Parameter(torch.ones(dim))
        self.norm_k.weight = nn.Parameter(torch.ones(dim))


class _Block(nn.Module):
    def __init__(self, dim, ffn):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.self_attn = _Attn(dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=True)
        self.cross_attn = _Attn(dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)


class _Head(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.head = nn.Linear(dim, out * 4)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)


class StandInWanModel(nn.Module):
    """WanModel's parameter tree (names and shapes as upstream builds them), random weights."""

    def __init__(self, dim=32, ffn_dim=48, num_layers=2, in_dim=4, out_dim=4, freq_dim=8, text_dim=16, **_):
        super().__init__()
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList([_Block(dim, ffn_dim) for _ in range(num_layers)])
        self.head = _Head(dim, out_dim)

    @classmethod
    def from_pretrained(cls, path, subfolder=None, **kwargs):
        """As diffusers' ModelMixin: the config from <path>/<subfolder>/config.json, weights from a seed."""
        with open(os.path.join(path, subfolder or "", "config.json")) as f:
            config = json.load(f)
        torch.manual_seed(config.get("seed", 0))
        return cls(**config)


def test_parameter_table_is_wans():
    model = StandInWanModel(**CONFIG)
    assert loras.wan_parameters(CONFIG) == {n: tuple(p.shape) for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- files in each format

RANK = 4


def _pair(out_features, in_shape, gen):
    down = torch.randn(RANK, *in_shape, generator=gen)
    up = torch.randn(out_features, RANK, *([1] * (len(in_shape) - 1)), generator=gen)
    return down, up


def lora_tensors(params: dict, fmt: str, seed=1, alpha=8.0):
    """{key: tensor} in format `fmt` for every Linear/Conv weight, plus diffs where the format has them,
    and the reference updates {param: delta at scale 1}."""
    gen = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for name, shape in params.items():
        if not name.endswith(".weight") or len(shape) < 2:
            continue
        module = name[: -len(".weight")]
        down, up = _pair(shape[0], shape[1:], gen)
        a = alpha if fmt in ("wan", "kohya") else RANK
        deltas[name] = (a / RANK) * (up.flatten(1).double() @ down.flatten(1).double()).reshape(shape)
        if fmt == "wan":
            base = f"diffusion_model.{module}"
            tensors[f"{base}.lora_down.weight"], tensors[f"{base}.lora_up.weight"] = down, up
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
        elif fmt == "kohya":
            base = "lora_unet_" + module.replace(".", "_")
            tensors[f"{base}.lora_down.weight"], tensors[f"{base}.lora_up.weight"] = down, up
            tensors[f"{base}.alpha"] = torch.tensor(alpha)
        elif fmt == "diffusers":
            base = "transformer." + _to_diffusers(module)
            tensors[f"{base}.lora_A.weight"], tensors[f"{base}.lora_B.weight"] = down, up
    if fmt == "wan":  # lightx2v's full differences: a norm weight, a bias, a block's modulation
        for name, key in (("blocks.1.norm3.weight", "diffusion_model.blocks.1.norm3.diff"),
                          ("blocks.0.ffn.0.bias", "diffusion_model.blocks.0.ffn.0.diff_b"),
                          ("blocks.0.modulation", "diffusion_model.blocks.0.diff_m")):
            diff = torch.randn(params[name], generator=gen)
            tensors[key], deltas[name] = diff, diff.double()
    return tensors, deltas


def _to_diffusers(module: str) -> str:
    for old, new in loras.DIFFUSERS_TOP:
        if module == new:
            return old
    head, _, tail = module.partition(".")
    idx, _, rest = tail.partition(".")
    for old, new in loras.DIFFUSERS_BLOCK:
        if rest == new:
            return f"blocks.{idx}.{old}"
    if module == "patch_embedding":
        return module
    raise AssertionError(module)


def write(path, tensors):
    safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


@pytest.mark.parametrize("fmt,label", [("wan", "wan"), ("kohya", "kohya"), ("diffusers", "diffusers")])
def test_every_key_of_each_format_maps_to_a_parameter(tmp_path, fmt, label):
    params = loras.wan_parameters(CONFIG)
    tensors, deltas = lora_tensors(params, fmt)
    lf = loras.check(write(tmp_path / "l.safetensors", tensors), params)
    assert set(lf.format.split("+")) == ({label, "wan"} if fmt == "diffusers" else {label})  # patch_embedding keeps its name
    assert lf.keys == len(tensors)
    assert {t.target for t in lf.terms} == set(deltas)
    assert sum(len(t.keys) for t in lf.terms) == len(tensors)  # every key is used by one term


@pytest.mark.parametrize("fmt", ["wan", "kohya", "diffusers"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_equals_reference(tmp_path, fmt, dtype):
    params = loras.wan_parameters(CONFIG)
    tensors, deltas = lora_tensors(params, fmt)
    path = write(tmp_path / "l.safetensors", tensors)
    model = StandInWanModel(**CONFIG).to(dtype)
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    scale = 0.7
    spec = LoraSpec(path, scale)
    records = lora.merge(model, [(spec, loras.check(path, params))])
    for name, p in model.named_parameters():
        assert p.dtype == dtype
        if name not in deltas:
            assert torch.equal(p.detach().double(), before[name])
            continue
        expected = before[name] + scale * deltas[name]
        # float32 merge vs float64 reference; bf16: one rounding of the float32 sum
        tol = 1e-5 if dtype == torch.float32 else 2 ** -8
        err = (p.detach().double() - expected).abs().max() / expected.abs().max()
        assert err <= tol, (name, err)
    (r,) = records
    assert r["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert (r["file"], r["scale"], r["keys"], r["merged"]) == (path, scale, len(tensors), len(deltas))


def test_two_loras_on_one_parameter_sum_in_float32_and_leave_loaded_tensors_alone(tmp_path):
    params = loras.wan_parameters(CONFIG)
    t1, d1 = lora_tensors(params, "wan", seed=1)
    t2, d2 = lora_tensors(params, "kohya", seed=2)
    p1, p2 = write(tmp_path / "a.safetensors", t1), write(tmp_path / "b.safetensors", t2)
    model = StandInWanModel(**CONFIG)
    q = model.blocks[0].self_attn.q.weight
    original_storage, original = q.data, q.detach().clone()
    lora.merge(model, [(LoraSpec(p1, 1.0), loras.check(p1, params)), (LoraSpec(p2, -0.5), loras.check(p2, params))])
    name = "blocks.0.self_attn.q.weight"
    expected = original.double() + d1[name] - 0.5 * d2[name]
    assert torch.allclose(model.blocks[0].self_attn.q.weight.double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(original_storage, original)  # a new tensor was written, the loaded one untouched


def test_unknown_keys_are_refused_naming_them(tmp_path):
    params = loras.wan_parameters(CONFIG)
    tensors, _ = lora_tensors(params, "wan")
    tensors["diffusion_model.blocks.0.self_attn.q.lora_mid.weight"] = torch.zeros(2, 2)
    tensors["diffusion_model.blocks.7.self_attn.q.lora_down.weight"] = torch.zeros(RANK, 32)  # no block 7
    tensors["img_emb.proj.1.lora_up.weight"] = torch.zeros(32, RANK)
    path = write(tmp_path / "l.safetensors", tensors)
    with pytest.raises(LoraError) as err:
        loras.check(path, params)
    msg = str(err.value)
    assert "3 of" in msg and "diffusion_model.blocks.0.self_attn.q.lora_mid.weight" in msg
    assert "diffusion_model.blocks.7.self_attn.q.lora_down.weight" in msg and "\n" not in msg


def test_shape_mismatch_and_missing_partner_are_refused(tmp_path):
    params = loras.wan_parameters(CONFIG)
    bad_shape = write(tmp_path / "a.safetensors", {
        "diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(RANK, 48),  # ffn.0 takes dim=32
        "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(48, RANK)})
    with pytest.raises(LoraError, match="do not fit this model"):
        loras.check(bad_shape, params)
    lonely = write(tmp_path / "b.safetensors", {"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(RANK, 32)})
    with pytest.raises(LoraError, match="no lora_up/lora_B partner"):
        loras.check(lonely, params)
    not_st = tmp_path / "c.safetensors"
    not_st.write_bytes(b"PK\x03\x04 a zip, not safetensors" * 10)
    with pytest.raises(LoraError, match="not a safetensors file"):
        loras.check(str(not_st), params)


def test_spec_parsing():
    assert LoraSpec.parse("/x/a.safetensors:0.8") == LoraSpec("/x/a.safetensors", 0.8)
    assert LoraSpec.parse("/x/a.safetensors") == LoraSpec("/x/a.safetensors", 1.0)
    assert LoraSpec.parse("C:/odd:name.safetensors").path == "C:/odd:name.safetensors"
    with pytest.raises(LoraError):
        LoraSpec.parse(":0.5")


# --------------------------------------------------------------------------- routing per expert


def checkpoint(tmp_path, moe: bool):
    ckpt = tmp_path / "ckpt"
    subs = {"high_noise_model": 1, "low_noise_model": 2} if moe else {"": 3}
    for sub, seed in subs.items():
        (ckpt / sub).mkdir(parents=True, exist_ok=True)
        (ckpt / sub / "config.json").write_text(json.dumps({**CONFIG, "seed": seed}))
    return str(ckpt)


def lightning_folder(tmp_path):
    params = loras.wan_parameters(CONFIG)
    folder = tmp_path / "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"
    folder.mkdir()
    high, dh = lora_tensors(params, "wan", seed=11)
    low, dl = lora_tensors(params, "wan", seed=12)
    write(folder / "high_noise_model.safetensors", high)
    write(folder / "low_noise_model.safetensors", low)
    return str(folder), dh, dl


def test_routing_on_a14b(tmp_path):
    folder, _, _ = lightning_folder(tmp_path)
    high = os.path.join(folder, "high_noise_model.safetensors")
    routed = loras.route([LoraSpec(folder, 0.9)], moe=True)
    assert [(os.path.basename(s.path), s.expert, s.scale) for s in routed] == [
        ("high_noise_model.safetensors", "high", 0.9), ("low_noise_model.safetensors", "low", 0.9)]
    with pytest.raises(LoraError, match="use --lora-high .* or --lora-low"):
        loras.route([LoraSpec(high)], moe=True)
    assert loras.route([LoraSpec(high, expert="low")], moe=True)[0].expert == "low"
    with pytest.raises(LoraError, match="--lora-high is for the A14B tasks"):
        loras.route([LoraSpec(high, expert="high")], moe=False)
    with pytest.raises(LoraError, match="is a folder"):
        loras.route([LoraSpec(folder)], moe=False)


@pytest.mark.parametrize("env", [{"WAN22_FAST_SWAP": "0"}, {"WAN22_OFFLOAD": "blocks"}, {"WAN22_DTYPE": "fp8"}])
def test_each_expert_gets_its_own_lora_at_load(tmp_path, monkeypatch, env):
    """The hook on from_pretrained merges the high-noise file into the high-noise expert only (at
    once where speedups does not place the experts later, or where FP8 weights or block streaming
    rebuild the block linears after the load)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ckpt = checkpoint(tmp_path, moe=True)
    folder, dh, dl = lightning_folder(tmp_path)
    module = types.ModuleType("wan.modules.model")
    module.WanModel = type("WanModel", (StandInWanModel,), {})
    lora.install(loras.prepare([LoraSpec(folder, 1.0)], ckpt, moe=True))
    lora.patch_model_module(module)
    try:
        name = "blocks.1.ffn.2.weight"
        for sub, delta in (("high_noise_model", dh), ("low_noise_model", dl)):
            plain = StandInWanModel.from_pretrained(ckpt, subfolder=sub)
            merged = module.WanModel.from_pretrained(ckpt, subfolder=sub)
            got = dict(merged.named_parameters())[name].detach().double()
            want = dict(plain.named_parameters())[name].detach().double() + delta[name]
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), sub
        assert [r["expert"] for r in lora.records()] == ["high", "low"]
    finally:
        lora.install([])


# --------------------------------------------------------------------------- Euler (Lightning) sampler


def test_euler_schedule_is_lightnings():
    s = euler.FlowEulerScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False)
    s.set_timesteps(4, device="cpu", shift=5.0)
    assert s.timesteps.tolist() == pytest.approx([1000.0, 937.5, 833.3333, 625.0], rel=1e-6)
    x = torch.randn(2, 3)
    v = torch.randn(2, 3)
    out = x.clone()
    for i, t in enumerate(s.timesteps):
        out = s.step(v, t, out, return_dict=False)[0]
    # four Euler steps with a constant velocity walk from sigma 1 to 0
    assert torch.allclose(out, x - v, atol=1e-6)
    from wan22ctl import schedules

    assert schedules.timesteps("euler", 4, 5.0) == pytest.approx(s.timesteps.tolist(), rel=1e-6)
    assert schedules.expert_split("euler", 4, 5.0, 0.875) == (2, 2)
    assert schedules.expert_split("euler", 4, 5.0, 0.900) == (2, 2)
    assert schedules.expert_split("unipc", 40, 12.0, 0.875) == (26, 14)  # the 40-step run's 52 / 28 forwards


# --------------------------------------------------------------------------- guide 1.0: one forward per step


class CountingDiT(nn.Module):
    """Returns a list like WanModel; the output depends on the context, so cond and uncond differ."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.w = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, t, context, seq_len):
        self.calls += 1
        return [x[0] * self.w + context[0].mean() + t.float().mean() / 1000]


def make_pipeline_module(name="wan.text2video"):
    """A pipeline class whose generate() runs upstream's CFG loop (text2video.py at 42bf4cf)."""
    module = types.ModuleType(name)

    class WanT2V:
        boundary = 0.875

        def __init__(self):
            self.low_noise_model, self.high_noise_model = CountingDiT(), CountingDiT()

        def generate(self, input_prompt, sampling_steps=4, guide_scale=5.0, n_prompt=""):
            guide_scale = (guide_scale, guide_scale) if isinstance(guide_scale, float) else guide_scale
            latents = [torch.ones(2, 3)]
            context, context_null = [torch.full((4,), 2.0)], [torch.full((4,), -1.0)]
            boundary = self.boundary * 1000
            for t in torch.tensor([1000.0, 937.5, 833.3, 625.0])[:sampling_steps]:
                latent_model_input, timestep = latents, torch.stack([t])
                model = self.high_noise_model if t.item() >= boundary else self.low_noise_model
                g = guide_scale[1] if t.item() >= boundary else guide_scale[0]
                cond = model(latent_model_input, t=timestep, context=context, seq_len=6)[0]
                uncond = model(latent_model_input, t=timestep, context=context_null, seq_len=6)[0]
                latents = [latents[0] - 0.1 * (uncond + g * (cond - uncond))]
            return latents[0]

    module.WanT2V = WanT2V
    return module


@pytest.mark.parametrize("guide,forwards", [(1.0, (2, 2)), ((1.0, 3.5), (4, 2)), (3.5, (4, 4))])
def test_guide_one_skips_the_unconditional_forward_per_expert(monkeypatch, guide, forwards):
    monkeypatch.setenv("WAN22_SKIP_UNCOND", "1")
    module = make_pipeline_module()
    reference = module.WanT2V().generate("p", guide_scale=guide)
    speedups._skip_unconditional(CountingDiT)
    try:
        speedups._patch_guided_module(module)
        pipe = module.WanT2V()
        out = pipe.generate("p", guide_scale=guide)
        assert (pipe.high_noise_model.calls, pipe.low_noise_model.calls) == forwards
        assert torch.allclose(out, reference, rtol=1e-6, atol=1e-6)
        # outside a pipeline's generate() every call runs
        pipe.low_noise_model([torch.ones(1)], t=torch.tensor([1.0]), context=[torch.ones(1)], seq_len=1)
        pipe.low_noise_model([torch.ones(1)], t=torch.tensor([1.0]), context=[torch.ones(1)], seq_len=1)
        assert pipe.low_noise_model.calls == forwards[1] + 2
    finally:
        del CountingDiT.__call__, CountingDiT._wan22_skip


# --------------------------------------------------------------------------- the bootstrap


def standin_wan(tmp_path):
    """A Wan checkout whose generate.py builds both experts through wan.modules.model.WanModel and
    prints what it sees as JSON."""
    wan = tmp_path / "wan2.2"
    (wan / "wan" / "modules").mkdir(parents=True)
    (wan / "wan" / "__init__.py").write_text("")
    (wan / "wan" / "modules" / "__init__.py").write_text("")
    src = open(__file__).read()
    start, end = src.index("class _Attn"), src.index("def test_parameter_table_is_wans")
    (wan / "wan" / "modules" / "model.py").write_text(
        "import json, os\nimport torch\nnn = torch.nn\n" + src[start:end] + "\nWanModel = StandInWanModel\n")
    (wan / "wan" / "text2video.py").write_text(
        "import torch\n"
        "from .modules.model import WanModel\n\n\n"
        "class WanT2V:  # as upstream's constructor builds and places the experts (one process: init_on_cpu)\n"
        "    def __init__(self, ckpt_dir):\n"
        "        self.device, self.init_on_cpu, self.t5_cpu = torch.device('cpu'), True, True\n"
        "        self.low_noise_model = WanModel.from_pretrained(ckpt_dir, subfolder='low_noise_model')\n"
        "        self.high_noise_model = WanModel.from_pretrained(ckpt_dir, subfolder='high_noise_model')\n\n"
        "    def _prepare_model_for_timestep(self, t, boundary, offload_model):\n"
        "        return None\n\n"
        "    def generate(self, input_prompt, sample_solver='unipc', guide_scale=5.0):\n"
        "        return None\n")
    (wan / "generate.py").write_text(
        "import argparse, json, shutil, sys\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--task'); p.add_argument('--ckpt_dir'); p.add_argument('--sample_solver', choices=['unipc', 'dpm++'])\n"
        "p.add_argument('--save_file')\n"
        "a, _ = p.parse_known_args()\n"
        "from wan.text2video import WanT2V\n"
        "pipe = WanT2V(a.ckpt_dir)\n"
        "ms = {s: getattr(pipe, s) for s in ('high_noise_model', 'low_noise_model')}\n"
        "print(json.dumps({'solver': a.sample_solver, 'q': {s: m.blocks[0].self_attn.q.weight.sum().item() for s, m in ms.items()}}))\n"
        f"if a.save_file: shutil.copyfile({str(TINY_MP4)!r}, a.save_file); print('Finished.')\n")
    return wan


def run_wanrun(wan, *args):
    env = dict(os.environ, WAN22_DIR=str(wan), PYTHONPATH=REPO, WAN22_COMPILE="0")
    return subprocess.run([sys.executable, "-m", "wan22ctl.agent.wanrun", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_wanrun_merges_lightning_folder_and_runs_euler(tmp_path):
    wan = standin_wan(tmp_path)
    ckpt = checkpoint(tmp_path, moe=True)
    folder, dh, dl = lightning_folder(tmp_path)
    plain = run_wanrun(wan, "--task", "t2v-A14B", "--ckpt_dir", ckpt, "--sample_solver", "unipc")
    merged = run_wanrun(wan, "--task", "t2v-A14B", "--ckpt_dir", ckpt, "--sample_solver", "euler", "--lora", folder)
    assert plain.returncode == 0 and merged.returncode == 0, merged.stderr
    before = json.loads(plain.stdout.strip().splitlines()[-1])
    events = [json.loads(line.split(" ", 1)[1]) for line in merged.stdout.splitlines() if line.startswith("@@wan22ctl")]
    after = json.loads([line for line in merged.stdout.splitlines() if line.startswith("{")][-1])
    assert after["solver"] == "unipc"  # generate.py's parser never sees "euler"
    name = "blocks.0.self_attn.q.weight"
    for sub, delta in (("high_noise_model", dh), ("low_noise_model", dl)):
        assert after["q"][sub] == pytest.approx(before["q"][sub] + delta[name].sum().item(), rel=1e-4, abs=1e-3)
    loras = [e for e in events if e["event"] == "lora"]
    assert [(e["expert"], os.path.basename(e["file"])) for e in loras] == [
        ("high", "high_noise_model.safetensors"), ("low", "low_noise_model.safetensors")]
    assert all(len(e["sha256"]) == 64 and e["keys"] == 3 * (e["parameters"] - 3) + 3 for e in loras)


def test_wanrun_refuses_bad_loras_before_loading(tmp_path):
    wan = standin_wan(tmp_path)
    ckpt = checkpoint(tmp_path, moe=True)
    folder, _, _ = lightning_folder(tmp_path)
    single = os.path.join(folder, "high_noise_model.safetensors")
    r = run_wanrun(wan, "--task", "t2v-A14B", "--ckpt_dir", ckpt, "--lora", single)
    assert r.returncode == 2 and "use --lora-high" in r.stderr and r.stdout.count("{") == 0
    bad = write(tmp_path / "bad.safetensors", {"unet.down_blocks.0.lora_down.weight": torch.zeros(2, 2)})
    r = run_wanrun(wan, "--task", "t2v-A14B", "--ckpt_dir", ckpt, "--lora_low", bad)
    assert r.returncode == 2 and "unet.down_blocks.0.lora_down.weight" in r.stderr
    r = run_wanrun(wan, "--task", "t2v-A14B", "--ckpt_dir", ckpt, "--lora-high", str(tmp_path / "missing.safetensors"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_sidecar_records_each_lora_file_sha256_and_scale(tmp_path):
    """A plan with the Lightning preset through the container-side launcher, as `generate` runs it."""
    from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory

    wan = standin_wan(tmp_path)
    root = tmp_path / "checkpoints"
    ckpt = root / "Wan2.2-T2V-A14B"
    for sub in ("high_noise_model", "low_noise_model"):
        (ckpt / sub).mkdir(parents=True)
        (ckpt / sub / "config.json").write_text(json.dumps(CONFIG))
    folder, _, _ = lightning_folder(tmp_path)
    target = root / "loras" / "lightning-t2v"
    target.mkdir(parents=True)
    os.rename(folder, target / os.path.basename(folder))
    request = build_request("t2v-A14B", "a fox", seed=3, preset="lightning")
    plan = plan_launch(request, synthetic_inventory(1, 141), None, run_id="lora1")
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    env = dict(os.environ, WAN22_DIR=str(wan), WAN22_OUTPUT_DIR=str(tmp_path / "out"), WAN22_CHECKPOINT_DIR=str(root),
               WAN22_PYTHON=sys.executable, PYTHONPATH=REPO, WAN22CTL_SRC=REPO, WAN22_COMPILE="0")
    proc = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "generate", "--plan", str(tmp_path / "plan.json")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (video,) = (tmp_path / "out").glob("*.mp4")
    side = json.loads(video.with_suffix(".json").read_text())
    assert side["preset"] == "lightning" and side["solver"] == "euler" and side["sample_steps"] == 4
    assert side["guide_scale"] == 1.0
    files = {r["expert"]: r for r in side["loras"]}
    for expert in ("high", "low"):
        path = files[expert]["file"]
        assert path.startswith(str(target)) and path.endswith(f"{expert}_noise_model.safetensors")
        assert files[expert]["sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert files[expert]["scale"] == 1.0 and files[expert]["format"] == "wan"
        assert files[expert]["parameters"] == files[expert]["merged"] > 0


# --------------------------------------------------------------------------- the CLI, before Docker


def run_cli(tmp_path, *args):
    from tests.conftest import clean_environ

    env = clean_environ() | {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
                             "OUTPUT_DIR": str(tmp_path / "out")}
    return subprocess.run([sys.executable, "-m", "wan22ctl", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_plan_prints_the_regime_and_names_the_download(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    r = run_cli(tmp_path, "plan", "--task", "t2v-A14B", "--gpu-count", "1", "--gpu-mem-gb", "141", "--preset", "lightning")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "regime: distilled (lightning): 4 steps = 4 DiT forwards: high-noise expert 2 step(s), low-noise 2" in out
    assert "--sample_solver euler" in out and "--sample_guide_scale 1" in out
    assert "run: wan22ctl download lightning-t2v" in out
    r = run_cli(tmp_path, "plan", "--task", "t2v-A14B", "--gpu-count", "1", "--preset", "lightning", "--steps", "8", "--json")
    plan = json.loads(r.stdout)["plans"][0]["plan"]
    assert plan["regime"].startswith("lightning preset, changed: 8 steps")
    assert any("--steps 8 leaves the lightning regime" in w for w in plan["warnings"])
    r = run_cli(tmp_path, "plan", "--task", "t2v-A14B", "--gpu-count", "1", "--json")
    plan = json.loads(r.stdout)["plans"][0]["plan"]
    assert plan["regime"].startswith("standard: 40 steps = 80 DiT forwards: high-noise expert 26 step(s), low-noise 14")
    r = run_cli(tmp_path, "plan", "--task", "ti2v-5B", "--gpu-count", "1", "--preset", "lightning")
    assert r.returncode == 2 and "no distilled LoRA for ti2v-5B" in r.stderr


def test_generate_refuses_bad_loras_before_docker(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "loras").mkdir(parents=True)
    params = loras.wan_parameters(CONFIG)
    tensors, _ = lora_tensors(params, "wan")
    inside = write(root / "loras" / "style.safetensors", tensors)
    outside = write(tmp_path / "elsewhere.safetensors", tensors)
    base = ("generate", "--task", "t2v-A14B", "--prompt", "a fox")
    cases = [
        (("--lora", inside), "use --lora-high (high-noise expert, early steps) or --lora-low"),
        (("--lora-low", outside), "is outside CHECKPOINT_DIR"),
        (("--lora", "lightning-x2v"), "no such file, and not a catalog LoRA (lightning-t2v, lightning-i2v)"),
        (("--preset", "lightning"), "run: wan22ctl download lightning-t2v"),
        (("--lora-high", inside + ":abc"), "no such file"),
    ]
    for args, message in cases:
        r = run_cli(tmp_path, *base, *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert "docker" not in r.stderr.lower() and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the server's LoRA set


def test_server_takes_a_lora_set_at_start_and_refuses_another(tmp_path):
    from tests.test_server import Server

    root = tmp_path / "root"
    folder, _, _ = lightning_folder(tmp_path)
    target = root / "loras" / "lightning-t2v"
    target.mkdir(parents=True)
    os.rename(folder, target / os.path.basename(folder))
    folder = str(target / os.path.basename(folder))
    srv = Server(tmp_path, task="t2v-A14B", env={"WAN22_CHECKPOINT_DIR": str(root)}, args=("--preset", "lightning"))
    for sub in ("high_noise_model", "low_noise_model"):
        (srv.ckpt / sub).mkdir(parents=True)
        (srv.ckpt / sub / "config.json").write_text(json.dumps(CONFIG))
    srv.start()
    try:
        status, info, _ = srv.api("GET", "/v1/info")
        assert info["preset"] == "lightning"
        assert [(d["expert"], os.path.basename(d["file"])) for d in info["loras"]] == [
            ("high", "high_noise_model.safetensors"), ("low", "low_noise_model.safetensors")]
        # no preset, no LoRAs named: the server's preset; a request naming the same set: accepted
        def submit(**body):
            status, job, _ = srv.api("POST", "/v1/videos", {"size": "832*480"} | body)
            assert status == 201, job
            return job

        plain = submit(prompt="plain")
        same = submit(prompt="same", preset="lightning", sample_steps=5)
        named = submit(prompt="named", loras=[{"file": folder, "scale": 1.0}])
        for job in (plain, same, named):
            assert srv.wait(job["id"])["state"] == "succeeded"
        call = next(c for c in srv.calls_made() if c["input_prompt"] == "plain")
        assert (call["sampling_steps"], call["shift"], call["guide_scale"], call["sample_solver"]) == (4, 5.0, 1.0, "euler")
        side = json.loads(Path(srv.wait(plain["id"])["sidecar"]).read_text())
        assert side["preset"] == "lightning" and len(side["loras"]) == 2
        # another set: a clear 400 naming both sets
        for body in ({"loras": []},
                     {"loras": [{"file": os.path.join(folder, "high_noise_model.safetensors"), "expert": "high",
                                 "scale": 0.5}]}):
            status, err, _ = srv.api("POST", "/v1/videos", {"prompt": "other", "size": "832*480"} | body)
            assert status == 400, err
            assert err["error"]["field"] == "loras" and "merged high: high_noise_model.safetensors:1" in err["error"]["message"]
    finally:
        assert srv.stop() == 0, srv.logtext()


def test_server_without_loras_refuses_a_preset_request(tmp_path):
    from tests.test_server import Server

    srv = Server(tmp_path, task="t2v-A14B").start()
    try:
        status, err, _ = srv.api("POST", "/v1/videos", {"prompt": "x", "preset": "lightning"})
        assert status == 400 and "this server merged no LoRA" in err["error"]["message"], err
    finally:
        srv.stop()


def test_up_serve_with_server_preset(tmp_path):
    """SERVER_PRESET reaches the server's command; a task without the preset's LoRAs and LoRAs not
    downloaded are one line and exit 2, before Docker is asked."""
    def up(**env):
        return subprocess.run([sys.executable, "-m", "wan22ctl", "up", "--serve", "--dry-run", "--json"], cwd=tmp_path,
                              env=clean_environ() | {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "GPUS": "none",
                                                     "CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
                                                     "OUTPUT_DIR": str(tmp_path / "out"), **env},
                              capture_output=True, text=True, timeout=60)

    from tests.conftest import clean_environ

    r = up(SERVER_TASK="ti2v-5B", SERVER_PRESET="lightning")
    assert r.returncode == 2 and "SERVER_PRESET=lightning has no distilled LoRA for SERVER_TASK=ti2v-5B" in r.stderr
    r = up(SERVER_TASK="t2v-A14B", SERVER_PRESET="turbo")
    assert r.returncode == 2 and "SERVER_PRESET" in r.stderr and "lightning" in r.stderr
    r = up(SERVER_TASK="t2v-A14B", SERVER_PRESET="lightning")
    assert r.returncode == 2 and "run: wan22ctl download lightning-t2v" in r.stderr, r.stderr
    from wan22ctl.hub.state import MANIFEST_NAME

    folder, _, _ = lightning_folder(tmp_path)
    target = tmp_path / "checkpoints" / "loras" / "lightning-t2v"
    target.mkdir(parents=True)
    os.rename(folder, target / os.path.basename(folder))
    r = up(SERVER_TASK="t2v-A14B", SERVER_PRESET="lightning")
    assert r.returncode == 2 and "run: wan22ctl download lightning-t2v" in r.stderr  # never verified: as generate
    files = {str(p.relative_to(target)): {"size": p.stat().st_size} for p in target.rglob("*") if p.is_file()}
    (target / MANIFEST_NAME).write_text(json.dumps({"commit": "c", "files": files}))
    r = up(SERVER_TASK="t2v-A14B", SERVER_PRESET="lightning")
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)["container"]["command"]
    assert command[command.index("--preset") + 1] == "lightning" and command[command.index("--task") + 1] == "t2v-A14B"
    assert "--preset" not in json.loads(up(SERVER_TASK="t2v-A14B").stdout)["container"]["command"]
