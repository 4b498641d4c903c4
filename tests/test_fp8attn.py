"""FP8 self-attention (agent/fp8attn.py): its definition against exact attention on the CPU, when
attention.py routes to it, and the Triton kernels against the definition on a GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from wan22ctl.agent import attention, fp8attn  # noqa: E402

GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def exact(q, k, v, scale=None):
    out = F.scaled_dot_product_attention(q.double().transpose(1, 2), k.double().transpose(1, 2),
                                         v.double().transpose(1, 2), scale=scale)
    return out.transpose(1, 2)


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def dit_like(length, heads=2, dim=64, seed=0, temperature=2.0, key_offset=4.0):
    """Peaked rows and keys with a per-channel offset, as DiT self-attention has."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, length, heads, dim, generator=g) * temperature
    k = torch.randn(1, length, heads, dim, generator=g) + key_offset * torch.randn(1, 1, heads, dim, generator=g)
    v = torch.randn(1, length, heads, dim, generator=g)
    return q.bfloat16(), k.bfloat16(), v.bfloat16()


@pytest.mark.parametrize("length,block_m,block_n", [(300, 64, 32), (256, 128, 128), (129, 64, 64)])
def test_definition_is_close_to_exact_attention(length, block_m, block_n):
    q, k, v = dit_like(length)
    out = fp8attn.reference(q, k, v, block_m=block_m, block_n=block_n)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    err = rel(out, exact(q, k, v))
    # V and P in e4m3 (3 mantissa bits) cost a few percent of the output's norm, far from a wrong softmax
    assert err < 0.045, err
    wrong_softmax = rel(exact(q, k, v, scale=0.5 * 64 ** -0.5), exact(q, k, v))
    assert wrong_softmax > 3 * err


def dequantized(x, block, fmt="int8"):
    x8, scale = fp8attn.quantize_blockwise(x, block, fmt)
    b, length, n, c = x.shape
    return (x8.float() * scale[..., None, None]).reshape(b, n, -1, c)[:, :, :length].transpose(1, 2)


def test_key_smoothing_is_what_keeps_offset_keys_accurate():
    q, k, v = dit_like(256, key_offset=40.0)
    ex = exact(q, k, v)
    smoothed = rel(fp8attn.reference(q, k, v, block_m=64, block_n=64), ex)
    # without smoothing the keys' shared offset sets every K block's scale
    plain = rel(exact(q, dequantized(k, 64), v), ex)
    assert smoothed < 0.045 and plain > 2 * smoothed, (smoothed, plain)


def test_int8_scores_are_more_accurate_than_e4m3():
    q, k, v = dit_like(300, temperature=3.0)
    ex = exact(q, k, v)
    errors = {fmt: rel(exact(dequantized(q, 64, fmt), k, v), ex) for fmt in fp8attn.QK_FORMATS}
    assert errors["int8"] * 2 < errors["fp8"], errors
    assert rel(fp8attn.reference(q, k, v, block_m=64, block_n=64), ex) < rel(
        fp8attn.reference(q, k, v, block_m=64, block_n=64, qk_format="fp8"), ex)


def test_softmax_scale_is_honoured():
    q, k, v = dit_like(200)
    out = fp8attn.reference(q, k, v, softmax_scale=0.05, block_m=64, block_n=64)
    assert rel(out, exact(q, k, v, scale=0.05)) < 0.045


def test_blockwise_scales_cover_each_block():
    x = torch.randn(1, 130, 3, 16)
    x[0, 129, 1, 0] = 1000.0  # the last, partial block of head 1
    q8, scale = fp8attn.quantize_blockwise(x, 64)
    assert q8.shape == (1, 3, 3, 64, 16) and q8.dtype == torch.int8 and scale.shape == (1, 3, 3)
    assert float(scale[0, 1, 2]) == pytest.approx(1000.0 / 127) and float(scale[0, 1, 0]) < 0.1
    assert float(q8[0, :, 2, 2:].float().abs().max()) == 0  # padding rows quantize to zero
    back = dequantized(x, 64)
    assert rel(back[:, :128], x[:, :128]) < 0.02


@pytest.mark.parametrize("dtype,switch,mode", [
    ("fp8", None, "auto"),  # the default: cuDNN's FP8 SDPA where it runs (`resolve`)
    ("fp8", "triton", "triton"), ("fp8", "cudnn", "cudnn"), ("fp8", "0", None), ("fp8", "off", None),
    ("bf16", "triton", None), (None, "cudnn", None),  # only beside FP8 weights
])
def test_mode_follows_the_switch_and_the_dtype(monkeypatch, dtype, switch, mode):
    for name, value in (("WAN22_DTYPE", dtype), (fp8attn.ENV_VAR, switch)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert fp8attn.mode() == mode
    if mode != "auto":  # an explicit switch is what runs
        assert fp8attn.resolve(torch.device("cpu")) == mode


@pytest.mark.parametrize("dtype", ["fp8", "bf16"])
def test_mode_rejects_unknown(monkeypatch, dtype):
    monkeypatch.setenv("WAN22_DTYPE", dtype)
    monkeypatch.setenv(fp8attn.ENV_VAR, "sage")
    with pytest.raises(ValueError, match="WAN22_FP8_ATTENTION='sage': use auto, off, triton, cudnn"):
        fp8attn.mode()


def test_missing_package_is_named_with_the_fix(monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.setenv(fp8attn.ENV_VAR, "cudnn")
    monkeypatch.setitem(fp8attn._cache, "cudnn", None)  # as where nvidia-cudnn-frontend is absent
    assert fp8attn.missing() == ("WAN22_FP8_ATTENTION=cudnn needs the nvidia-cudnn-frontend package: "
                                 "pip install nvidia-cudnn-frontend")
    monkeypatch.setenv(fp8attn.ENV_VAR, "auto")  # auto falls back to bf16 attention instead
    assert fp8attn.missing() is None
    monkeypatch.setenv(fp8attn.ENV_VAR, "off")
    assert fp8attn.missing() is None


def test_auto_is_bf16_attention_off_hopper_or_without_the_package(monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.delenv(fp8attn.ENV_VAR, raising=False)
    assert fp8attn.mode() == "auto"
    assert fp8attn.resolve(torch.device("cpu")) is None
    if torch.cuda.is_available():
        monkeypatch.setitem(fp8attn._cache, "cudnn", None)  # as where nvidia-cudnn-frontend is absent
        assert fp8attn.resolve(torch.device("cuda", 0)) is None


def test_cpu_tensors_and_masks_never_take_fp8():
    q, k, v = dit_like(fp8attn.MIN_KEYS, dim=128, heads=1)
    assert not fp8attn.applies(q, k, v, False, (-1, -1), 0.0, "triton")  # CPU


def test_attention_on_cpu_stays_exact_under_fp8_dtype(monkeypatch):
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.setenv(attention.ENV_VAR, "sdpa-math")
    attention.reset()
    q, k, v = dit_like(64)
    out = attention.flash_attention(q, k, v)
    assert rel(out, exact(q, k, v)) < 1e-2


@pytest.mark.gpu
@GPU_ONLY
@pytest.mark.parametrize("length,dim", [(fp8attn.MIN_KEYS + 77, 128), (5000, 64)])
def test_gpu_kernels_match_the_definition(length, dim):
    if tuple(torch.cuda.get_device_capability()) not in fp8attn.CAPABILITIES or fp8attn._kernels() is None:
        pytest.skip("needs sm_89/sm_90 and Triton")
    q, k, v = (x.cuda() for x in dit_like(length, heads=3, dim=dim))
    bm, bn, _, _ = fp8attn.config(q.device)
    out = fp8attn.attention(q, k, v)
    assert out.shape == q.shape and bool(torch.isfinite(out).all())
    ref = fp8attn.reference(q.cpu(), k.cpu(), v.cpu(), block_m=bm, block_n=bn)
    assert rel(out.cpu(), ref) < 1e-2
    assert rel(out.cpu(), exact(q.cpu(), k.cpu(), v.cpu())) < 0.045


@pytest.mark.gpu
@GPU_ONLY
def test_gpu_attention_routes_self_attention_to_fp8(monkeypatch):
    if tuple(torch.cuda.get_device_capability()) not in fp8attn.CAPABILITIES or fp8attn._kernels() is None:
        pytest.skip("needs sm_89/sm_90 and Triton")
    q, k, v = (x.cuda() for x in dit_like(fp8attn.MIN_KEYS, heads=2, dim=128))
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.setenv(fp8attn.ENV_VAR, "triton")
    attention.reset()
    routed = attention.flash_attention(q, k, v)
    assert torch.equal(routed, fp8attn.attention(q, k, v))
    monkeypatch.setenv(fp8attn.ENV_VAR, "0")
    assert not torch.equal(attention.flash_attention(q, k, v), routed)
    short = q[:, :512].contiguous()  # cross-attention lengths stay bf16
    assert rel(attention.flash_attention(q, short, short), exact(q, short, short).to(q.device)) < 1e-2


@pytest.mark.gpu
@GPU_ONLY
def test_gpu_cudnn_fp8_attention_is_close(monkeypatch):
    if tuple(torch.cuda.get_device_capability()) != (9, 0) or fp8attn._cudnn() is None:
        pytest.skip("needs Hopper and nvidia-cudnn-frontend")
    q, k, v = (x.cuda() for x in dit_like(fp8attn.MIN_KEYS, heads=2, dim=128))
    out = fp8attn.attention_cudnn(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    # per-tensor e4m3 scales and an e4m3 output: about twice the Triton path's difference
    assert rel(out.cpu(), exact(q.cpu(), k.cpu(), v.cpu())) < 0.12


@pytest.mark.gpu
@GPU_ONLY
@pytest.mark.parametrize("length", [fp8attn.MIN_KEYS + 80, 17 * fp8attn.KEY_MULTIPLE])
def test_gpu_cudnn_key_tail_is_merged_exactly(length):
    """cuDNN takes the first KEY_MULTIPLE-multiple of the keys; the tail (80 keys here) is attended
    to in bf16 and merged by its log-sum-exp. Queries and tail keys share a strong direction, so the
    tail carries most of the weight: leaving it out fails the test."""
    if tuple(torch.cuda.get_device_capability()) != (9, 0) or fp8attn._cudnn() is None:
        pytest.skip("needs Hopper and nvidia-cudnn-frontend")
    q, k, v = dit_like(length, heads=2, dim=128)
    main = length - length % fp8attn.KEY_MULTIPLE
    u = torch.randn(1, 1, 2, 128, generator=torch.Generator().manual_seed(1))
    u = 4.0 * u / u.norm(dim=-1, keepdim=True)
    q = (q.float() + 3 * u).to(q.dtype)
    k[:, main:] = (k[:, main:].float() + 3 * u).to(k.dtype)
    out = fp8attn.attention_cudnn(q.cuda(), k.cuda(), v.cuda()).cpu()
    want = exact(q, k, v)
    assert rel(out, want) < 0.12
    if main < length:
        assert rel(exact(q, k[:, :main], v[:, :main]), want) > 0.5  # the tail matters here


@pytest.mark.gpu
@GPU_ONLY
def test_gpu_auto_is_cudnn_on_hopper(monkeypatch):
    """`--dtype fp8` alone (WAN22_FP8_ATTENTION unset: auto) runs self-attention through cuDNN."""
    if tuple(torch.cuda.get_device_capability()) != (9, 0) or fp8attn._cudnn() is None:
        pytest.skip("needs Hopper and nvidia-cudnn-frontend")
    q, k, v = (x.cuda() for x in dit_like(fp8attn.MIN_KEYS + 80, heads=2, dim=128))
    monkeypatch.setenv("WAN22_DTYPE", "fp8")
    monkeypatch.delenv(fp8attn.ENV_VAR, raising=False)
    attention.reset()
    assert fp8attn.resolve(q.device) == "cudnn"
    routed = attention.flash_attention(q, k, v)
    assert fp8attn.ran() == "cudnn"
    assert rel(routed, fp8attn.attention_cudnn(q, k, v)) < 1e-3
    assert rel(routed.cpu(), exact(q.cpu(), k.cpu(), v.cpu())) < 0.12
