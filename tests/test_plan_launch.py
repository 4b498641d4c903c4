"""The launch plan and the pieces of the container side that need no container (pure and fast).

Validation of every field, the GPU/flag matrix (1/2/3/4/8 GPUs x 24/48/80/141 GB x each task),
the exact argv, host-RAM checks, and the launcher's MP4 check, naming, progress parsing and
path mapping. The CLI tests here point DOCKER_HOST at nothing: a validation error must come
out (exit 2, one line) before Docker is touched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wan22ctl import catalog
from wan22ctl.agent import outputs
from wan22ctl.agent import progress as upstream_progress
from wan22ctl.errors import UserError
from wan22ctl.plan.inventory import Runtime
from wan22ctl.plan.launch import LaunchPlan, build_request, plan_launch, staged_files, synthetic_inventory

REPO = Path(__file__).resolve().parents[1]
TINY_MP4 = REPO / "tests" / "standins" / "tiny.mp4"


def req(task="t2v-A14B", prompt="a red fox", **kw):
    kw.setdefault("seed", 42)
    if task == "i2v-A14B":
        kw.setdefault("image", "/host/cat.jpg")
    return build_request(task, prompt, file_exists=lambda p: p.startswith("/host/"), **kw)


def plan(task="t2v-A14B", count=1, mem=80.0, ram=None, **kw):
    return plan_launch(req(task, **kw), synthetic_inventory(count, mem), ram, run_id="run1")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="t2v-14B"), "unknown task 't2v-14B'; choose one of t2v-A14B, i2v-A14B, ti2v-5B"),
    (dict(task="ti2v-5B", size="1280*720"), "size 1280*720 is not supported by ti2v-5B; choose one of 704*1280, 1280*704"),
    (dict(size="1024*704"), "size 1024*704 is not supported by t2v-A14B"),
    (dict(frame_num=80), "--frame-num 80 is not of the form 4n+1; use 77 or 81"),
    (dict(frame_num=79), "--frame-num 79 is not of the form 4n+1; use 77 or 81"),  # odd, but 4n+3
    (dict(frame_num=0), "--frame-num 0 is not of the form 4n+1"),
    (dict(sample_steps=0), "--steps 0 must be at least 1"),
    (dict(sample_shift=0), "--shift 0 must be greater than 0"),
    (dict(guide_scale=-1), "--guide-scale -1 must be 0 or more"),
    (dict(seed=-5), "--seed -5 must be between 0"),
    (dict(solver="heun"), "unknown solver 'heun'; choose one of unipc, dpm++, euler"),
    (dict(offload="maybe"), "--offload 'maybe'; choose auto, on, off or blocks"),
    (dict(prompt="   "), "a prompt is required"),
    (dict(prompt=None), "a prompt is required"),
    (dict(image="/host/cat.jpg"), "t2v-A14B takes no image"),
    (dict(task="i2v-A14B", image=None), "i2v-A14B needs --image PATH"),
    (dict(task="i2v-A14B", image="/elsewhere/cat.jpg"), "image /elsewhere/cat.jpg does not exist"),
    (dict(task="ti2v-5B", image="/elsewhere/cat.jpg"), "image /elsewhere/cat.jpg does not exist"),
    (dict(gpus="two"), "--gpus 'two': must be all, a count (e.g. 2) or indices"),
    (dict(gpus="0"), "--gpus '0': a count must be at least 1"),
    (dict(gpus="1,1"), "an index appears twice"),
])
def test_each_invalid_request_is_one_user_error(kwargs, message):
    task = kwargs.pop("task", "t2v-A14B")
    prompt = kwargs.pop("prompt", "a red fox")
    if task == "i2v-A14B" and "image" in kwargs and kwargs["image"] is None:
        kwargs.pop("image")
        with pytest.raises(UserError) as err:
            build_request(task, prompt, seed=1, file_exists=lambda p: True)
    else:
        with pytest.raises(UserError) as err:
            req(task, prompt, **kwargs)
    assert message in err.value.message
    assert "\n" not in err.value.message
    assert err.value.exit_code == 2


def test_defaults_come_from_the_catalog_and_sizes_accept_x():
    r = req("ti2v-5B")
    assert (r.size, r.frame_num, r.sample_steps, r.sample_shift, r.guide_scale) == ("1280*704", 121, 50, 5.0, None)
    assert req("t2v-A14B", size="832x480").size == "832*480"
    r = req("i2v-A14B")
    assert (r.size, r.frame_num, r.sample_steps, r.sample_shift) == ("1280*720", 81, 40, 5.0)
    r = req("t2v-A14B")
    assert (r.size, r.frame_num, r.sample_steps, r.sample_shift, r.guide_scale) == ("1280*720", 81, 40, 12.0, None)


def test_t2v_defaults_reach_the_argv():
    argv = list(plan("t2v-A14B", 1, 80).argv)
    flags = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert (flags["--size"], flags["--frame_num"], flags["--sample_steps"], flags["--sample_shift"]) == \
        ("1280*720", "81", "40", "12")
    assert "--sample_guide_scale" not in argv  # upstream's (3.0, 4.0) pair comes from its own config


# --------------------------------------------------------------------------- the matrix

# (task, visible GPUs, GB) -> (processes, FSDP, --offload_model, --convert_model_dtype, --t5_cpu, fits)
# Single GPU: README commands (A14B: offload+convert on 80 GB; 5B: all three on 24 GB, none on 80 GB);
# H200 keeps T5 resident; A14B below 80 GB swaps whole experts (48 GB) or streams the DiT blocks
# (24 GB) with T5 on the GPU to encode (plan/lowmem.py, tests/test_plan_lowmem.py). Multi-GPU: FSDP +
# Ulysses, offloading only when both experts would not fit, one GPU with the low-memory placement
# where the sharded experts do not fit either; 5B on 24 GB cards uses the efficiency table's non-FSDP flags.
A14B = {
    (1, 24): (1, False, True, True, False, True),
    (1, 48): (1, False, True, True, False, True),
    (1, 80): (1, False, True, True, False, True),
    (1, 141): (1, False, False, True, False, True),
    (2, 24): (1, False, True, True, False, True),
    (2, 48): (1, False, True, True, False, True),
    (2, 80): (2, True, True, False, False, True),
    (2, 141): (2, True, False, False, False, True),
    (3, 24): (1, False, True, True, False, True),
    (3, 48): (1, False, True, True, False, True),
    (3, 80): (2, True, True, False, False, True),
    (3, 141): (2, True, False, False, False, True),
    (4, 24): (1, False, True, True, False, True),
    (4, 48): (4, True, True, False, False, True),
    (4, 80): (4, True, False, False, False, True),
    (4, 141): (4, True, False, False, False, True),
    (8, 24): (1, False, True, True, False, True),
    # 8 x 40 GB: both experts resident need ~36.2 GB per GPU, inside the 10 % kept free: offload.
    (8, 40): (8, True, True, False, False, True),
    (8, 48): (8, True, False, False, False, True),
    (8, 80): (8, True, False, False, False, True),
    (8, 141): (8, True, False, False, False, True),
}
TI2V = {
    (1, 24): (1, False, True, True, True, True),
    (1, 48): (1, False, True, True, False, True),
    (1, 80): (1, False, False, False, False, True),
    (1, 141): (1, False, False, False, False, True),
    **{(n, 24): (n, False, True, True, True, True) for n in (2, 3, 4, 8)},
    **{(n, m): (n, True, False, False, False, True) for n in (2, 3, 4, 8) for m in (48, 80, 141)},
}
MATRIX = [("t2v-A14B", k, v) for k, v in A14B.items()] + [("i2v-A14B", k, v) for k, v in A14B.items()] + \
         [("ti2v-5B", k, v) for k, v in TI2V.items()]


@pytest.mark.parametrize("task, gpus, expected", MATRIX, ids=[f"{t}-{n}x{m}" for t, (n, m), _ in MATRIX])
def test_plan_matrix(task, gpus, expected):
    count, mem = gpus
    p = plan(task, count, mem)
    nproc, fsdp, offload, convert, t5_cpu, fits = expected
    assert (p.nproc, p.dit_fsdp, p.offload_model, p.convert_model_dtype, p.t5_cpu, p.fits) == expected
    argv = list(p.argv)
    assert argv[argv.index("--offload_model") + 1] == str(offload)
    assert ("--convert_model_dtype" in argv) == convert
    assert ("--t5_cpu" in argv) == t5_cpu
    assert ("--dit_fsdp" in argv) == fsdp and ("--t5_fsdp" in argv) == fsdp
    if nproc == 1:
        assert argv[:3] == ["python3", "-m", "wan22ctl.agent.wanrun"] and "--ulysses_size" not in argv
        assert p.launcher == "python"
    else:
        assert argv[:5] == ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "wan22ctl.agent.wanrun"]
        assert argv[argv.index("--ulysses_size") + 1] == str(nproc)
        assert catalog.TASKS[task].num_heads % nproc == 0
    assert p.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, range(nproc)))
    assert p.reasons and all(isinstance(r, str) and r for r in p.reasons)
    assert bool(p.warnings) == (not fits)
    if count == 3 and nproc == 2:
        assert any("2 of 3 GPUs" in r for r in p.reasons)


def test_official_table_peaks_are_reproduced():
    # A14B 720P: 59.8 GB on one GPU, 51.7 on four, 37.0 on eight (H100 rows); 5B: 22.9 on a 4090.
    assert plan("t2v-A14B", 1, 80).est_peak_gpu_gb == pytest.approx(59.8, abs=1)
    assert plan("t2v-A14B", 4, 141).est_peak_gpu_gb == pytest.approx(51.7, abs=1.5)
    assert plan("t2v-A14B", 8, 80).est_peak_gpu_gb == pytest.approx(37.0, abs=1.5)
    assert plan("t2v-A14B", 1, 80, size="832*480").est_peak_gpu_gb == pytest.approx(41.3, abs=1)
    assert plan("ti2v-5B", 1, 24).est_peak_gpu_gb == pytest.approx(22.9, abs=0.5)


def test_one_big_gpu_keeps_both_experts_resident():
    # H200: both bf16 experts (2 x 28.6 GB) and T5 stay on the GPU (agent.speedups does the same
    # arithmetic with the real free memory); an 80 GB card forced to --offload off does not.
    h200 = plan("t2v-A14B", 1, 141)
    assert any("both bf16 experts" in r for r in h200.reasons)
    assert h200.est_peak_gpu_gb == pytest.approx(2 * 28.6 + 11.4 + 31.2, abs=0.2) and h200.fits
    forced = plan("t2v-A14B", 1, 80, offload="off")
    assert forced.est_peak_gpu_gb == pytest.approx(28.6 + 11.4 + 31.2, abs=0.2)
    assert not any("both bf16 experts" in r for r in forced.reasons)


def test_a_480p_size_fits_where_720p_does_not():
    assert not plan("t2v-A14B", 1, 16).fits
    assert plan("t2v-A14B", 1, 16, size="832*480").fits


def test_exact_argv():
    p = plan("i2v-A14B", 1, 80, prompt="a cat's \"smile\" * 2", size="480*832", frame_num=41, sample_steps=12,
             sample_shift=3.5, guide_scale=4.0, solver="dpm++", seed=7)
    assert list(p.argv) == [
        "python3", "-m", "wan22ctl.agent.wanrun", "--task", "i2v-A14B", "--size", "480*832",
        "--ckpt_dir", "/opt/checkpoints/Wan2.2-I2V-A14B", "--frame_num", "41", "--sample_steps", "12",
        "--sample_shift", "3.5", "--sample_solver", "dpm++", "--base_seed", "7", "--sample_guide_scale", "4",
        "--image", "/opt/outputs/.staging/run1/cat.jpg", "--offload_model", "True", "--convert_model_dtype",
        "--prompt", "a cat's \"smile\" * 2", "--save_file", "/opt/outputs/.partial-run1.mp4",
    ]
    assert p.cwd == "/workspace/wan2.2" and p.save_file == "/opt/outputs/.partial-run1.mp4"
    assert LaunchPlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_explicit_gpu_choices():
    inv = synthetic_inventory(4, 80)
    with pytest.raises(UserError, match=r"--gpus 3: t2v-A14B splits its 40 attention heads .* usable here: 1, 2, 4"):
        plan_launch(req(gpus="3"), inv, None, run_id="r")
    assert plan_launch(req("ti2v-5B", gpus="3"), inv, None, run_id="r").nproc == 3
    p = plan_launch(req(gpus="0,2"), inv, None, run_id="r")
    assert p.gpus == (0, 2) and p.env["CUDA_VISIBLE_DEVICES"] == "0,2" and p.nproc == 2
    with pytest.raises(UserError, match="no GPU with index 7"):
        plan_launch(req(gpus="0,7"), inv, None, run_id="r")
    with pytest.raises(UserError, match="only 4 GPU"):
        plan_launch(req(gpus="8"), inv, None, run_id="r")
    with pytest.raises(UserError, match="no GPU is visible"):
        plan_launch(req(), [], None, run_id="r")


def test_host_ram_limits_the_rank_count():
    p = plan("t2v-A14B", 8, 80, ram=300)
    assert p.nproc == 5 and p.host_ram_need_gb <= 300  # 5 divides 40 heads; 5 x 57 GB fits in 300
    assert any("host RAM" in r and "8 ranks" in r for r in p.reasons)
    fixed = plan_launch(req(gpus="8"), synthetic_inventory(8, 80), 300, run_id="r")
    assert fixed.nproc == 8 and any("host RAM" in w for w in fixed.warnings)
    tiny = plan("t2v-A14B", 1, 80, ram=32)
    assert any("may be killed" in w for w in tiny.warnings)
    assert any("host RAM not checked" in r for r in plan("t2v-A14B", 1, 80).reasons)


def test_offload_flag_overrides_auto():
    assert plan("ti2v-5B", 1, 80, offload="on").offload_model is True
    assert plan("t2v-A14B", 1, 80, offload="off").offload_model is False
    assert any("--offload on" in r for r in plan("ti2v-5B", 1, 80, offload="on").reasons)


def test_wan_starts_through_the_bootstrap_unless_the_runtime_says_not_to():
    r = req("ti2v-5B")
    one = plan_launch(r, synthetic_inventory(1, 80), None, run_id="r", attention="sdpa")
    assert list(one.argv[:3]) == ["python3", "-m", "wan22ctl.agent.wanrun"] and one.runtime.bootstrap
    assert one.env["WAN22_ATTENTION"] == "sdpa" and one.env["WAN22_COMPILE"] == "auto"
    assert one.env["PYTHONPATH"] == "/opt/wan22ctl-src"  # the image's kit source, for Wan's python
    assert plan_launch(r, synthetic_inventory(1, 80), None, run_id="r", compile_mode="0").env["WAN22_COMPILE"] == "0"
    many = plan_launch(r, synthetic_inventory(2, 80), None, run_id="r", attention="flash3")
    assert list(many.argv[:5]) == ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "wan22ctl.agent.wanrun"]
    plain = plan_launch(r, synthetic_inventory(2, 80), None, run_id="r", attention="flash3",
                        runtime=Runtime(bootstrap=False))
    assert plain.argv[3] == "generate.py" and "PYTHONPATH" not in plain.env
    assert not any("wanrun" in reason for reason in plain.reasons)
    # what the plan says is what runs: a re-rendered plan is the same decision, another argv
    assert many.for_runtime(Runtime(bootstrap=False)).argv == plain.argv
    assert plain.for_runtime(Runtime()).argv == many.argv and plain.for_runtime(Runtime()).reasons == many.reasons


# --------------------------------------------------------------------------- container side, pure parts


def test_mp4_check(tmp_path):
    assert outputs.check_mp4(str(TINY_MP4)) is None
    data = TINY_MP4.read_bytes()
    cases = {
        "empty": (b"", "empty"),
        "truncated": (data[:-100], "runs past the end"),
        "garbage": (b"\x00" * 64, "garbage box type"),
        "ftyp only": (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 12, "no moov"),
        "no ftyp": (data[32:], "no ftyp"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(content)
        problem = outputs.check_mp4(str(path))
        assert problem and message in problem, (name, problem)
    assert outputs.check_mp4(str(tmp_path / "missing.mp4")) == "no file was written"


def test_publish_never_overwrites(tmp_path):
    (tmp_path / "stem.mp4").write_bytes(b"precious")
    (tmp_path / "stem-2.json").write_text("{}")  # a sidecar without video still reserves its stem
    temp = tmp_path / ".partial-x.mp4"
    temp.write_bytes(b"new")
    final = outputs.publish(str(temp), str(tmp_path), "stem")
    assert os.path.basename(final) == "stem-3.mp4" and Path(final).read_bytes() == b"new"
    assert (tmp_path / "stem.mp4").read_bytes() == b"precious" and not temp.exists()
    sidecar = outputs.write_sidecar(final, {"a": 1})
    assert sidecar.endswith("stem-3.json") and json.loads(Path(sidecar).read_text()) == {"a": 1}
    with pytest.raises(FileExistsError):
        outputs.write_sidecar(final, {"a": 2})


@pytest.mark.parametrize("code", [errno.EPERM, errno.EXDEV, errno.ENOTSUP])
def test_publish_without_hard_links_never_overwrites(tmp_path, monkeypatch, code):
    """Where the filesystem refuses hard links (some network filesystems, FUSE), the fallback must
    still never replace an existing video or sidecar."""
    def refuse(src, dst, **kw):
        raise OSError(code, os.strerror(code), src, None, dst)

    monkeypatch.setattr(os, "link", refuse)
    (tmp_path / "stem.mp4").write_bytes(b"precious")
    temp = tmp_path / ".partial-x.mp4"
    temp.write_bytes(b"new")
    final = outputs.publish(str(temp), str(tmp_path), "stem")
    assert os.path.basename(final) == "stem-2.mp4" and Path(final).read_bytes() == b"new"
    assert (tmp_path / "stem.mp4").read_bytes() == b"precious" and not temp.exists()
    outputs.write_sidecar(final, {"a": 1})
    with pytest.raises(FileExistsError):
        outputs.write_sidecar(final, {"a": 2})
    assert json.loads((tmp_path / "stem-2.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem-2.json", "stem-2.mp4", "stem.mp4"]


def test_final_names_are_readable_and_shell_safe():
    from datetime import datetime

    stem = outputs.final_stem("t2v-A14B", "1280*720", "Two cats / boxing * on stage!", datetime(2026, 1, 2, 3, 4, 5))
    assert stem == "t2v-A14B_1280x720_two-cats-boxing-on-stage_20260102-030405"
    assert outputs.slug("视频中的人") == "视频中的人" and outputs.slug("***") == "video"


def test_progress_tracker_reads_upstream_output(capsys):
    clock = iter(range(100)).__next__
    t = upstream_progress.ProgressTracker(clock=clock)
    t.on_stdout("[2026-01-01 10:00:00,000] INFO: Creating WanT2V pipeline.")
    # diffusers' shard-loading bar (seen on the GPU with real-layout checkpoints) is not a step
    assert t.on_stderr("Loading checkpoint shards:  50%|█████     | 3/6 [00:02<00:02,  1.20it/s]")
    assert t.on_stderr("Loading checkpoint shards: 100%|██████████| 6/6 [00:05<00:00,  1.20it/s]")
    assert t.current == "load"
    t.on_stdout('@@wan22ctl {"event":"attention","requested":"auto","backend":"flash4","speedups":{"WAN22_COMPILE":true}}')
    t.on_stdout('@@wan22ctl {"event":"weights","placement":"resident"}')
    t.on_stdout("[2026-01-01 10:00:00,000] INFO: Generating video ...")
    assert t.on_stderr("  0%|          | 0/40 [00:00<?, ?it/s]")
    assert t.on_stderr(" 50%|█████     | 20/40 [1:02:03<1:00:00, 186.15s/it]")
    assert t.on_stderr(" 45%|████▌     | 18/40 [1:01:00<1:05:00, 186.15s/it]")  # another rank, behind
    assert t.on_stderr("100%|██████████| 40/40 [2:02:03<00:00, 186.15s/it]")
    assert not t.on_stderr("Traceback (most recent call last):")
    t.on_stdout("[2026-01-01 12:00:00,000] INFO: save_video failed, error: disk full")
    t.on_stdout("[2026-01-01 12:00:00,000] INFO: Saving generated video to /opt/outputs/x.mp4")
    t.on_stdout('@@wan22ctl {"event":"gpu_memory","rank":0,"peak_allocated_gib":33.06,"peak_reserved_gib":41.76}')
    t.on_stdout("[2026-01-01 12:00:00,000] INFO: Finished.")
    # wanrun's events land in the sidecar: which kernel and speedups made the video, its peak memory
    assert t.attention == {"requested": "auto", "backend": "flash4", "speedups": {"WAN22_COMPILE": True}}
    assert t.gpu_memory == [{"rank": 0, "peak_allocated_gib": 33.06, "peak_reserved_gib": 41.76}]
    assert t.weights == "resident"
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    progress = [(e["step"], e["eta_s"]) for e in events if e["event"] == "progress"]
    assert progress == [(0, None), (20, 3600), (40, 0)]
    assert [e["name"] for e in events if e["event"] == "phase" and e["state"] == "end"] == list(upstream_progress.PHASES)
    assert set(t.phases) == set(upstream_progress.PHASES) and t.save_error == "error: disk full"


def test_progress_bar_is_read_when_drawn_not_one_redraw_late():
    """tqdm draws "\\r" + bar with no line end; upstream's first bar ("0/3") must start the denoise
    phase at once, not when step 1 redraws it (a whole first step late: ~20 s at 720P). The child
    draws each bar (every one: no tqdm rate limit) and then blocks until the test has seen it: a
    reader that waits for the next redraw (or a line end) never delivers it, and the test fails."""
    import queue
    import threading

    pytest.importorskip("tqdm")
    child = ("import sys\nfrom tqdm import tqdm\nprint('INFO: Generating video ...', flush=True)\n"
             "for _ in tqdm(range(3), mininterval=0, miniters=1):\n    sys.stdin.readline()\nprint('INFO: Finished.', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    seen: queue.Queue[str] = queue.Queue()
    readers = [threading.Thread(target=upstream_progress.read_lines, args=(s, seen.put), daemon=True)
               for s in (proc.stdout, proc.stderr)]
    try:
        for r in readers:
            r.start()

        others: list[str] = []  # stdout and stderr are read by two threads: "Finished." may overtake "3/3"

        def next_bar() -> str:
            while True:
                line = seen.get(timeout=30)  # queue.Empty: the bar drawn was never delivered
                if upstream_progress.TQDM_RE.search(line):
                    return upstream_progress.TQDM_RE.search(line).group(1)
                others.append(line)

        for step in ("0", "1", "2"):
            assert next_bar() == step  # delivered while the child waits, before any redraw
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        assert next_bar() == "3"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for r in readers:
        r.join(timeout=5)
    rest = list(others)
    while not seen.empty():
        rest.append(seen.get())
    assert any("Finished." in line for line in rest)


def test_a_plan_is_rendered_for_the_runtime_the_agent_reports(tmp_path):
    here = Runtime.from_environ({"WAN22_OUTPUT_DIR": str(tmp_path / "out"), "WAN22_CHECKPOINT_DIR": "/data/ckpt",
                                 "WAN22_DIR": "/src/Wan2.2", "WAN22_PYTHON": "/venv/bin/python",
                                 "PYTHONPATH": "/extra"}, kit_dir="/src/kit")
    image_plan = plan("i2v-A14B")
    local = image_plan.for_runtime(here)
    argv = local.argv
    assert argv[0] == "/venv/bin/python"
    assert argv[argv.index("--ckpt_dir") + 1] == "/data/ckpt/Wan2.2-I2V-A14B"
    assert argv[argv.index("--save_file") + 1] == str(tmp_path / "out" / ".partial-run1.mp4")
    assert argv[argv.index("--image") + 1] == str(tmp_path / "out" / ".staging" / "run1" / "cat.jpg")
    assert local.cwd == "/src/Wan2.2" and local.output_dir == str(tmp_path / "out")
    assert local.env["PYTHONPATH"] == os.pathsep.join(["/src/kit", "/extra"])
    # the plan crosses to the agent as JSON and comes back the same typed object
    assert LaunchPlan.from_dict(json.loads(json.dumps(local.to_dict()))) == local
    assert LaunchPlan.from_dict(local.to_dict()).for_runtime(image_plan.runtime) == image_plan


def test_agent_runs_a_plan_without_docker(tmp_path, monkeypatch):
    """What the GPU machine does: the same launcher on a plain checkout, env-var paths."""
    # wanrun (the default bootstrap) installs the attention backend before generate.py: torch
    pytest.importorskip("torch", reason="torch (the CPU wheel .ci/run installs) is needed to start wanrun")
    wan = tmp_path / "wan2.2"
    wan.mkdir()
    shutil.copy(REPO / "tests" / "standins" / "wan2.2" / "generate.py", wan / "generate.py")
    (tmp_path / "ckpt" / "Wan2.2-TI2V-5B").mkdir(parents=True)
    p = plan_launch(req("ti2v-5B", sample_steps=4, prompt="fox"), synthetic_inventory(2, 80), None, run_id="loc1")
    (tmp_path / "plan.json").write_text(json.dumps(p.to_dict()))
    env = {**os.environ, "WAN22_DIR": str(wan), "WAN22_OUTPUT_DIR": str(tmp_path / "out"),
           "WAN22_CHECKPOINT_DIR": str(tmp_path / "ckpt"), "WAN22_PYTHON": sys.executable,
           "WAN22_TORCHRUN": str(REPO / "tests" / "standins" / "torchrun"),
           "WAN22_STANDIN_MP4": str(TINY_MP4), "WAN22_STANDIN_LOG": str(tmp_path / "calls.jsonl"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "generate", "--plan", str(tmp_path / "plan.json")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # the plan was made for the image's runtime: the agent re-renders it for this one, and says so
    assert "the plan was made for another runtime" in proc.stderr
    adjusted = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if '"plan_adjusted"' in line]
    assert adjusted and adjusted[0]["argv"][0] == env["WAN22_TORCHRUN"]
    videos = sorted((tmp_path / "out").glob("*.mp4"))
    assert [v.name[:len("ti2v-5B_1280x704_fox_")] for v in videos] == ["ti2v-5B_1280x704_fox_"]
    side = json.loads(videos[0].with_suffix(".json").read_text())
    assert side["seed"] == 42 and side["plan"]["nproc"] == 2 and side["exit_code"] == 0
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert sorted(c["RANK"] for c in calls) == ["0", "1"] and {c["WORLD_SIZE"] for c in calls} == {"2"}
    assert not list((tmp_path / "out").glob(".partial-*"))


def tts_request(voice: str, image: str = "/host/face.png", **kw):
    return build_request("s2v-14B", "she speaks", seed=5, image=image, tts_text="hello there",
                         tts_prompt_audio=voice, file_exists=lambda p: True, **kw)


def test_tts_needs_an_image_built_with_cosyvoice():
    """--tts-text is refused (exit 3, the fix named) where the agent says Wan's Python lacks CosyVoice's
    packages; an offline plan (runtime not known) and an image built with them plan it."""
    from wan22ctl.errors import EnvError

    request = tts_request("/host/voice.wav", probe_inputs=False)
    with pytest.raises(EnvError) as refused:
        plan_launch(request, synthetic_inventory(1, 141), None, run_id="r1", runtime=Runtime(tts=False))
    assert refused.value.exit_code == 3 and "WAN_S2V_TTS=true" in refused.value.fix
    for runtime in (Runtime(), Runtime(tts=True)):
        argv = plan_launch(request, synthetic_inventory(1, 141), None, run_id="r1", runtime=runtime).argv
        assert "--enable_tts" in argv and "--audio" not in argv
    assert Runtime.from_environ({"WAN22_S2V_TTS": "false"}, "/kit").tts is False
    assert Runtime.from_environ({}, "/kit").tts is None


def test_agent_runs_tts_with_the_checkpoint_dirs_cosyvoice(tmp_path):
    """s2v --tts-text without Docker: the prompt recording is staged, the run works in a folder of its
    own whose CosyVoice2-0.5B points at CHECKPOINT_DIR's (where upstream's load_tts looks), the
    stand-in speaks the recording into that folder's tts.wav and runs the clips it needs; the speech
    is published beside the video, and the sidecar names it, the text and the voice. Two such runs
    keep two recordings: upstream writes tts.wav in its working folder, and nothing is overwritten."""
    pytest.importorskip("torch", reason="torch (the CPU wheel .ci/run installs) is needed to start wanrun")
    import wave

    wan = tmp_path / "wan2.2"
    wan.mkdir()
    shutil.copy(REPO / "tests" / "standins" / "wan2.2" / "generate.py", wan / "generate.py")
    ckpt = tmp_path / "ckpt"
    (ckpt / "Wan2.2-S2V-14B").mkdir(parents=True)
    (ckpt / "CosyVoice2-0.5B").mkdir()
    image, voice = tmp_path / "face.png", tmp_path / "my voice.wav"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    with wave.open(str(voice), "wb") as w:  # 6 s: upstream's bucket formula makes 3 clips of 48 frames (int(180 / 90) + 1)
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * 96000)
    runtime = Runtime(python=sys.executable, wan22_dir=str(wan), output_dir=str(tmp_path / "out"),
                      checkpoint_dir=str(ckpt), pythonpath=str(REPO), tts=True)
    request = tts_request(str(voice), str(image), frame_num=48, sample_steps=2, tts_prompt_text="what I say")
    p = plan_launch(request, synthetic_inventory(1, 141), None, run_id="tts1", runtime=runtime)
    staged = dict(staged_files(p))
    for source, target in ((str(image), p.image), *staged.items()):  # what `generate` copies into the container
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(source, target)
    env = {**os.environ, "WAN22_DIR": str(wan), "WAN22_OUTPUT_DIR": runtime.output_dir,
           "WAN22_CHECKPOINT_DIR": str(ckpt), "WAN22_PYTHON": sys.executable, "WAN22_S2V_TTS": "true",
           "WAN22_STANDIN_MP4": str(TINY_MP4), "WAN22_STANDIN_LOG": str(tmp_path / "calls.jsonl"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "generate", "--plan-json", json.dumps(p.to_dict())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    launch = next(json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if '"launch"' in line)
    assert launch["cwd"].startswith(runtime.output_dir + "/.staging/") and not os.path.exists(launch["cwd"])
    assert not os.path.lexists(wan / "CosyVoice2-0.5B") and not (wan / "tts.wav").exists()
    (call,) = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    argv = call["argv"]
    assert argv[argv.index("--tts_prompt_audio") + 1] == staged[str(voice)] and "--enable_tts" in argv
    assert argv[argv.index("--tts_text") + 1] == "hello there" and "--audio" not in argv
    clips = [json.loads(line.split(" ", 1)[1]).get("clip", 1) for line in proc.stdout.splitlines()
             if line.startswith("@@wan22ctl ") and '"progress"' in line]
    assert max(clips) == 3
    (video,) = (tmp_path / "out").glob("*.mp4")
    side = json.loads(video.with_suffix(".json").read_text())
    assert (side["tts_text"], side["tts_prompt_text"], side["audio"]) == ("hello there", "what I say", None)
    assert side["tts_prompt_audio"] == {"source": str(voice), "staged_as": staged[str(voice)]}
    assert side["clips_expected"] is None and side["clips_run"] == 3
    speech = video.with_suffix(".tts.wav")
    assert side["tts_audio"] == str(speech) and speech.read_bytes() == voice.read_bytes()

    # A second run keeps its own speech: the first one's is still there, unchanged.
    p2 = plan_launch(request, synthetic_inventory(1, 141), None, run_id="tts2", runtime=runtime)
    for source, target in ((str(image), p2.image), *dict(staged_files(p2)).items()):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(source, target)
    proc = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "generate", "--plan-json", json.dumps(p2.to_dict())],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(path.name for path in (tmp_path / "out").glob("*.tts.wav")) == sorted(
        path.with_suffix(".tts.wav").name for path in (tmp_path / "out").glob("*.mp4"))
    assert len(list((tmp_path / "out").glob("*.tts.wav"))) == 2 and speech.read_bytes() == voice.read_bytes()
    # upstream cloned CosyVoice's code in the first run's folder; it was kept in Wan2.2's for the second
    (first, second) = [json.loads(line)["pid"] for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert (wan / "CosyVoice" / "cloned-by-pid").read_text() == str(first) != str(second)


def test_prompt_file_lines(tmp_path):
    from wan22ctl.batch import RequestOptions, read_prompt_file

    (tmp_path / "cat.jpg").write_bytes(b"jpg")
    f = tmp_path / "prompts.txt"
    f.write_text("# comment\n\na plain prompt\n"
                 '{"prompt": "json prompt", "steps": 3, "seed": 9, "size": "832x480"}\n'
                 '{"prompt": "bad frames", "frame_num": 80}\n'
                 '{"prompt": "typo", "stpes": 3}\n'
                 '{"prompt": "cut\n'
                 '{"task": "i2v-A14B", "prompt": "relative image", "image": "cat.jpg"}\n')
    jobs = read_prompt_file(f, RequestOptions(task="t2v-A14B"))
    assert [j.label for j in jobs] == [f"prompts.txt:{n}" for n in (3, 4, 5, 6, 7, 8)]
    assert jobs[0].request.prompt == "a plain prompt"
    assert (jobs[1].request.sample_steps, jobs[1].request.seed, jobs[1].request.size) == (3, 9, "832*480")
    assert "4n+1" in jobs[2].error and "stpes" in jobs[3].error and "not valid JSON" in jobs[4].error
    assert jobs[5].request.image == str(tmp_path / "cat.jpg")


def test_progress_tracker_follows_s2v_clips(capsys):
    """S2V denoises once per clip: the bar restarts at 0 after each decode. Each clip's steps are
    reported with the clip number, late redraws of a finished bar by other ranks are dropped, the
    phases alternate and the sidecar's seconds are their sums."""
    clock = iter(range(100)).__next__
    t = upstream_progress.ProgressTracker(clock=clock, clips=2)
    t.on_stdout("[2026-01-01 10:00:00,000] INFO: Generating video ...")
    for clip in range(2):
        assert t.on_stderr("  0%|          | 0/4 [00:00<?, ?it/s]")
        assert t.on_stderr(" 50%|█████     | 2/4 [00:10<00:10,  5.00s/it]")
        assert t.on_stderr("100%|██████████| 4/4 [00:20<00:00,  5.00s/it]")
        assert t.on_stderr(" 75%|███████▌  | 3/4 [00:15<00:05,  5.00s/it]")  # another rank, behind
    assert t.on_stderr("100%|██████████| 4/4 [00:20<00:00,  5.00s/it]")  # another rank, late
    t.on_stdout("[2026-01-01 10:01:00,000] INFO: Saving generated video to /opt/outputs/x.mp4")
    t.on_stdout("[2026-01-01 10:01:00,000] INFO: Finished.")
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    progress = [(e["clip"], e["clips"], e["step"], e["eta_s"]) for e in events if e["event"] == "progress"]
    # clip 1's ETA counts clip 2 at clip 1's pace (20 s a clip)
    assert progress == [(1, 2, 0, None), (1, 2, 2, 30), (1, 2, 4, 20), (2, 2, 0, None), (2, 2, 2, 10), (2, 2, 4, 0)]
    ends = [e["name"] for e in events if e["event"] == "phase" and e["state"] == "end"]
    assert ends == ["load", "text_encode", "denoise", "decode", "denoise", "decode", "save"]
    assert t.clip == 2 and t.phases["denoise"] == sum(e["seconds"] for e in events if e.get("name") == "denoise"
                                                       and e["state"] == "end")


def test_progress_tracker_counts_the_last_step_of_two_step_clips(capsys):
    """Seen on the H200 (s2v-14B, 2 steps, 2 clips): clip 2's final 2/2 after its 1/2 was taken for a
    late redraw of clip 1's finished bar and dropped, so the run seemed to end one step short."""
    t = upstream_progress.ProgressTracker(clock=iter(range(100)).__next__, clips=2)
    t.on_stdout("[2026-01-01 10:00:00,000] INFO: Generating video ...")
    for _ in range(2):
        for line in ("  0%|          | 0/2 [00:00<?, ?it/s]", " 50%|█████     | 1/2 [00:18<00:18, 18.00s/it]",
                     "100%|██████████| 2/2 [00:36<00:00, 18.00s/it]"):
            assert t.on_stderr(line)
    assert t.on_stderr("100%|██████████| 2/2 [00:36<00:00, 18.00s/it]")  # another rank, late
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert [(e["clip"], e["step"]) for e in events if e["event"] == "progress"] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_one_video_tasks_never_see_a_second_clip(capsys):
    t = upstream_progress.ProgressTracker(clock=iter(range(100)).__next__)
    t.on_stdout("[2026-01-01 10:00:00,000] INFO: Generating video ...")
    for line in ("  0%|          | 0/2 [00:00<?, ?it/s]", "100%|██████████| 2/2 [00:02<00:00,  1.00s/it]",
                 " 50%|█████     | 1/2 [00:01<00:01,  1.00s/it]"):
        t.on_stderr(line)
    events = [json.loads(line.split(" ", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    assert [e["step"] for e in events if e["event"] == "progress"] == [0, 2]
    assert all("clip" not in e for e in events) and t.clip == 1


def test_a_resident_server_plans_every_task_image_tasks_included():
    """`server --plan auto` and `kube render` plan with the task's defaults; i2v's image comes per job."""
    from wan22ctl.agent.server.autoplan import plan_for_server

    gpus = [{"index": 0, "name": "H100", "memory_gb": 79.6, "compute_cap": "9.0", "driver": "570"}]
    for task in catalog.served_task_names():
        plan = plan_for_server(task, {"gpus": gpus, "host_ram_gb": 512.0}, "auto")
        assert plan.nproc == 1 and plan.task == task
