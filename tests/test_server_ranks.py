"""The rank-0 hand-off under torchrun, on CPU: two processes, gloo, the stand-in pipeline.

Rank 0 owns HTTP and the queue; every job must run on both ranks with the same arguments and
seed, a cancel must stop both at the same step, and an idle server must outlive the default
process group's timeout (here shortened to 3 s) because jobs travel over the control group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_server import Server

# .ci/run installs the CPU wheel (a skip fails in CI); a developer's venv may lack it
pytest.importorskip("torch", reason="torch (CPU wheel) is needed for the gloo hand-off test")


def test_two_rank_gloo_handoff(tmp_path):
    s = Server(tmp_path, env={"WAN22_DIST_TIMEOUT_S": "3", "OMP_NUM_THREADS": "1"})
    s.start(launcher=(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "-m", "wan22ctl.agent"))
    try:
        status, info, _ = s.api("GET", "/v1/info")
        assert info["world_size"] == 2 and info["plan"]["offload_model"] is False  # generate.py's multi-GPU rule

        time.sleep(5)  # idle past the default group's 3 s timeout: followers wait on the control group
        first = s.wait(s.submit(prompt="on both ranks", sample_steps=6)["id"])
        assert first["state"] == "succeeded", first

        long = s.submit(prompt="cancel me", sample_steps=400)
        nxt = s.submit(prompt="after cancel", sample_steps=3)
        s.wait(long["id"], until=lambda j: j["progress_detail"]["step"] >= 3)
        assert s.api("POST", f"/v1/videos/{long['id']}/cancel")[0] == 200
        assert s.wait(long["id"])["state"] == "cancelled"
        assert s.wait(nxt["id"])["state"] == "succeeded"

        calls = s.calls_made()
        by = lambda prompt: sorted((c for c in calls if c["input_prompt"] == prompt), key=lambda c: c["rank"])  # noqa: E731
        a, b = by("on both ranks")
        assert (a["rank"], b["rank"]) == (0, 1) and a["pid"] != b["pid"]
        assert a["seed"] == b["seed"] == first["seed"] and a["ended"] == b["ended"] == "ok"
        assert {k: v for k, v in a.items() if k not in ("rank", "pid")} == \
            {k: v for k, v in b.items() if k not in ("rank", "pid")}
        c0, c1 = by("cancel me")
        assert c0["ended"] == c1["ended"] == "JobCancelled" and c0["steps_done"] == c1["steps_done"] < 400
        assert [c["ended"] for c in by("after cancel")] == ["ok", "ok"]

    finally:
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=60)
    log = s.logtext()
    assert "[rank1]: Traceback" not in log and "[rank0]: Traceback" not in log, log


def test_plan_auto_picks_torchrun_like_generate(tmp_path):
    """--plan auto on two (stand-in) 80 GB GPUs: generate's plan for t2v-A14B is torchrun x2 with
    Ulysses 2 and FSDP; the server runs itself that way (supervised) and serves on both ranks."""
    from tests.conftest import STANDINS

    venv_bin = str(Path(sys.executable).parent)
    s = Server(tmp_path, args=("--plan", "auto"), env={
        "WAN22_FAKE_GPUS": "2x80:9.0:NVIDIA H100 80GB HBM3", "OMP_NUM_THREADS": "1",
        "PATH": f"{STANDINS}{os.pathsep}{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "WAN22_TORCHRUN": str(Path(venv_bin) / "torchrun")})
    s.start()
    try:
        info = s.api("GET", "/v1/info")[1]
        assert info["world_size"] == 2 and info["plan"]["ulysses_size"] == 2
        from wan22ctl.agent.inventory import host_ram_gb
        from wan22ctl.agent.server.autoplan import plan_for_server
        from wan22ctl.plan.inventory import parse_nvidia_smi

        smi = subprocess.run([str(STANDINS / "nvidia-smi"), "--query-gpu=index"], capture_output=True, text=True,
                             env=s.env).stdout
        expected = plan_for_server("t2v-A14B", {"gpus": [g.to_dict() for g in parse_nvidia_smi(smi)],
                                                "host_ram_gb": host_ram_gb()}, "auto")
        assert (info["plan"]["dit_fsdp"], info["plan"]["t5_fsdp"], info["plan"]["offload_model"]) == \
            (expected.dit_fsdp, expected.t5_fsdp, expected.offload_model) and expected.dit_fsdp
        assert s.wait(s.submit(prompt="planned")["id"])["state"] == "succeeded"
        assert sorted(c["rank"] for c in s.calls_made() if c["input_prompt"] == "planned") == [0, 1]
        assert "plan: torchrun --nproc_per_node=2" in s.logtext()

        # A failed job ends every rank; the supervisor starts torchrun again, the job is retried once, then failed.
        bad = s.submit(prompt="please FAIL on both ranks", sample_steps=6)["id"]
        deadline = time.time() + 120
        while True:
            try:
                job = s.api("GET", f"/v1/videos/{bad}", timeout=2)[1]
                if job["state"] == "failed":
                    break
            except OSError:
                pass  # the ranks are restarting
            assert time.time() < deadline, s.logtext()[-3000:]
            time.sleep(0.2)
        assert "stand-in failure requested" in job["error"]["message"] and "after 2 attempt(s)" in job["error"]["message"]
        assert job["attempts"] == 2
        assert s.wait(s.submit(prompt="after the failure", sample_steps=3)["id"])["state"] == "succeeded"
    finally:
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=60)
