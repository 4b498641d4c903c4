"""wan22ctl.agent.attention against a float32 reference of Wan2.2's flash_attention contract.

Fresh random inputs each run, padded and unpadded, causal and windowed. On CPU the SDPA math kernel
checks the semantics (padding, alignment, dtype); on a CUDA GPU every available backend is checked
at bf16 tolerance (tests marked `gpu`, skipped without one).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

from wan22ctl.agent import attention as A  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def reference(q, k, v, q_lens=None, k_lens=None, softmax_scale=None, q_scale=None, causal=False, window_size=(-1, -1)):
    """flash-attn varlen semantics, one sample and one head at a time, in float64 on the CPU."""
    b, lq, nq, c = q.shape
    lk, nk = k.shape[1], k.shape[2]
    q, k, v = (t.detach().double().cpu() for t in (q, k, v))
    if q_scale is not None:
        q = q * q_scale
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(c)
    out = torch.zeros(b, lq, nq, v.shape[3], dtype=torch.float64)
    for i in range(b):
        mq = lq if q_lens is None else int(q_lens[i])
        mk = lk if k_lens is None else int(k_lens[i])
        for h in range(nq):
            hk = h // (nq // nk)
            s = q[i, :mq, h] @ k[i, :mk, hk].T * scale
            row = torch.arange(mq).unsqueeze(1) + (mk - mq)
            col = torch.arange(mk).unsqueeze(0)
            keep = torch.ones(mq, mk, dtype=torch.bool)
            left, right = window_size
            if causal:
                right = 0
            if right >= 0:
                keep &= col <= row + right
            if left >= 0:
                keep &= col >= row - left
            s = s.masked_fill(~keep, float("-inf"))
            p = torch.softmax(s, dim=-1).nan_to_num(0.0)
            out[i, :mq, h] = p @ v[i, :mk, hk]
    return out


def rel_err(out, ref):
    return ((out.double().cpu() - ref).norm() / ref.norm()).item()


def rand(*shape, device="cpu", dtype=torch.float32):
    return torch.randn(*shape, device=device, dtype=dtype)


@pytest.fixture
def backend(monkeypatch):
    def use(name):
        monkeypatch.setenv(A.ENV_VAR, name)
        A.reset()

    yield use
    A.reset()


CASES = [
    dict(),
    dict(k_lens=[37, 64]),
    dict(q_lens=[50, 64], k_lens=[64, 20]),
    dict(causal=True),
    dict(window_size=(8, 4)),
    dict(softmax_scale=0.05, q_scale=1.7),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "plain")
def test_cpu_math_matches_reference(backend, case):
    backend("auto")  # on the CPU auto means the math kernel
    q, k, v = rand(2, 64, 4, 32), rand(2, 64, 4, 32), rand(2, 64, 4, 32)
    kw = {key: (torch.tensor(val, dtype=torch.int32) if key.endswith("lens") else val) for key, val in case.items()}
    out = A.flash_attention(q, k, v, **kw)
    assert out.dtype == torch.float32 and out.shape == (2, 64, 4, 32)
    assert torch.isfinite(out).all()
    err = rel_err(out, reference(q, k, v, **kw))
    assert err < 1e-2, err  # inputs are rounded to bf16 first, as upstream does


def test_cpu_padded_rows_are_zero_and_padding_is_ignored(backend):
    backend("sdpa-math")
    q, k, v = rand(1, 40, 2, 16), rand(1, 40, 2, 16), rand(1, 40, 2, 16)
    q_lens, k_lens = torch.tensor([30]), torch.tensor([25])
    out = A.flash_attention(q, k, v, q_lens=q_lens, k_lens=k_lens)
    assert out[0, 30:].abs().max() == 0
    # garbage in the padded keys must not change anything
    k2, v2 = k.clone(), v.clone()
    k2[:, 25:] = 1e4
    v2[:, 25:] = float("nan")
    out2 = A.flash_attention(q, k2, v2, q_lens=q_lens, k_lens=k_lens)
    assert torch.equal(out, out2)


def test_cpu_grouped_heads_and_cross_lengths(backend):
    backend("auto")
    q, k, v = rand(1, 48, 8, 32), rand(1, 77, 2, 32), rand(1, 77, 2, 32)
    out = A.flash_attention(q, k, v, k_lens=torch.tensor([70]), causal=True)
    assert rel_err(out, reference(q, k, v, k_lens=[70], causal=True)) < 1e-2


def test_dtype_contract(backend):
    backend("auto")
    q = rand(1, 16, 2, 16, dtype=torch.float16)
    assert A.flash_attention(q, q, q).dtype == torch.float16
    with pytest.raises(AssertionError):
        A.flash_attention(q, q, q, dtype=torch.float32)


def test_unknown_choice_fails_before_any_work(monkeypatch):
    monkeypatch.setenv(A.ENV_VAR, "fa9")
    with pytest.raises(ValueError, match="WAN22_ATTENTION='fa9'"):
        A.install()


def test_missing_flash_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn_interface", None)  # import fails
    with pytest.raises(RuntimeError, match="flash_attn_interface"):
        A.resolve("flash3", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="flash-attn-4"):
        A.resolve("flash4", torch.device("cpu"))


def test_flash_attn_4_alone_leaves_upstream_imports_working(tmp_path):
    """flash-attn-4 installs only flash_attn/cute: upstream's `from flash_attn import
    flash_attn_varlen_func` must then fail the way upstream catches (ModuleNotFoundError), flash2
    must count as absent and flash4 as importable."""
    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    (tmp_path / "flash_attn" / "cute" / "__init__.py").write_text("def flash_attn_func(*a, **k): pass\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from wan22ctl.agent import attention as A
        A.install()
        try:
            from flash_attn import flash_attn_varlen_func
        except ModuleNotFoundError:
            FLASH_VER = None  # what wan/utils/prompt_extend.py does
        assert FLASH_VER is None
        assert A._flash_module("flash2") is None and A._flash_module("flash4") is not None
        import flash_attn
        assert not hasattr(flash_attn, "__version__")
        print("guarded")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "guarded" in res.stdout


def test_install_patches_wan_before_model_import(tmp_path):
    """A stand-in `wan` package with upstream's import shape: model.py binds the name at import."""
    pkg = tmp_path / "wan" / "modules"
    pkg.mkdir(parents=True)
    (tmp_path / "wan" / "__init__.py").write_text("from . import modules\n")
    (pkg / "__init__.py").write_text("from .attention import flash_attention\nfrom . import model\n")
    (pkg / "attention.py").write_text(textwrap.dedent("""
        def flash_attention(*a, **k):
            raise AssertionError("upstream flash_attention called")
        def attention(*a, **k):
            raise AssertionError("upstream attention called")
    """))
    (pkg / "model.py").write_text("from .attention import flash_attention\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from wan22ctl.agent import attention as A
        A.install()
        import wan, wan.modules.model as m, wan.modules.attention as a
        assert m.flash_attention is A.flash_attention, m.flash_attention
        assert wan.modules.flash_attention is A.flash_attention
        assert a.attention is A.attention
        print("patched")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "patched" in res.stdout


def test_animate_face_blocks_use_the_kits_backend(tmp_path):
    """Wan-Animate's face blocks call flash-attn 2's `flash_attn_func` directly, None where flash-attn
    2 is absent (found on an H200 with flash-attn-4 only: TypeError in the first step); the kit's
    backend takes its place, computing the same attention ([b, s, heads, dim] in and out)."""
    pkg = tmp_path / "wan" / "modules" / "animate"
    pkg.mkdir(parents=True)
    (tmp_path / "wan" / "__init__.py").write_text("")
    (tmp_path / "wan" / "modules" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "face_blocks.py").write_text(textwrap.dedent("""
        try:  # upstream's import (wan/modules/animate/face_blocks.py)
            from flash_attn import flash_attn_qkvpacked_func, flash_attn_func
        except ImportError:
            flash_attn_func = None
        def attention(q, k, v, batch_size=1, max_seqlen_q=None):
            x = flash_attn_func(q, k, v)
            return x.view(batch_size, max_seqlen_q, x.shape[-2], x.shape[-1])
    """))
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import torch
        from wan22ctl.agent import attention as A
        A.install()
        import wan.modules.animate.face_blocks as fb
        assert fb.flash_attn_func is A.face_flash_attn_func, fb.flash_attn_func
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 24, 4, 16, generator=g) for _ in range(3))
        out = fb.attention(q, k, v, batch_size=1, max_seqlen_q=24)
        ref = torch.nn.functional.scaled_dot_product_attention(
            *(t.to(torch.bfloat16).float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
        err = ((out.float() - ref).norm() / ref.norm()).item()
        assert out.shape == (1, 24, 4, 16) and err < 1e-2, err
        print("face blocks", err)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "face blocks" in res.stdout


# ---- GPU: every backend this machine has, bf16 tolerance, fresh inputs -------------------------

GPU_BACKENDS = ["auto", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "flash2", "flash3", "flash4"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", GPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(c) or "plain")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32in"])
def test_gpu_backend_matches_reference(backend, name, case, dtype):
    if not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    if name != "auto" and not A.available(name):
        pytest.skip(f"{name} not available here")
    backend(name)
    dev = "cuda"
    q, k, v = rand(2, 300, 8, 128, device=dev, dtype=dtype), rand(2, 300, 8, 128, device=dev, dtype=dtype), rand(2, 300, 8, 128, device=dev, dtype=dtype)
    kw = {key: (torch.tensor([min(x * 4, 300) for x in val], dtype=torch.int32) if key.endswith("lens") else val)
          for key, val in case.items()}
    ref = reference(q, k, v, **kw)
    out = A.flash_attention(q, k, v, **kw)
    torch.cuda.synchronize()
    assert out.dtype == dtype and torch.isfinite(out).all()
    err = rel_err(out, ref)
    assert err < 1e-2, (name, err)



@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_wan_shapes_all_backends_agree(backend):
    """One Wan cross-attention shape (512 text tokens, 40 heads) and a self-attention slice."""
    q = rand(1, 4096, 40, 128, device="cuda", dtype=torch.bfloat16)
    ctx = rand(1, 512, 40, 128, device="cuda", dtype=torch.bfloat16)
    ref = reference(q[:, :512].float(), ctx.float(), ctx.float(), k_lens=[512])
    for name in ("sdpa-cudnn", "sdpa-flash", "flash4", "auto"):
        if name != "auto" and not A.available(name):
            continue
        backend(name)
        out = A.flash_attention(q[:, :512], ctx, ctx, k_lens=torch.tensor([512]))
        assert rel_err(out, ref) < 1e-2


def test_host_settings_offer_every_backend():
    """`.env`'s WAN22_ATTENTION is validated on the host against the container side's choices."""
    from wan22ctl.settings import ATTENTION_CHOICES

    assert ATTENTION_CHOICES == A.CHOICES
