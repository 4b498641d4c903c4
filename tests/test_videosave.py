"""WAN22_STREAM_SAVE (wan22ctl.agent.videosave): the MP4 encoded while the VAE decodes.

Run as generate runs: `python -m wan22ctl.agent.wanrun` on a stand-in Wan checkout whose VAE
modules have upstream's decode loop (one decoder call per latent frame: 1 frame, then 4; the 5B
VAE unpatchifies 2x2 after it) and whose `save_video` is upstream's, line for line, over imageio's
libx264 writer. The streamed file must be byte for byte the file upstream's save writes, and a
video that is not what was decoded must go through upstream's save.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("imageio_ffmpeg")

from wan22ctl.agent import videosave  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VAE_COMMON = '''
import torch
import torch.nn.functional as F


class Decoder3d(torch.nn.Module):
    """Stand-in decoder: latent frame -> 1 video frame (first call) or 4, 8x the latent's size,
    values past [-1, 1] as a real decoder's are (the clamp matters)."""

    def __init__(self, out_channels):
        super().__init__()
        self.proj = torch.nn.Conv3d(4, out_channels, 1)
        g = torch.Generator().manual_seed(1)
        torch.nn.init.normal_(self.proj.weight, std=1.5, generator=g)
        torch.nn.init.normal_(self.proj.bias, std=0.5, generator=g)

    def forward(self, x, feat_cache=None, feat_idx=[0], first_chunk=False):
        feat_cache[0] = x if feat_cache[0] is None else feat_cache[0] + x
        y = self.proj(torch.sin(3 * feat_cache[0]))
        y = F.interpolate(y, scale_factor=(1 if feat_cache[1] is None else 4, 8, 8), mode="nearest")
        feat_cache[1] = True
        return y


class WanVAE_(torch.nn.Module):
    def __init__(self, out_channels=3):
        super().__init__()
        self.decoder = Decoder3d(out_channels)
        self.z_dim = 4

    def clear_cache(self):
        self._feat_map = [None, None]
        self._conv_idx = [0]

    def conv2(self, z):
        return z

    def decode(self, z, scale):  # upstream's loop (wan/modules/vae2_1.py WanVAE_.decode)
        self.clear_cache()
        z = z / scale[1] + scale[0]
        iter_ = z.shape[2]
        x = self.conv2(z)
        for i in range(iter_):
            self._conv_idx = [0]
            if i == 0:
                out = self.decoder(x[:, :, i:i + 1, :, :], feat_cache=self._feat_map, feat_idx=self._conv_idx)
            else:
                out_ = self.decoder(x[:, :, i:i + 1, :, :], feat_cache=self._feat_map, feat_idx=self._conv_idx)
                out = torch.cat([out, out_], 2)
        self.clear_cache()
        return OUT_POST(out)
'''

VAE2_1 = VAE_COMMON.replace("OUT_POST(out)", "out") + '''

class Wan2_1_VAE:
    def __init__(self):
        self.model = WanVAE_()
        self.scale = [0.1, 2.0]

    def decode(self, zs):
        return [self.model.decode(u.unsqueeze(0), self.scale).float().clamp_(-1, 1).squeeze(0) for u in zs]
'''

VAE2_2 = VAE_COMMON.replace("OUT_POST(out)", "unpatchify(out, patch_size=2)").replace(
    "def __init__(self, out_channels=3)", "def __init__(self, out_channels=12)") + '''

def unpatchify(x, patch_size):  # upstream's 5-D case (einops' "b (c r q) f h w -> b c f (h q) (w r)")
    b, crq, f, h, w = x.shape
    c = crq // (patch_size * patch_size)
    x = x.view(b, c, patch_size, patch_size, f, h, w)  # (c, r, q)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, f, h * patch_size, w * patch_size)


class Wan2_2_VAE:
    def __init__(self):
        self.model = WanVAE_()
        self.scale = [0.1, 2.0]

    def decode(self, zs):
        return [self.model.decode(u.unsqueeze(0), self.scale).float().clamp_(-1, 1).squeeze(0) for u in zs]
'''

UTILS = '''
import imageio
import torch


def save_video(tensor, save_file=None, fps=30, suffix=".mp4", nrow=8, normalize=True, value_range=(-1, 1)):
    """upstream's (wan/utils/utils.py), torchvision's make_grid spelled out for one image a frame"""
    try:
        tensor = tensor.clamp(min(value_range), max(value_range))
        frames = []
        for u in tensor.unbind(2):
            assert u.size(0) == 1
            if normalize:
                u = u.clone()
                low, high = value_range
                u.clamp_(min=low, max=high)
                u.sub_(low).div_(max(high - low, 1e-5))
            frames.append(u.squeeze(0))
        tensor = torch.stack(frames, dim=1).permute(1, 2, 3, 0)
        tensor = (tensor * 255).type(torch.uint8).cpu()
        writer = imageio.get_writer(save_file, fps=fps, codec="libx264", quality=8)
        for frame in tensor.numpy():
            writer.append_data(frame)
        writer.close()
    except Exception as e:
        print(f"save_video failed, error: {e}")
'''

PIPELINE = '''
import time
import types

import torch

from .modules.{vae} import {vae_class}


class {cls}:
    def __init__(self, fps):
        self.config = types.SimpleNamespace(sample_fps=fps)
        self.vae = {vae_class}()

    def generate(self, prompt, frame_num=81, size=(96, 64), seed=0):
        g = torch.Generator().manual_seed(seed)
        x0 = [torch.randn(4, (frame_num - 1) // 4 + 1, size[1] // 8 // {down}, size[0] // 8 // {down}, generator=g)]
        videos = self.vae.decode(x0)
        if "@@fail" in prompt:
            raise RuntimeError("failed after the decode")
        return videos[0]
'''

GENERATE = '''
import argparse, json, os, sys
import wan
from wan.text2video import WanT2V
from wan.textimage2video import WanTI2V
from wan.utils.utils import save_video

p = argparse.ArgumentParser()
p.add_argument("--task"); p.add_argument("--prompt"); p.add_argument("--save_file")
p.add_argument("--frame_num", type=int, default=21); p.add_argument("--sample_steps", type=int, default=4)
args = p.parse_args()
pipe = WanT2V(16) if args.task == "t2v-A14B" else WanTI2V(24)
try:
    video = pipe.generate(args.prompt, frame_num=args.frame_num)
except RuntimeError as exc:
    video = None
    print("FAILED", exc)
fps = pipe.config.sample_fps
if video is not None:
    if "@@alter" in args.prompt:
        video = video.clone(); video[:, -1] = -video[:, -1]  # not what was decoded
    if "@@fps" in args.prompt:
        fps += 1
    save_video(tensor=video[None], save_file=args.save_file, fps=fps, nrow=1, normalize=True, value_range=(-1, 1))
vs = sys.modules.get("wan22ctl.agent.videosave")
folder = os.path.dirname(args.save_file)
print("RESULT " + json.dumps({"published": vs.published() if vs else None,
                              "left": sorted(f for f in os.listdir(folder) if f.startswith(".wan22-stream"))}))
'''


@pytest.fixture
def wan_tree(tmp_path):
    root = tmp_path / "wan2.2"
    (root / "wan" / "modules").mkdir(parents=True)
    (root / "wan" / "utils").mkdir()
    (root / "wan" / "__init__.py").write_text("from . import text2video, textimage2video\n")
    (root / "wan" / "modules" / "__init__.py").write_text("")
    (root / "wan" / "modules" / "vae2_1.py").write_text(VAE2_1)
    (root / "wan" / "modules" / "vae2_2.py").write_text(VAE2_2)
    (root / "wan" / "utils" / "__init__.py").write_text("")
    (root / "wan" / "utils" / "utils.py").write_text(UTILS)
    (root / "wan" / "text2video.py").write_text(PIPELINE.format(vae="vae2_1", vae_class="Wan2_1_VAE", cls="WanT2V", down=1))
    (root / "wan" / "textimage2video.py").write_text(
        PIPELINE.format(vae="vae2_2", vae_class="Wan2_2_VAE", cls="WanTI2V", down=2))
    (root / "generate.py").write_text(GENERATE)
    return root


def _generate(root, out, task, prompt="a cat", **env):
    out.mkdir(exist_ok=True)
    save = out / "video.mp4"
    full = dict(os.environ, WAN22_DIR=str(root), PYTHONPATH=REPO, WAN22_FAST_SWAP="0",
                WAN22_SKIP_UNCOND="0", **env)  # both need A14B experts and guide scales the stand-in lacks
    res = subprocess.run([sys.executable, "-m", "wan22ctl.agent.wanrun", "--task", task, "--prompt", prompt,
                          "--save_file", str(save)], cwd=str(root), env=full, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(res.stdout.split("RESULT ", 1)[1].splitlines()[0])
    return result, (hashlib.sha256(save.read_bytes()).hexdigest() if save.exists() else None), res.stdout


@pytest.mark.parametrize("task", ["t2v-A14B", "ti2v-5B"])
def test_streamed_file_is_upstreams_file(wan_tree, tmp_path, task):
    streamed, digest, _ = _generate(wan_tree, tmp_path / "on", task)
    upstream, reference, _ = _generate(wan_tree, tmp_path / "off", task, WAN22_STREAM_SAVE="0")
    assert streamed == {"published": 1, "left": []}
    assert upstream["published"] is None  # switched off: the module is not even loaded
    assert digest is not None and digest == reference
    assert (tmp_path / "on" / "video.mp4").stat().st_mode == (tmp_path / "off" / "video.mp4").stat().st_mode


@pytest.mark.parametrize("marker", ["@@alter", "@@fps"])
def test_a_video_other_than_the_decoded_one_goes_through_upstreams_save(wan_tree, tmp_path, marker):
    streamed, digest, _ = _generate(wan_tree, tmp_path / "on", "t2v-A14B", f"a cat {marker}")
    _, reference, _ = _generate(wan_tree, tmp_path / "off", "t2v-A14B", f"a cat {marker}", WAN22_STREAM_SAVE="0")
    assert streamed == {"published": 0, "left": []}
    assert digest == reference


def test_failed_generate_leaves_no_stream(wan_tree, tmp_path):
    result, digest, stdout = _generate(wan_tree, tmp_path / "on", "t2v-A14B", "a cat @@fail")
    assert "FAILED failed after the decode" in stdout
    assert result == {"published": 0, "left": []} and digest is None


def test_uint8_conversion_is_save_videos():
    torch.manual_seed(0)
    video = torch.randn(1, 3, 9, 16, 24) * 1.5  # past [-1, 1] on purpose
    ref = []
    for u in video.clamp(-1, 1).unbind(2):  # save_video, then make_grid(normalize=True, value_range=(-1, 1))
        u = u.clone()
        u.clamp_(min=-1, max=1)
        u.sub_(-1).div_(max(1 - (-1), 1e-5))
        ref.append(u.squeeze(0))
    ref = (torch.stack(ref, dim=1).permute(1, 2, 3, 0) * 255).type(torch.uint8)
    assert torch.equal(videosave.to_uint8(video)[0], ref)
    assert torch.equal(videosave.to_uint8(video.to(torch.bfloat16))[0],
                       videosave.to_uint8(video.to(torch.bfloat16).float())[0])


def test_a_writer_that_cannot_start_leaves_the_save_to_upstream(tmp_path, monkeypatch):
    """imageio missing (or failing) in the writer thread: the stream reports it and is not published."""
    import builtins

    real_import = builtins.__import__

    def no_imageio(name, *args, **kwargs):
        if name == "imageio":
            raise ModuleNotFoundError("No module named 'imageio'", name="imageio")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_imageio)
    stream = videosave.Stream(16, str(tmp_path))
    chunk = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    stream.add(chunk)
    stream.complete = True
    target = tmp_path / "video.mp4"
    assert videosave.publish(stream, chunk, str(target), 16, 1, True, (-1, 1)) is False
    assert "imageio" in str(stream.error) and not target.exists()
    stream.discard()


def test_stream_overlaps_the_decode(tmp_path):
    """The writer consumes chunks while frames keep coming: the file grows before the stream closes."""
    stream = videosave.Stream(16, str(tmp_path))
    g = torch.Generator().manual_seed(0)
    sizes = []
    for i in range(40):
        stream.add(torch.rand(1, 3, 1 if i == 0 else 4, 128, 128, generator=g) * 2 - 1)
        sizes.append(os.path.getsize(stream.path))
        import time

        time.sleep(0.02)
    assert sizes[-1] > 0  # encoded output already written while frames were still being added
    stream.complete = True
    stream.close()
    assert stream.error is None and os.path.getsize(stream.path) > sizes[-1]
    stream.discard()
    assert not os.path.exists(stream.path)
