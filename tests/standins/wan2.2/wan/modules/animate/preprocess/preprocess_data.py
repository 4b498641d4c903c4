#!/usr/bin/env python3
"""Stand-in for Wan2.2's wan/modules/animate/preprocess/preprocess_data.py (commit 42bf4cf).

The argparse block and the asserts after it are upstream's; instead of running the detectors,
SAM2 and FLUX it writes the files upstream's ProcessPipeline writes into --save_path: src_pose.mp4
and src_face.mp4 (and src_bg.mp4, src_mask.mp4 with --replace_flag) as a tiny valid MP4, and
src_ref.png as a copy of --refer_path (upstream copies it with shutil.copy). The checkpoints it
would load are opened, so a missing one fails as upstream's would. A video path containing
"standin-fail" exits 1 half way; "standin-short" writes a cut-short src_face.mp4 and exits 0. Stdlib only.
"""
import argparse
import os
import shutil


def _parse_args():
    parser = argparse.ArgumentParser(description="The preprocessing pipeline for Wan-animate.")
    parser.add_argument("--ckpt_path", type=str, default=None, help="The path to the preprocessing model's checkpoint directory. ")
    parser.add_argument("--video_path", type=str, default=None, help="The path to the driving video.")
    parser.add_argument("--refer_path", type=str, default=None, help="The path to the refererence image.")
    parser.add_argument("--save_path", type=str, default=None, help="The path to save the processed results.")
    parser.add_argument("--resolution_area", type=int, nargs=2, default=[1280, 720], help="The target resolution for processing, specified as [width, height].")
    parser.add_argument("--fps", type=int, default=30, help="The target FPS for processing the driving video. Set to -1 to use the video's original FPS.")
    parser.add_argument("--replace_flag", action="store_true", default=False, help="Whether to use replacement mode.")
    parser.add_argument("--retarget_flag", action="store_true", default=False, help="Whether to use pose retargeting. Currently only supported in animation mode")
    parser.add_argument("--use_flux", action="store_true", default=False, help="Whether to use image editing in pose retargeting.")
    parser.add_argument("--iterations", type=int, default=3, help="Number of iterations for mask dilation.")
    parser.add_argument("--k", type=int, default=7, help="Number of kernel size for mask dilation.")
    parser.add_argument("--w_len", type=int, default=1, help="The number of subdivisions for the grid along the 'w' dimension.")
    parser.add_argument("--h_len", type=int, default=1, help="The number of subdivisions for the grid along the 'h' dimension.")
    return parser.parse_args()


def _fixture():
    here = os.path.dirname(os.path.abspath(__file__))
    return next(p for p in ("/opt/standins/tiny.mp4", os.path.join(here, "..", "..", "..", "..", "..", "tiny.mp4"))
                if os.path.exists(p))


if __name__ == '__main__':
    args = _parse_args()
    print(vars(args))
    assert len(args.resolution_area) == 2, "resolution_area should be a list of two integers [width, height]"
    assert not args.use_flux or args.retarget_flag, "Image editing with FLUX can only be used when pose retargeting is enabled."
    for rel in ["pose2d/vitpose_h_wholebody.onnx", "det/yolov10m.onnx"] + (["sam2/sam2_hiera_large.pt"] if args.replace_flag else []):
        open(os.path.join(args.ckpt_path, rel), "rb").close()
    open(args.video_path, "rb").close()
    os.makedirs(args.save_path, exist_ok=True)
    names = ["src_pose.mp4", "src_face.mp4"] + (["src_bg.mp4", "src_mask.mp4"] if args.replace_flag else [])
    for i, name in enumerate(names):
        if i == 1 and "standin-fail" in args.video_path:
            raise RuntimeError("stand-in failure on request")
        shutil.copyfile(_fixture(), os.path.join(args.save_path, name))
    if "standin-short" in args.video_path:
        data = open(_fixture(), "rb").read()
        open(os.path.join(args.save_path, "src_face.mp4"), "wb").write(data[:len(data) // 2])
    shutil.copy(args.refer_path, os.path.join(args.save_path, "src_ref.png"))
