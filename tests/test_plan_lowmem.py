"""A14B on 24-48 GB cards: the planner's FP8 and block-streaming choices, their estimates, the flags'
validation and refusals, and what reaches the container (env) and the sidecar.

Pure and fast, plus the CLI as a user runs it (`wan22ctl plan ...` in a process, no Docker).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli_without_docker
from wan22ctl.agent import launcher
from wan22ctl.errors import UserError
from wan22ctl.plan import lowmem
from wan22ctl.plan.inventory import Gpu
from wan22ctl.plan.launch import build_request, plan_launch, synthetic_inventory


def plan(mem, count=1, task="t2v-A14B", cap="", host_ram=None, **kw):
    kw.setdefault("seed", 1)
    request = build_request(task, "a red fox", file_exists=lambda p: True,
                            image="in.png" if task == "i2v-A14B" else None, **kw)
    gpus = [Gpu(i, "GPU", float(mem), cap, "") for i in range(count)]
    return plan_launch(request, gpus, host_ram, run_id="r")


# ---- the memory model -----------------------------------------------------------------------------

def test_a_24gb_card_streams_720p_and_fits():
    p = plan(24)
    assert p.fits and not p.warnings and p.nproc == 1
    assert (p.offload_mode, p.resident_blocks, p.offload_model, p.t5_cpu) == ("blocks", 9, True, False)
    assert p.est_peak_gpu_gb <= 24 - lowmem.MARGIN_GIB - lowmem.FRAGMENTATION_GIB
    assert p.env["WAN22_OFFLOAD"] == "blocks" and p.env["WAN22_RESIDENT_BLOCKS"] == "9"
    # streamed blocks come and go every forward: expandable segments keep the allocator from fragmenting
    assert p.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in plan(80).env
    assert any("9 of 40 blocks stay on the GPU" in r and "x the resident run's time" in r for r in p.reasons)
    assert "--t5_cpu" not in p.argv and p.argv[p.argv.index("--offload_model") + 1] == "True"


@pytest.mark.parametrize("mem,size,dtype,mode,resident", [
    (24, "832*480", "bf16", "blocks", 18),
    (24, "1280*720", "fp8", "blocks", 16),  # FP8 attention's copies take 1.2 GB of the room
    (24, "832*480", "fp8", "model", 40),  # a 13.6 GB fp8 expert and 480P activations fit whole
    (32, "1280*720", "bf16", "blocks", 21),
    (48, "1280*720", "bf16", "model", 40),
    (48, "1280*720", "fp8", "model", 40),
])
def test_placement_per_card_size_and_dtype(mem, size, dtype, mode, resident):
    low = lowmem.placement(mem, size, dtype)
    assert (low.mode, low.resident_blocks, low.fits) == (mode, resident, True)
    assert low.peak_gib + lowmem.MARGIN_GIB + (lowmem.FRAGMENTATION_GIB if mode == "blocks" else 0) <= mem
    p = plan(mem, size=size, dtype=dtype)
    assert p.offload_mode == mode and p.fits and p.resident_blocks == (resident if mode == "blocks" else None)


def test_streaming_estimate_adds_up():
    low = lowmem.placement(24, "1280*720", "bf16")
    denoise = lowmem.REST_GIB + (9 + lowmem.SLOTS) * lowmem.BLOCK_GIB["bf16"] + lowmem.ACTIVATIONS_GIB["720p"]
    assert low.phases_gib == {"text_encode": round(lowmem.T5_GIB + 0.3, 1), "denoise": round(denoise, 1),
                              "vae_decode": lowmem.VAE_DECODE_GIB["720p"]}
    assert low.copy_gib_per_forward == pytest.approx(31 * lowmem.BLOCK_GIB["bf16"], abs=0.01)
    assert low.copy_s_per_forward < 0.1 * low.compute_s_per_forward  # the copies hide behind compute


def test_too_small_a_card_warns_and_names_what_fits():
    p = plan(16)
    assert not p.fits and p.offload_mode == "blocks"
    assert "even with the DiT blocks streamed" in p.warnings[0] and "480P" in p.warnings[0]
    assert plan(16, size="832*480").fits


def test_fp8_halves_experts_and_pinned_host_memory():
    bf16, fp8 = plan(24), plan(24, dtype="fp8", cap="8.9")
    assert bf16.pinned_host_gb == pytest.approx(2 * lowmem.expert_gib("bf16") + lowmem.T5_GIB, abs=0.1)
    assert fp8.pinned_host_gb == pytest.approx(2 * lowmem.expert_gib("fp8") + lowmem.T5_GIB, abs=0.1)
    assert fp8.host_ram_need_gb < bf16.host_ram_need_gb  # the first expert is quantized before the second loads
    assert fp8.env["WAN22_DTYPE"] == "fp8" and bf16.env["WAN22_DTYPE"] == "bf16"
    assert any("compute capability 8.9 has FP8 tensor cores" in r for r in fp8.reasons)


def test_resident_h200_pins_nothing():
    p = plan(141)
    assert p.offload_mode == "off" and p.pinned_host_gb == 0 and p.env["WAN22_OFFLOAD"] == ""


def test_offload_blocks_forced_on_a_big_card():
    p = plan(80, offload="blocks")
    assert p.offload_mode == "blocks" and p.resident_blocks == 40  # room for every block: none streams
    assert p.env["WAN22_OFFLOAD"] == "blocks"


def test_several_small_cards_fall_back_to_one_streaming_gpu():
    p = plan(24, count=2)
    assert p.nproc == 1 and p.fits and p.offload_mode == "blocks"
    assert any("1 GPU instead of 2" in r for r in p.reasons)
    # four 48 GB cards hold the sharded experts: torchrun as before
    assert plan(48, count=4).nproc == 4


# ---- flags: validation and refusal ------------------------------------------------------------------

@pytest.mark.parametrize("kw,message", [
    (dict(dtype="int8"), "--dtype 'int8'; choose bf16 or fp8"),
    (dict(offload="layers"), "choose auto, on, off or blocks"),
    (dict(task="ti2v-5B", dtype="fp8"), "--dtype fp8 applies to the A14B tasks"),
    (dict(task="ti2v-5B", offload="blocks"), "--offload blocks applies to the A14B tasks"),
])
def test_bad_flags_are_one_line_user_errors(kw, message):
    task = kw.pop("task", "t2v-A14B")
    with pytest.raises(UserError) as err:
        build_request(task, "x", seed=1, **kw)
    assert message in err.value.message


def test_fp8_refused_on_a_gpu_without_fp8_tensor_cores():
    with pytest.raises(UserError) as err:
        plan(40, cap="8.0", dtype="fp8")
    assert "compute capability 8.9 Ada or 9.0 Hopper" in err.value.message and "is 8.0" in err.value.message


def test_fp8_runs_in_one_process():
    p = plan(80, count=4, dtype="fp8", cap="9.0")
    assert p.nproc == 1 and any("--dtype fp8 run(s) in one process" in r for r in p.reasons)
    with pytest.raises(UserError, match="run\\(s\\) on one GPU"):
        plan(80, count=4, dtype="fp8", gpus="2")


def test_offline_fp8_plan_says_the_capability_is_unknown():
    p = plan(24, dtype="fp8")  # --gpu-count plans have no compute capability
    assert any("not known here" in r for r in p.reasons)


# ---- what reaches the container and the sidecar ---------------------------------------------------

def test_sidecar_records_dtype_and_offload(tmp_path):
    from wan22ctl.agent.progress import ProgressTracker
    from wan22ctl.plan.launch import LaunchPlan

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    p = plan(24, dtype="fp8", cap="9.0")
    data = launcher.sidecar_data(p, ProgressTracker(), 0, image_digest=None, source_image=None, started="",
                                 video=str(video), total_s=1.0)
    assert (data["dtype"], data["offload"], data["resident_blocks"]) == ("fp8", "blocks", 16)
    # a plan written before these fields existed reads as bf16, nothing streamed
    old = {k: v for k, v in p.to_dict().items() if k not in ("dtype", "offload_mode", "resident_blocks")}
    data = launcher.sidecar_data(LaunchPlan.from_dict(old), ProgressTracker(), 0, image_digest=None,
                                 source_image=None, started="", video=str(video), total_s=1.0)
    assert (data["dtype"], data["offload"], data["resident_blocks"]) == ("bf16", "off", None)


def test_server_autoplan_carries_dtype_and_streaming():
    from wan22ctl.agent.server.autoplan import plan_for_server

    inventory = {"gpus": [Gpu(0, "NVIDIA L40S", 44.4, "8.9", "").to_dict()], "host_ram_gb": 256}
    p = plan_for_server("t2v-A14B", inventory, "auto", dtype="fp8")
    assert p.env["WAN22_DTYPE"] == "fp8" and p.dtype == "fp8" and p.fits
    p = plan_for_server("t2v-A14B", {"gpus": [Gpu(0, "RTX 4090", 23.99, "8.9", "").to_dict()]}, "auto")
    assert p.env["WAN22_OFFLOAD"] == "blocks" and int(p.env["WAN22_RESIDENT_BLOCKS"]) == p.resident_blocks


def test_cli_plan_a14b_on_one_24gb_card(tmp_path):
    r = cli_without_docker(tmp_path, "plan", "--gpu-count", "1", "--gpu-mem-gb", "24", "--task", "t2v-A14B", "--json")
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["plans"][0]["plan"]
    assert p["fits"] and not p["warnings"] and p["offload_mode"] == "blocks" and p["resident_blocks"] == 9
    human = cli_without_docker(tmp_path, "plan", "--gpu-count", "1", "--gpu-mem-gb", "24", "--task", "t2v-A14B", "--dtype", "fp8")
    assert human.returncode == 0, human.stderr
    assert "weights fp8, offload blocks, 16 of 40 blocks resident" in human.stdout
    assert "expect CUDA out of memory" not in human.stdout


def test_cli_dtype_default_comes_from_the_setting(tmp_path):
    (tmp_path / ".env").write_text("WAN22_DTYPE=fp8\n")
    r = cli_without_docker(tmp_path, "plan", "--gpu-count", "1", "--gpu-mem-gb", "48", "--task", "t2v-A14B", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plans"][0]["plan"]["dtype"] == "fp8"


@pytest.mark.parametrize("args,message", [
    (["--task", "ti2v-5B", "--dtype", "fp8"], "--dtype fp8 applies to the A14B tasks"),
    (["--task", "t2v-A14B", "--dtype", "fp4"], "--dtype 'fp4'"),
    (["--task", "t2v-A14B", "--offload", "everything"], "choose auto, on, off or blocks"),
])
def test_cli_refuses_bad_flags_before_docker(tmp_path, args, message):
    r = cli_without_docker(tmp_path, "generate", "--prompt", "x", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_cli_dtype_setting_leaves_other_tasks_in_bf16(tmp_path):
    (tmp_path / ".env").write_text("WAN22_DTYPE=fp8\n")
    r = cli_without_docker(tmp_path, "plan", "--gpu-count", "1", "--gpu-mem-gb", "24", "--task", "ti2v-5B", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["plans"][0]["plan"]["dtype"] == "bf16"


def test_without_the_kits_bootstrap_upstreams_flags_stay():
    from wan22ctl.plan.inventory import Runtime

    request = build_request("t2v-A14B", "a red fox", seed=1)
    p = plan_launch(request, synthetic_inventory(1, 24), None, run_id="r", runtime=Runtime(bootstrap=False))
    assert p.offload_mode == "model" and p.t5_cpu and not p.fits and p.env["WAN22_OFFLOAD"] == ""
    with pytest.raises(UserError, match="need the kit's bootstrap"):
        plan_launch(build_request("t2v-A14B", "x", seed=1, dtype="fp8"), synthetic_inventory(1, 24), None,
                    run_id="r", runtime=Runtime(bootstrap=False))
