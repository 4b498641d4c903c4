"""VAE decode and save_video of one Wan2.2 video, timed apart (what follows the last denoising step).

Builds upstream's `Wan2_1_VAE` (the A14B VAE) from a checkpoint (synthetic ones from
`synth_checkpoints.py` will do: the decoder's cost does not depend on the weights), decodes random
latents of the video's shape inside the bf16 autocast that upstream's generate() wraps it in, and
times each variant twice in one process (first call: cuDNN's algorithm choice and allocations;
second: steady state). Then upstream's `save_video` on the decoded tensor, and its two halves: the
GPU->uint8->host conversion and the libx264 encode through imageio. Variants:

    default          upstream as is (fp32 VAE, cuDNN heuristics, TF32 convolutions)
    cudnn-benchmark  torch.backends.cudnn.benchmark = True (cuDNN times its algorithms per shape)
    bf16             VAE weights and latents in bf16 (not upstream's numerics: shown for the error)

Each variant's frames are compared with the default's as uint8 (max/mean abs difference).

Then decode + save as one phase, twice in the same process, with upstream's VAE: `sequential`
(upstream: decode, then save_video) and `streamed` (the kit's WAN22_STREAM_SAVE,
wan22ctl.agent.videosave: the libx264 writer fed chunk by chunk while the VAE decodes), with the
two MP4s' sha256 (the same file is the claim).

    python3 benchmarks/vae_bench.py --vae /tmp/ckpt/Wan2.2-T2V-A14B/Wan2.1_VAE.pth --size 1280*720

WAN22_DIR must name the Wan2.2 checkout. Writes vae-bench.json under $OUT (or /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

VARIANTS = ("default", "cudnn-benchmark", "bf16")


def _timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, round(time.perf_counter() - start, 3), round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _uint8(video: torch.Tensor) -> torch.Tensor:
    """[C, T, H, W] in [-1, 1] -> uint8 frames, as save_video quantizes them."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", required=True, help="Wan2.1_VAE.pth")
    parser.add_argument("--size", default="1280*720")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--fps", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, os.environ["WAN22_DIR"])
    from wan.modules.vae2_1 import Wan2_1_VAE
    from wan.utils.utils import save_video

    width, height = (int(x) for x in args.size.split("*"))
    device = torch.device("cuda", 0)
    vae = Wan2_1_VAE(vae_pth=args.vae, device=device)
    latent = torch.randn(16, (args.frames - 1) // 4 + 1, height // 8, width // 8, device=device,
                         generator=torch.Generator(device).manual_seed(0))
    rows, reference, video = [], None, None
    for name in args.variants.split(","):
        torch.backends.cudnn.benchmark = name == "cudnn-benchmark"
        model_dtype = torch.bfloat16 if name == "bf16" else torch.float32
        vae.model.to(model_dtype)
        z = latent.to(model_dtype)
        scale = [s.to(model_dtype) for s in (vae.mean, 1.0 / vae.std)]

        def decode():
            with torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():  # generate()'s context
                if name == "bf16":
                    return vae.model.decode(z.unsqueeze(0), scale).float().clamp_(-1, 1).squeeze(0)
                return vae.decode([z])[0]

        out, first, peak = _timed(decode)
        out, second, _ = _timed(decode)
        frames = _uint8(out)
        if reference is None:
            reference, video = frames, out
        diff = (frames.int() - reference.int()).abs()
        rows.append({"variant": name, "first_s": first, "second_s": second, "peak_gib": peak,
                     "max_abs_u8": int(diff.max()), "mean_abs_u8": round(float(diff.float().mean()), 4)})
        print(json.dumps(rows[-1]), flush=True)
        del out
    vae.model.to(torch.float32)
    torch.backends.cudnn.benchmark = False

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.mp4")
        _, save_s, _ = _timed(lambda: save_video(tensor=video[None], save_file=path, fps=args.fps, nrow=1,
                                                 normalize=True, value_range=(-1, 1)))
        size_mb = round(os.path.getsize(path) / 1e6, 1)
    # save_video's halves: its preprocessing to host uint8, then imageio's libx264 writer
    import imageio
    import torchvision

    def to_host():
        t = video[None].clamp(-1, 1)
        t = torch.stack([torchvision.utils.make_grid(u, nrow=1, normalize=True, value_range=(-1, 1))
                         for u in t.unbind(2)], dim=1).permute(1, 2, 3, 0)
        return (t * 255).type(torch.uint8).cpu()

    host, convert_s, _ = _timed(to_host)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        writer = imageio.get_writer(os.path.join(tmp, "v.mp4"), fps=args.fps, codec="libx264", quality=8)
        for frame in host.numpy():
            writer.append_data(frame)
        writer.close()
        encode_s = round(time.perf_counter() - start, 3)
    save = {"save_video_s": save_s, "to_host_s": convert_s, "encode_s": encode_s, "mp4_mb": size_mb}
    print(json.dumps(save), flush=True)
    phases = decode_and_save(vae, latent, args.fps)

    print(f"\n{args.size}, {args.frames} frames, latent {tuple(latent.shape)}, {torch.cuda.get_device_name(device)}")
    print(f"{'variant':<16} {'first s':>8} {'second s':>9} {'peak GiB':>9} {'max|d| u8':>10} {'mean|d| u8':>11}")
    for r in rows:
        print(f"{r['variant']:<16} {r['first_s']:>8.2f} {r['second_s']:>9.2f} {r['peak_gib']:>9.2f} "
              f"{r['max_abs_u8']:>10} {r['mean_abs_u8']:>11.4f}")
    print(f"save_video {save_s:.2f} s (to host uint8 {convert_s:.2f} s, libx264 {encode_s:.2f} s), {size_mb} MB")
    for r in phases:
        print(f"decode + save, {r['mode']:<10} {r['seconds']:>6.2f} s  sha256 {r['sha256'][:16]}")
    out_dir = os.environ.get("OUT", "/tmp")
    with open(os.path.join(out_dir, "vae-bench.json"), "w") as f:
        json.dump({"size": args.size, "frames": args.frames, "gpu": torch.cuda.get_device_name(device),
                   "decode": rows, "save": save, "decode_and_save": phases, "command": " ".join(sys.argv)}, f,
                  indent=1)


def decode_and_save(vae, latent, fps: int) -> list[dict]:
    """The phase after the last step, upstream's way and streamed (WAN22_STREAM_SAVE), one process."""
    import hashlib

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import wan.modules.vae2_1 as vae_module
    import wan.utils.utils as utils

    from wan22ctl.agent import videosave

    videosave.patch_vae(vae_module)
    videosave.patch_utils(utils)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videosave.use_directory(tmp)
        for mode in ("sequential", "streamed", "sequential", "streamed"):
            path = os.path.join(tmp, f"{mode}.mp4")

            def run():
                with torch.amp.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
                    if mode == "streamed":
                        with videosave.streaming(fps):
                            video = vae.decode([latent])[0]
                    else:
                        video = vae.decode([latent])[0]
                utils.save_video(tensor=video[None], save_file=path, fps=fps, nrow=1, normalize=True,
                                 value_range=(-1, 1))

            published = videosave.published()
            _, seconds, peak = _timed(run)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            rows.append({"mode": mode, "seconds": seconds, "peak_gib": peak, "sha256": digest,
                         "from_stream": videosave.published() > published})
            print(json.dumps(rows[-1]), flush=True)
            os.unlink(path)
    return rows


if __name__ == "__main__":
    main()
