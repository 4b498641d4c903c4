"""wan22ctl.agent.speedups and the wanrun bootstrap, on the CPU.

The speedups must compute the same function as upstream: the fp32 rotary embedding is checked
against a float64 complex reference written from upstream's formula, and the timestep-once forwards
against running the MLPs on every token (uniform t2v timesteps and TI2V's mixed ones). The
bootstrap is run as the launcher runs it, against a stand-in Wan checkout whose generate.py reports
what it sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

torch = pytest.importorskip("torch")

from wan22ctl.agent import hostmem  # noqa: E402
from wan22ctl.agent import speedups as S  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rope_params(max_len, dim, theta=10000):
    freqs = torch.outer(torch.arange(max_len), 1.0 / torch.pow(theta, torch.arange(0, dim, 2).to(torch.float64).div(dim)))
    return torch.polar(torch.ones_like(freqs), freqs)


def rope_reference(x, grid_sizes, freqs):
    """Upstream's rope_apply: float64 complex multiply, padding tokens copied, float32 out."""
    n, c = x.size(2), x.size(3) // 2
    freqs = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    out = []
    for i, (f, h, w) in enumerate(grid_sizes.tolist()):
        seq = f * h * w
        xi = torch.view_as_complex(x[i, :seq].to(torch.float64).reshape(seq, n, -1, 2))
        fi = torch.cat([freqs[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
                        freqs[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
                        freqs[2][:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(seq, 1, -1)
        xi = torch.view_as_real(xi * fi).flatten(2)
        out.append(torch.cat([xi, x[i, seq:]]))
    return torch.stack(out).float()


@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("batch", [1, 2])
def test_fast_rope_matches_upstream_formula(pad, batch):
    d = 128
    freqs = torch.cat([rope_params(1024, d - 4 * (d // 6)), rope_params(1024, 2 * (d // 6)), rope_params(1024, 2 * (d // 6))], dim=1)
    grid = torch.tensor([[3, 4, 6]] * batch)
    x = torch.randn(batch, 72 + pad, 4, d, dtype=torch.bfloat16)
    ref = rope_reference(x, grid, freqs)
    out = S.rope_apply(x, grid, freqs)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert ((out - ref).norm() / ref.norm()).item() < 1e-6
    assert torch.equal(out[:, 72:], ref[:, 72:])


class TinyDiT(torch.nn.Module):
    """The two timestep MLPs of WanModel, shaped as upstream builds and calls them."""

    def __init__(self, freq_dim=16, dim=32):
        super().__init__()
        self.dim = dim
        self.time_embedding = torch.nn.Sequential(torch.nn.Linear(freq_dim, dim), torch.nn.SiLU(), torch.nn.Linear(dim, dim))
        self.time_projection = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(dim, dim * 6))

    def embed(self, t):  # upstream: sinusoid per token -> e, e0
        half = 8
        pos = t.flatten().double()
        sinus = torch.outer(pos, torch.pow(10000, -torch.arange(half).to(pos).div(half)))
        x = torch.cat([torch.cos(sinus), torch.sin(sinus)], dim=1).unflatten(0, t.shape).float()
        e = self.time_embedding(x)
        e0 = self.time_projection(e).unflatten(2, (6, self.dim))
        return e, e0


@pytest.mark.parametrize("kind", ["t2v", "ti2v", "sequence_parallel"])
def test_timestep_once_matches_per_token(kind):
    torch.manual_seed(0)
    model = TinyDiT()
    t = torch.full((1, 50), 900.0)
    if kind == "ti2v":
        t[0, :12] = 0.0  # the first latent frame of an image-conditioned TI2V sample
    e_ref, e0_ref = model.embed(t)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    S.apply_to_model(model)
    if kind == "sequence_parallel":  # upstream's SP forward is set on the instance; it chunks e0 per rank
        model.forward = types.MethodType(lambda self: None, model)
    e, e0 = model.embed(t)
    assert model.state_dict().keys() == state.keys()
    if kind == "t2v":
        assert e.shape[1] == 1  # broadcast, not materialized per token
    else:
        assert e.shape == e_ref.shape and e0.shape == e0_ref.shape
    torch.testing.assert_close(e.expand_as(e_ref), e_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e0.expand_as(e0_ref), e0_ref, rtol=1e-5, atol=1e-6)
    S.remove_from_model(model)
    e2, _ = model.embed(t)
    assert e2.shape == e_ref.shape


def test_bad_switch_is_one_line_error(monkeypatch):
    monkeypatch.setenv("WAN22_COMPILE", "maybe")
    with pytest.raises(ValueError, match="WAN22_COMPILE='maybe': use 1 or 0 or auto"):
        S.active()
    monkeypatch.setenv("WAN22_COMPILE", "1")
    monkeypatch.setenv("WAN22_FAST_ROPE", "auto")  # auto is WAN22_COMPILE's alone
    with pytest.raises(ValueError, match="WAN22_FAST_ROPE='auto': use 1 or 0$"):
        S.active()


@pytest.mark.parametrize("value,steps,world,expected", [
    (None, None, "1", True),  # the task's default steps (40 / 50) or the server
    (None, 40, "1", True),
    (None, 19, "1", False),  # short runs do not pay ~12 s of compilation back
    ("auto", S.COMPILE_MIN_STEPS, "1", True),
    (None, 40, "2", False),  # torchrun: eager unless asked for
    ("1", 4, "2", True),
    ("0", None, "1", False),
])
def test_compile_auto_decides_per_run(monkeypatch, value, steps, world, expected):
    if value is None:
        monkeypatch.delenv("WAN22_COMPILE", raising=False)
    else:
        monkeypatch.setenv("WAN22_COMPILE", value)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setitem(S._run, "steps", steps)
    assert S.active()["WAN22_COMPILE"] is expected


def _attention_block(x, wq, wk, wv, grid, freqs, seq_lens, heads):
    """Upstream's self-attention data flow (WanSelfAttention.forward): projections, q/k RMS norm,
    rope_apply on q and k, flash_attention with k_lens, output flattened."""
    from wan22ctl.agent import attention as A

    b, s, d = x.shape
    norm = lambda t: t * torch.rsqrt(t.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(t.dtype)  # noqa: E731
    q = norm(x @ wq).view(b, s, heads, d // heads)
    k = norm(x @ wk).view(b, s, heads, d // heads)
    v = (x @ wv).view(b, s, heads, d // heads)
    y = A.flash_attention(q=S.rope_apply(q, grid, freqs), k=S.rope_apply(k, grid, freqs), v=v, k_lens=seq_lens)
    return y.flatten(2)


def _block_inputs(device, dtype, pad, batch=2, heads=2, d=256):
    torch.manual_seed(0)
    c = d // heads
    freqs = torch.cat([rope_params(1024, c - 4 * (c // 6)), rope_params(1024, 2 * (c // 6)),
                       rope_params(1024, 2 * (c // 6))], dim=1).to(device)
    grid = torch.tensor([[3, 4, 6]] * batch)
    seq = 72 + pad
    x = torch.randn(batch, seq, d, device=device, dtype=dtype)
    ws = [torch.randn(d, d, device=device, dtype=dtype) / d ** 0.5 for _ in range(3)]
    seq_lens = torch.tensor([72] * batch if pad else [seq] * batch)
    return (x, *ws, grid, freqs, seq_lens, heads)


@pytest.mark.parametrize("pad", [0, 5])
def test_compiled_block_is_one_graph_and_same_function(pad):
    """Rotary tables and attention enter torch.compile as opaque operators: the block compiles as one
    graph (fullgraph=True fails on any break) and computes exactly what eager computes."""
    import torch._dynamo

    inputs = _block_inputs("cpu", torch.float32, pad)
    eager = _attention_block(*inputs)
    torch._dynamo.reset()
    compiled = torch.compile(_attention_block, fullgraph=True, dynamic=False, backend="aot_eager")(*inputs)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert not torch.isnan(compiled).any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("pad", [0, 5])
def test_compiled_block_on_gpu_matches_eager(pad):
    """Inductor on the GPU in bf16: the fused rotation (bf16 out) and the attention operator agree
    with the eager path within bf16 noise."""
    import torch._dynamo

    inputs = _block_inputs("cuda", torch.bfloat16, pad, heads=2, d=256)
    eager = _attention_block(*inputs).float()
    torch._dynamo.reset()
    compiled = torch.compile(_attention_block, fullgraph=True, dynamic=False)(*inputs).float()
    assert torch.isfinite(compiled).all()
    assert ((compiled - eager).norm() / eager.norm()).item() < 1e-2


@pytest.fixture
def standin_wan(tmp_path):
    """A Wan checkout stand-in: wan.modules.{attention,model} shaped like upstream, and a generate.py."""
    mods = tmp_path / "wan" / "modules"
    mods.mkdir(parents=True)
    (tmp_path / "wan" / "__init__.py").write_text("from . import modules\n")
    (mods / "__init__.py").write_text("from .attention import flash_attention\nfrom . import model\n")
    (mods / "attention.py").write_text("def flash_attention(*a, **k):\n    raise AssertionError('upstream')\n"
                                       "def attention(*a, **k):\n    raise AssertionError('upstream')\n")
    (mods / "model.py").write_text(textwrap.dedent("""
        import torch
        from .attention import flash_attention
        def rope_apply(x, grid_sizes, freqs):
            raise AssertionError('upstream rope')
        class WanAttentionBlock(torch.nn.Module):
            pass
        class WanModel(torch.nn.Module):
            def __init__(self, dim=8):
                super().__init__()
                self.time_embedding = torch.nn.Linear(4, dim)
                self.time_projection = torch.nn.Linear(dim, 6 * dim)
    """))
    (tmp_path / "generate.py").write_text(textwrap.dedent("""
        import json, sys
        import wan
        import wan.modules.model as m
        from wan22ctl.agent import attention as A, speedups as S
        model = m.WanModel()
        print("SEEN " + json.dumps({
            "argv": sys.argv[1:], "main": __name__,
            "attention": m.flash_attention is A.flash_attention,
            "rope": m.rope_apply is S.rope_apply,
            "once": "forward" in model.time_embedding.__dict__,
            "compiled": "_wan22_eager_forward" in m.WanAttentionBlock.__dict__,
        }))
    """))
    return tmp_path


def run_wanrun(wan_dir, *args, **env):
    full = dict(os.environ, WAN22_DIR=str(wan_dir), PYTHONPATH=REPO, **env)
    return subprocess.run([sys.executable, "-m", "wan22ctl.agent.wanrun", *args], cwd=str(wan_dir),
                          env=full, capture_output=True, text=True, timeout=120)


def test_wanrun_installs_before_wan_imports_and_passes_args(standin_wan):
    res = run_wanrun(standin_wan, "--task", "t2v-A14B", "--prompt", "a cat")
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout.split("SEEN ", 1)[1].splitlines()[0])
    assert seen == {"argv": ["--task", "t2v-A14B", "--prompt", "a cat"], "main": "__main__",
                    "attention": True, "rope": True, "once": True, "compiled": True}


@pytest.mark.parametrize("steps,compiled", [("4", False), ("40", True)])
def test_wanrun_compiles_only_runs_long_enough(standin_wan, steps, compiled):
    res = run_wanrun(standin_wan, "--task", "t2v-A14B", "--sample_steps", steps)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout.split("SEEN ", 1)[1].splitlines()[0])
    assert seen["compiled"] is compiled


@pytest.mark.parametrize("argv,expected", [([], None), (["--offload_model", "False"], False),
                                           (["--offload_model=true"], True), (["--offload_model", "Y"], True),
                                           (["--offload_model", "maybe"], None)])
def test_wanrun_reads_offload_model_as_generate_py_does(argv, expected):
    from wan22ctl.agent import wanrun

    assert wanrun._offload_model(["--task", "t2v-A14B", *argv]) is expected


def test_wanrun_switches_off(standin_wan):
    res = run_wanrun(standin_wan, WAN22_FAST_ROPE="0", WAN22_TIME_EMBED_ONCE="0")
    seen = json.loads(res.stdout.split("SEEN ", 1)[1].splitlines()[0])
    assert seen["rope"] is False and seen["once"] is False and seen["attention"] is True


def test_wanrun_rejects_unknown_backend_before_loading(standin_wan):
    res = run_wanrun(standin_wan, WAN22_ATTENTION="fa9")
    assert res.returncode == 2
    assert "WAN22_ATTENTION='fa9'" in res.stderr and "SEEN" not in res.stdout


class _Pipeline:
    """Upstream's MoE pipeline shape (WanT2V/WanI2V): two experts, T5, `init_on_cpu`, `t5_cpu`, the
    same `_prepare_model_for_timestep` contract (which `_patch_swap` replaces)."""

    def __init__(self, device, init_on_cpu=True, t5_cpu=False):
        torch.manual_seed(0)
        self.high_noise_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16)).to(torch.bfloat16)
        self.low_noise_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16)).to(torch.bfloat16)
        self.low_noise_model[0].register_buffer("scale", torch.arange(4.0))
        self.text_encoder = types.SimpleNamespace(model=torch.nn.Linear(8, 4).to(torch.bfloat16))
        self.device, self.init_on_cpu, self.t5_cpu = device, init_on_cpu, t5_cpu

    def _prepare_model_for_timestep(self, t, boundary, offload_model):
        """upstream docstring"""
        raise AssertionError("replaced by the patch")


def _weights(model):
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _devices(model):
    return {t.device.type for t in list(model.parameters()) + list(model.buffers())}


@pytest.fixture()
def swapping(monkeypatch):
    """A subclass of the stand-in with the patch applied (its __init__ stages the weights), and the
    run's --offload_model, as wanrun passes it, set per test."""
    monkeypatch.setitem(S._run, "offload", None)
    cls = type("PatchedPipeline", (_Pipeline,), {})
    S._patch_swap(cls)
    return cls


def _swap_run(cls, device):
    pipe = cls(device)
    assert pipe._wan22_staged == "pinned"  # host copies made during the load, not in the first step
    assert all("_wan22_host" in m.__dict__ for m in (pipe.high_noise_model, pipe.low_noise_model))
    high0, low0 = _weights(pipe.high_noise_model), _weights(pipe.low_noise_model)
    t_high, t_low = torch.tensor(900), torch.tensor(100)
    assert pipe._prepare_model_for_timestep(t_high, 875, False) is pipe.high_noise_model
    assert _devices(pipe.high_noise_model) == {device.type} and _devices(pipe.low_noise_model) == {"cpu"}
    host = [v.data_ptr() for *_, v in pipe.high_noise_model.__dict__["_wan22_host"]]
    # the switch: high-noise weights go back to their host copy (no copy made), low-noise comes up
    assert pipe._prepare_model_for_timestep(t_low, 875, False) is pipe.low_noise_model
    assert _devices(pipe.high_noise_model) == {"cpu"} and _devices(pipe.low_noise_model) == {device.type}
    assert {p.data_ptr() for p in pipe.high_noise_model.parameters()} <= set(host)
    # upstream's end-of-run `.cpu()` (offload_model) repoints too
    pipe.low_noise_model.cpu()
    assert _devices(pipe.low_noise_model) == {"cpu"}
    for before, model in ((high0, pipe.high_noise_model), (low0, pipe.low_noise_model)):
        after = _weights(model)
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    return pipe


def test_fast_swap_moves_experts_through_one_host_copy(swapping):
    # the meta device stands in for the GPU on this CPU machine: only placement is checked here
    pipe = _swap_run(swapping, torch.device("meta"))
    assert pipe._prepare_model_for_timestep.__doc__ == "upstream docstring"


def test_fast_swap_t5_moves_through_its_host_copy(swapping):
    # --offload_model True (generate.py's one-GPU default): T5 goes up for each prompt and back
    pipe = swapping(torch.device("meta"))
    t5 = pipe.text_encoder.model
    host = {v.data_ptr() for *_, v in t5.__dict__["_wan22_host"]}
    assert {p.data_ptr() for p in t5.parameters()} == host  # the pageable originals are gone
    assert t5.to(pipe.device) is t5 and _devices(t5) == {"meta"}
    t5.cpu()
    assert _devices(t5) == {"cpu"} and {p.data_ptr() for p in t5.parameters()} == host
    assert t5.to(torch.float32).weight.dtype == torch.float32  # any other .to() is torch's own


def _vm_flags(address: int) -> set[str]:
    """The kernel's flags of the mapping holding `address` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if line.startswith("VmFlags"):
                if inside:
                    return set(line.split()[1:])
            elif "-" in head and ":" not in head:
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_host_copies_are_not_inherited_by_forked_children(swapping):
    # upstream's save_video forks ffmpeg (imageio-ffmpeg's preexec_fn); Linux copies pinned pages
    # into a forked child, so the host copies must be private mappings marked MADV_DONTFORK ("dc")
    pipe = swapping(torch.device("meta"))
    for model in (pipe.high_noise_model, pipe.low_noise_model, pipe.text_encoder.model):
        flat, _ = model.__dict__["_wan22_host_flat"]
        flags = _vm_flags(flat.data_ptr())
        assert "dc" in flags and "sh" not in flags, flags
        assert next(model.parameters()).data_ptr() >= flat.data_ptr()


def test_fast_swap_without_offload_pins_experts_only(swapping, monkeypatch):
    monkeypatch.setitem(S._run, "offload", False)
    pipe = swapping(torch.device("meta"))  # no GPU here: nothing to measure free memory on -> pinned
    assert pipe._wan22_staged == "pinned" and "_wan22_host" not in pipe.text_encoder.model.__dict__


@pytest.mark.parametrize("offload,spare,staged", [(False, 0, "resident"), (False, -1, "pinned"),
                                                 (True, 10**12, "pinned")])
def test_fast_swap_keeps_both_experts_resident_where_they_fit(swapping, monkeypatch, offload, spare, staged):
    """Resident when the GPU's free memory covers both experts, T5 and RESIDENT_FREE_BYTES (+spare)."""
    monkeypatch.setitem(S._run, "offload", offload)
    pipe = _Pipeline(torch.device("meta"))  # built unpatched, staged here with a given free memory
    need = sum(hostmem.weight_bytes(m) for m in (pipe.high_noise_model, pipe.low_noise_model, pipe.text_encoder.model))
    assert S._stage(pipe, free_bytes=need + int(S.RESIDENT_FREE_BYTES) + spare) == staged
    prepare = swapping._prepare_model_for_timestep
    if staged == "resident":
        assert all(_devices(m) == {"meta"} for m in (pipe.high_noise_model, pipe.low_noise_model,
                                                      pipe.text_encoder.model))
        # the switch moves nothing: both experts stay on the GPU
        assert prepare(pipe, torch.tensor(900), 875, False) is pipe.high_noise_model
        assert prepare(pipe, torch.tensor(100), 875, False) is pipe.low_noise_model
        assert _devices(pipe.high_noise_model) == {"meta"} and "_wan22_host" not in pipe.high_noise_model.__dict__
    else:
        assert _devices(pipe.high_noise_model) == {"cpu"} and "_wan22_host" in pipe.high_noise_model.__dict__
        prepare(pipe, torch.tensor(100), 875, offload)
        assert _devices(pipe.high_noise_model) == {"cpu"} and _devices(pipe.low_noise_model) == {"meta"}


def test_fast_swap_leaves_upstream_placement_alone(swapping):
    pipe = swapping(torch.device("meta"), init_on_cpu=False)  # FSDP / sequence parallel
    assert pipe._wan22_staged == "upstream"
    assert pipe._prepare_model_for_timestep(torch.tensor(900), 875, False) is pipe.high_noise_model
    assert _devices(pipe.high_noise_model) == {"cpu"} and "_wan22_host" not in pipe.high_noise_model.__dict__


def test_resident_rule_is_the_planners():
    from wan22ctl.plan import launch

    assert launch.RESIDENT_FREE_GB * 1e9 == S.RESIDENT_FREE_BYTES


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_swap_on_gpu_keeps_weights_and_pins(swapping):
    pipe = _swap_run(swapping, torch.device("cuda", 0))
    flat, pinned = pipe.high_noise_model.__dict__["_wan22_host_flat"]
    assert pinned and flat.is_pinned()
    x = torch.randn(3, 8, dtype=torch.bfloat16, device="cuda")
    reference = _Pipeline(torch.device("cuda", 0)).low_noise_model.to("cuda")(x)
    assert torch.equal(pipe._prepare_model_for_timestep(torch.tensor(100), 875, False)(x), reference)
    t5 = pipe.text_encoder.model
    assert torch.equal(t5.to(pipe.device)(x), _Pipeline(torch.device("cuda", 0)).text_encoder.model.to("cuda")(x))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_swap_on_gpu_resident_without_offload(swapping, monkeypatch):
    monkeypatch.setitem(S._run, "offload", False)
    pipe = swapping(torch.device("cuda", 0))  # tiny models: any GPU keeps them resident
    assert pipe._wan22_staged == "resident"
    x = torch.randn(3, 8, dtype=torch.bfloat16, device="cuda")
    reference = _Pipeline(torch.device("cuda", 0)).high_noise_model.to("cuda")(x)
    assert torch.equal(pipe._prepare_model_for_timestep(torch.tensor(900), 875, False)(x), reference)
    assert _devices(pipe.low_noise_model) == {"cuda"}


# ---- WAN22_FAST_T5_LOAD ---------------------------------------------------------------------------

T5_MODULE = '''
import torch
from torch import nn

inits = []


def init_weights(m):
    if isinstance(m, nn.Linear):
        inits.append(m.weight.device.type)
        nn.init.normal_(m.weight, std=0.02)


class Encoder(nn.Module):
    def __init__(self, vocab, dim, num_layers):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_layers))
        self.apply(init_weights)

    def forward(self, ids):
        x = self.token_embedding(ids)
        for b in self.blocks:
            x = x + b(x)
        return x


def _t5(name, encoder_only=False, return_tokenizer=False, dtype=torch.float32, device="cpu", **kwargs):
    with torch.device(device):  # upstream: wan/modules/t5.py _t5
        model = Encoder(**kwargs)
    return model.to(dtype=dtype, device=device)


def umt5_xxl(**kwargs):
    cfg = dict(vocab=64, dim=32, num_layers=3)
    cfg.update(**kwargs)
    return _t5("umt5-xxl", **cfg)


class T5EncoderModel:  # upstream's __init__, line for line, minus the tokenizer
    def __init__(self, text_len, dtype=torch.bfloat16, device="cpu", checkpoint_path=None):
        model = umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=dtype, device=device).eval().requires_grad_(False)
        model.load_state_dict(torch.load(checkpoint_path, map_location="cpu"))
        self.model = model
        self.model.to(device)
'''


@pytest.fixture
def t5_module(tmp_path):
    module = types.ModuleType("wan.modules.t5")
    exec(T5_MODULE, module.__dict__)
    ckpt = tmp_path / "t5.pth"
    torch.manual_seed(0)
    torch.save(module.umt5_xxl(dtype=torch.bfloat16).state_dict(), ckpt)
    module.inits.clear()
    return module, str(ckpt)


@pytest.mark.parametrize("flag", ["1", "0"])
def test_fast_t5_load_builds_uninitialized_and_loads_the_same_weights(t5_module, monkeypatch, flag):
    module, ckpt = t5_module
    reference = torch.load(ckpt)
    monkeypatch.setenv("WAN22_FAST_T5_LOAD", flag)
    S._patch_t5_module(module)
    enc = module.T5EncoderModel(text_len=8, checkpoint_path=ckpt)
    state = enc.model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) and state[k].dtype == torch.bfloat16 for k in state)
    assert {p.device.type for p in enc.model.parameters()} == {"cpu"}
    # on: the random init ran on meta tensors only (nothing filled); off: upstream's CPU init
    assert module.inits == (["meta"] * 3 if flag == "1" else ["cpu"] * 3)
    assert module.umt5_xxl(dtype=torch.bfloat16).blocks[0].weight.device.type == "cpu"  # restored after __init__


def test_fast_t5_load_keeps_upstreams_error_for_a_checkpoint_that_misses_weights(t5_module, tmp_path, monkeypatch):
    module, ckpt = t5_module
    partial = torch.load(ckpt)
    partial.pop("blocks.2.weight")
    torch.save(partial, tmp_path / "partial.pth")
    monkeypatch.setenv("WAN22_FAST_T5_LOAD", "1")
    S._patch_t5_module(module)
    with pytest.raises(RuntimeError, match="Missing key"):
        module.T5EncoderModel(text_len=8, checkpoint_path=str(tmp_path / "partial.pth"))
