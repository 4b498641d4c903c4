"""FP8 weights (wan22ctl.agent.fp8) and block streaming (wan22ctl.agent.streaming), on the CPU.

The FP8 layer is checked against its definition (per-channel e4m3 weights, per-row activation
scales, the product in float32) and against the bf16 linear it replaces; the streaming schedule with
a tiny DiT-shaped model: same output as the model left in place, the copy order (resident blocks
first, two slots, wrapping into the next forward), recovery from an interrupted forward, and the
expert switch of a stand-in MoE pipeline. GPU variants run where CUDA is present.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import types

import pytest

torch = pytest.importorskip("torch")
if getattr(torch, "float8_e4m3fn", None) is None:
    pytest.skip("this torch has no float8 dtypes", allow_module_level=True)

from torch import nn  # noqa: E402

from wan22ctl.agent import fp8, speedups as S, streaming  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# ---- fp8 ---------------------------------------------------------------------------------------

def test_weight_scales_are_per_output_channel_and_error_is_e4m3_rounding():
    torch.manual_seed(0)
    w = torch.randn(32, 64) * torch.logspace(-3, 2, 32)[:, None]  # channels five decades apart
    q, scale = fp8.quantize_weight(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (32, 64) and scale.shape == (1, 32)
    assert torch.allclose(scale[0], w.abs().amax(dim=1) / 448)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((32,), 448.0))  # each channel's max maps to 448
    back = q.float() * scale[0][:, None]
    # e4m3 keeps 3 mantissa bits: every element within half a step (2**-4 relative) of the original
    # once it is above the subnormal range
    big = w.abs() > scale[0][:, None] * 2**-6
    assert ((back - w).abs()[big] <= w.abs()[big] * 2**-4 + 1e-12).all()


def test_activation_scales_are_per_row():
    x = torch.randn(5, 16) * torch.tensor([1e-4, 1.0, 30.0, 1e3, 0.0])[:, None]
    q, scale = fp8.quantize_rows(x)
    assert scale.shape == (5, 1) and q.dtype == torch.float8_e4m3fn
    assert torch.isfinite(q.float()).all() and (q.float()[4] == 0).all()  # a zero row stays zero
    assert rel(q.float()[:4] * scale[:4], x[:4]) < 0.05


def test_fp8_linear_matches_its_definition_and_the_bf16_layer():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48).to(torch.bfloat16)
    layer = fp8.Fp8Linear.from_linear(linear)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.bias.dtype == torch.bfloat16
    x = torch.randn(2, 7, 64)  # float32 in, as upstream's modulated activations are
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 7, 48)
    xq, xs = fp8.quantize_rows(x.reshape(-1, 64))
    ref = fp8.scaled_mm_reference(xq, xs, layer.weight, layer.weight_scale, layer.bias).reshape(2, 7, 48)
    assert torch.equal(y, ref)
    assert rel(y, linear(x.to(torch.bfloat16))) < 0.06  # FP8 rounding of both operands


class Block(nn.Module):
    """A WanAttentionBlock-shaped module: linears nested two deep, a norm, a modulation parameter
    and a buffer."""

    def __init__(self, dim=16):
        super().__init__()
        self.attn = nn.ModuleDict({"q": nn.Linear(dim, dim), "o": nn.Linear(dim, dim)})
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, dim) / 4)
        self.register_buffer("scale", torch.full((dim,), 0.5))

    def forward(self, x):  # x float32, as upstream's residual stream; layers in the weights' dtype
        dt = self.modulation.dtype
        x = x + self.attn["o"](self.attn["q"](self.norm(x.to(dt))).to(dt)).float() * self.scale.float()
        return x + self.ffn((x + self.modulation.float()).to(dt)).float()


class TinyDiT(nn.Module):
    def __init__(self, layers=6, dim=16):
        super().__init__()
        self.patch_embedding = nn.Linear(4, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(layers))
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.patch_embedding(x.to(self.head.weight.dtype)).float()
        for block in self.blocks:
            x = block(x)
        return self.head(x.to(self.head.weight.dtype))


def tiny(layers=6, seed=0):
    torch.manual_seed(seed)
    return TinyDiT(layers).eval().requires_grad_(False)


def test_quantize_blocks_replaces_block_linears_only():
    model = tiny().to(torch.bfloat16)
    assert fp8.quantize_blocks(model) == 6 * 4
    assert type(model.patch_embedding) is nn.Linear and type(model.head) is nn.Linear  # kept in bf16
    assert all(isinstance(m, fp8.Fp8Linear) for b in model.blocks for m in (b.attn["q"], b.attn["o"], b.ffn[0], b.ffn[2]))
    assert model.blocks[0].norm.weight.dtype == torch.bfloat16 and model.blocks[0].modulation.dtype == torch.bfloat16


def test_fp8_model_stays_close_to_bf16():
    bf16 = tiny().to(torch.bfloat16)
    q = copy.deepcopy(bf16)
    fp8.quantize_blocks(q)
    x = torch.randn(3, 10, 4, dtype=torch.bfloat16)
    assert rel(q(x), bf16(x)) < 0.08


@pytest.mark.parametrize("value,fp8_on", [("", False), ("bf16", False), ("FP8", True)])
def test_dtype_switch(monkeypatch, value, fp8_on):
    monkeypatch.setenv("WAN22_DTYPE", value)
    assert fp8.requested() is fp8_on


def test_dtype_switch_rejects_unknown(monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "int8")
    with pytest.raises(ValueError, match="WAN22_DTYPE='int8': use bf16 or fp8"):
        fp8.requested()


@pytest.mark.parametrize("cap,name,ok", [((9, 0), "NVIDIA H100", True), ((8, 9), "NVIDIA L40S", True),
                                         ((8, 0), "NVIDIA A100-SXM4-80GB", False), ((8, 6), "NVIDIA RTX A6000", False),
                                         ((10, 0), "NVIDIA B200", False)])
def test_fp8_refused_without_fp8_tensor_cores(monkeypatch, cap, name, ok):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    problem = fp8.device_problem(torch.device("cuda", 0))
    if ok:
        assert problem is None
    else:
        assert f"{name} is sm_{cap[0]}{cap[1]}" in problem and "WAN22_DTYPE=bf16" in problem
    assert "needs a CUDA GPU" in fp8.device_problem(torch.device("cpu"))


class MoEPipeline:
    """Upstream's WanT2V shape: `_configure_model` per expert (bf16 cast), two experts, T5."""

    def __init__(self, device, t5_cpu=False):
        self.device, self.init_on_cpu, self.t5_cpu = device, True, t5_cpu
        self.param_dtype = torch.bfloat16
        self.text_encoder = types.SimpleNamespace(model=nn.Linear(8, 4).to(torch.bfloat16))
        self.low_noise_model = self._configure_model(tiny(seed=1), False, False, None, True)
        self.high_noise_model = self._configure_model(tiny(seed=2), False, False, None, True)

    def _configure_model(self, model, use_sp, dit_fsdp, shard_fn, convert_model_dtype):
        model.eval().requires_grad_(False)
        if convert_model_dtype:
            model.to(self.param_dtype)
        return model

    def _prepare_model_for_timestep(self, t, boundary, offload_model):
        raise AssertionError("replaced by the patch")


@pytest.fixture()
def pipeline_class(monkeypatch):
    """MoEPipeline patched as the import hook patches WanT2V (fp8 and the weight staging)."""
    monkeypatch.setitem(S._run, "offload", True)
    monkeypatch.setattr(fp8, "device_problem", lambda device: None)  # no FP8 GPU here

    def make():
        cls = type("Patched", (MoEPipeline,), {})
        fp8.patch_pipeline(cls)
        S._patch_swap(cls)
        return cls
    return make


def test_pipeline_quantizes_each_expert_after_the_bf16_cast(pipeline_class, monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    pipe = pipeline_class()(torch.device("meta"))
    for model in (pipe.low_noise_model, pipe.high_noise_model):
        assert model._wan22_dtype == "fp8" and isinstance(model.blocks[0].ffn[0], fp8.Fp8Linear)
        assert model.head.weight.dtype == torch.bfloat16
    assert pipe._wan22_staged == "pinned"  # float8 weights go through the same host copies
    assert pipe.low_noise_model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn


def test_pipeline_fp8_refuses_fsdp(monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.setattr(fp8, "device_problem", lambda device: None)
    cls = type("Patched", (MoEPipeline,), {})
    fp8.patch_pipeline(cls)
    pipe = object.__new__(cls)
    with pytest.raises(RuntimeError, match="without FSDP"):
        cls._configure_model(pipe, tiny(), False, True, None, True)


def test_pipeline_bf16_is_untouched(pipeline_class, monkeypatch):
    monkeypatch.delenv("WAN22_DTYPE", raising=False)
    pipe = pipeline_class()(torch.device("meta"))
    assert type(pipe.low_noise_model.blocks[0].ffn[0]) is nn.Linear


# ---- block streaming ---------------------------------------------------------------------------

def streamed(model, resident, device="cpu", log=True):
    s = streaming.StreamedModel(model, torch.device(device), resident)
    s.pool.log = [] if log else None
    return s


@pytest.mark.parametrize("resident", [0, 2, 5, 6])
def test_streamed_model_computes_the_same(resident):
    reference = tiny()
    model = copy.deepcopy(reference)
    streamed(model, resident)
    x = torch.randn(2, 5, 4)
    for _ in range(3):
        assert torch.equal(model(x), reference(x))


def test_copy_schedule_two_slots_resident_first_wraps_into_next_forward():
    model = tiny()
    s = streamed(model, resident=2)
    x = torch.randn(1, 3, 4)
    model(x)
    # blocks 0, 1 resident; 2..5 stream through slots 0/1 in turn; the last two copies of a forward
    # are the next forward's first blocks
    assert s.pool.log == [(2, 0), (3, 1), (4, 0), (5, 1), (2, 0), (3, 1)]
    model(x)
    assert s.pool.log[6:] == [(4, 0), (5, 1), (2, 0), (3, 1)]
    assert [p for p, _ in s.queue] == [0, 1]


def test_streamed_blocks_point_home_between_forwards():
    model = tiny()
    s = streamed(model, resident=1)
    model(torch.randn(1, 3, 4))
    for i in s.streamed:
        flat = s.layouts[i].flat
        lo, hi = flat.data_ptr(), flat.data_ptr() + flat.numel()
        assert all(lo <= t.data_ptr() < hi for t in list(model.blocks[i].parameters()) + list(model.blocks[i].buffers()))


def test_interrupted_forward_recovers():
    reference = tiny()
    model = copy.deepcopy(reference)
    s = streamed(model, resident=1)
    x = torch.randn(1, 3, 4)
    boom = model.blocks[3].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        model(x)
    boom.remove()
    assert torch.equal(model(x), reference(x))
    assert torch.equal(model(x), reference(x))
    assert [p for p, _ in s.queue] == [0, 1]


def test_streaming_with_fp8_blocks():
    reference = tiny().to(torch.bfloat16)
    fp8.quantize_blocks(reference)
    model = copy.deepcopy(reference)
    s = streamed(model, resident=2)
    assert s.layouts[2].nbytes < streamed(tiny().to(torch.bfloat16), 0).layouts[0].nbytes  # e4m3 bytes
    x = torch.randn(1, 3, 4, dtype=torch.bfloat16)
    assert torch.equal(model(x), reference(x))


def test_streaming_switches(monkeypatch):
    for value in ("", "blocks", "model"):
        monkeypatch.setenv("WAN22_OFFLOAD", value)
        assert streaming.requested() is (value == "blocks")
    monkeypatch.setenv("WAN22_OFFLOAD", "layers")
    with pytest.raises(ValueError, match="WAN22_OFFLOAD='layers'"):
        streaming.requested()
    monkeypatch.setenv("WAN22_OFFLOAD", "blocks")
    monkeypatch.setenv("WAN22_RESIDENT_BLOCKS", "-3")
    with pytest.raises(ValueError, match="WAN22_RESIDENT_BLOCKS='-3'"):
        streaming.requested()


def _devices(module):
    return {t.device.type for t in list(module.parameters()) + list(module.buffers())}


def test_pipeline_streams_and_switches_experts(pipeline_class, monkeypatch):
    monkeypatch.setenv("WAN22_OFFLOAD", "blocks")
    monkeypatch.setenv("WAN22_RESIDENT_BLOCKS", "2")
    # meta stands in for the GPU: placement only
    pipe = pipeline_class()(torch.device("meta"))
    assert pipe._wan22_staged == "streamed"
    high, low = pipe.high_noise_model, pipe.low_noise_model
    assert _devices(high) == {"cpu"} and _devices(low) == {"cpu"}
    assert high.__dict__["_wan22_stream"].pool is low.__dict__["_wan22_stream"].pool  # one set of slots
    prepare = pipe._prepare_model_for_timestep
    assert prepare(torch.tensor(900), 875, True) is high
    assert _devices(high.head) == {"meta"} and _devices(high.blocks[1]) == {"meta"}
    assert _devices(high.blocks[2]) == {"cpu"}  # streamed: on the GPU only while it computes
    assert _devices(low) == {"cpu"}
    assert prepare(torch.tensor(100), 875, True) is low
    assert _devices(high) == {"cpu"} and _devices(low.blocks[0]) == {"meta"}
    low.cpu()  # upstream's offload before the VAE decode
    assert _devices(low) == {"cpu"}
    # T5 visits the GPU only to encode, through its host copy
    t5 = pipe.text_encoder.model
    assert t5.to(pipe.device) is t5 and _devices(t5) == {"meta"}


def test_streaming_keeps_weights_through_the_switch(pipeline_class, monkeypatch):
    monkeypatch.setenv("WAN22_OFFLOAD", "blocks")
    monkeypatch.setenv("WAN22_RESIDENT_BLOCKS", "1")
    plain = MoEPipeline(torch.device("cpu"))
    pipe = pipeline_class()(torch.device("cpu"))
    x = torch.randn(1, 3, 4, dtype=torch.bfloat16)
    for t in (900, 900, 100, 900, 100):
        model = pipe._prepare_model_for_timestep(torch.tensor(t), 875, True)
        ref = plain.high_noise_model if t >= 875 else plain.low_noise_model
        assert torch.equal(model(x), ref(x))


# ---- the bootstrap ------------------------------------------------------------------------------

def run_wanrun(tmp_path, **env):
    (tmp_path / "generate.py").write_text("print('RAN')\n")
    full = dict(os.environ, WAN22_DIR=str(tmp_path), PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-m", "wan22ctl.agent.wanrun", "--task", "t2v-A14B"], cwd=str(tmp_path),
                          env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env,message", [({"WAN22_DTYPE": "fp16"}, "WAN22_DTYPE='fp16'"),
                                         ({"WAN22_OFFLOAD": "all"}, "WAN22_OFFLOAD='all'"),
                                         ({"WAN22_OFFLOAD": "blocks", "WAN22_RESIDENT_BLOCKS": "x"},
                                          "WAN22_RESIDENT_BLOCKS='x'"),
                                         ({"WAN22_FP8_ATTENTION": "sage"}, "WAN22_FP8_ATTENTION='sage'")])
def test_wanrun_rejects_bad_lowmem_switches_before_loading(tmp_path, env, message):
    res = run_wanrun(tmp_path, **env)
    assert res.returncode == 2 and message in res.stderr and "RAN" not in res.stdout
    assert res.stderr.strip().splitlines()[-1] == "error: " + res.stderr.split("error: ", 1)[1].strip()


def test_the_agent_exits_with_the_code_its_result_event_reports(tmp_path):
    """wanrun's 2 (a bad switch) reaches the agent's own exit status, as its result event says."""
    plan = subprocess.run([sys.executable, "-m", "wan22ctl", "plan", "--task", "t2v-A14B", "--prompt", "a red fox",
                           "--gpu-count", "1", "--gpu-mem-gb", "141", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    (tmp_path / "wan").mkdir()
    (tmp_path / "wan" / "generate.py").write_text("print('RAN')\n")
    env = dict(os.environ, WAN22_DIR=str(tmp_path / "wan"), WAN22_PYTHON=sys.executable, PYTHONPATH=REPO,
               WAN22_OUTPUT_DIR=str(tmp_path / "out"), WAN22_CHECKPOINT_DIR=str(tmp_path / "ckpt"),
               WAN22_FP8_ATTENTION="sage")
    res = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "generate", "--plan-json", plan.stdout],
                         env=env, capture_output=True, text=True, timeout=120)
    (result,) = [json.loads(line.split(" ", 1)[1]) for line in res.stdout.splitlines() if '"result"' in line]
    assert result["exit_code"] == res.returncode == 2, res.stdout + res.stderr
    assert "WAN22_FP8_ATTENTION='sage'" in res.stderr and "RAN" not in res.stdout


# ---- on a GPU ------------------------------------------------------------------------------------

@pytest.mark.gpu
@GPU_ONLY
def test_gpu_fp8_linear_matches_reference():
    if fp8.device_problem(torch.device("cuda", 0)):
        pytest.skip("no FP8 tensor cores")
    torch.manual_seed(0)
    linear = nn.Linear(256, 512).to(torch.bfloat16).cuda()
    layer = fp8.Fp8Linear.from_linear(linear)
    x = torch.randn(3, 100, 256, device="cuda")
    y = layer(x)
    xq, xs = fp8.quantize_rows(x.reshape(-1, 256))
    ref = fp8.scaled_mm_reference(xq, xs, layer.weight, layer.weight_scale, layer.bias).reshape(3, 100, 512)
    assert rel(y, ref) < 1e-2 and rel(y, linear(x.to(torch.bfloat16))) < 0.06
    compiled = torch.compile(layer.forward, dynamic=False)
    assert rel(compiled(x), y) < 1e-2


@pytest.mark.gpu
@GPU_ONLY
@pytest.mark.parametrize("resident", [0, 3])
def test_gpu_streaming_matches_resident(resident):
    torch.manual_seed(0)
    reference = TinyDiT(layers=8, dim=512).eval().requires_grad_(False).cuda()
    model = TinyDiT(layers=8, dim=512).eval().requires_grad_(False)
    model.load_state_dict(reference.state_dict())
    s = streaming.StreamedModel(model, torch.device("cuda", 0), resident)
    x = torch.randn(2, 4096, 4, device="cuda")
    want = reference(x)
    for _ in range(3):
        assert torch.equal(model(x), want)
    s.deactivate()
    assert _devices(model) == {"cpu"}
