"""`wan22ctl doctor`: the real CLI against the real Docker Engine, stand-in GPUs, olah, a tiny tmpfs.

This machine has no GPU and no NVIDIA runtime, so the `--gpus` probe must FAIL with the
toolkit fix and leave no container behind. GPU verdicts are exercised through the stand-in
`nvidia-smi` of the test image, run by `docker exec` in a kit container started by `up`
with GPUS=none (the path doctor takes whenever the kit container is running): the test writes
the GPUs it wants into /etc/wan22-fake-gpus inside that container.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess

import pytest

from tests.conftest import Cli, clean_environ, unique
from wan22ctl.doctor.probes import LABEL_PROBE, probe_name

CHECK_IDS = [
    "docker.daemon", "host.folders", "image.present", "nvidia.runtime", "gpu.visible", "gpu.arch",
    "gpu.driver", "gpu.vram", "host.ram", "host.pinned", "disk.checkpoints", "container.shm", "container.memlock",
    "hf.endpoint", "hf.token", "hf.repo", "container.health",
]
UNREACHABLE_HF = "http://127.0.0.1:9"  # connection refused at once: no DNS wait in tests that ignore the hub


def _doctor(cli: Cli, *args: str, extra_env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    proc = cli("doctor", *args, "--json", extra_env=extra_env, timeout=180)
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def _check(report: dict, check_id: str) -> dict:
    return next(c for c in report["checks"] if c["id"] == check_id)


def _probes_left(docker_client, name: str) -> list:
    return [c for c in docker_client.containers.list(all=True, filters={"label": LABEL_PROBE})
            if c.name == probe_name(name)]


@pytest.fixture(scope="module")
def kit(tmp_path_factory, docker_client, standin_image):
    """One CLI environment for the module (GPUS=none: this host has no NVIDIA runtime)."""
    base = tmp_path_factory.mktemp("doctor")
    (base / "work").mkdir()
    name = unique("wan22doc")
    env = clean_environ()
    env.update(
        CONTAINER_NAME=name, DOCKER_IMAGE=standin_image, IMAGE_MODE="pull", GPU_STACK="false", GPUS="none",
        PRIVILEGED="false", MEMLOCK="off", RESTART_POLICY="no", OUTPUT_DIR=str(base / "outputs"),
        CHECKPOINT_DIR=str(base / "checkpoints"), HF_HOME=str(base / "hf-home"), HF_ENDPOINT=UNREACHABLE_HF,
    )
    runner = Cli(base / "work", env, [name, probe_name(name)])
    yield runner
    runner.remove_created(docker_client)


@pytest.fixture(scope="module")
def running(kit, docker_client):
    """The kit container started by `up`, shared by the GPU tests (stand-in nvidia-smi inside)."""
    proc = kit("up", "--wait", "90")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return docker_client.containers.get(kit.env["CONTAINER_NAME"])


def fake_gpus(container, spec: str) -> None:
    """What the stand-in nvidia-smi reports from now on ("COUNTxGB:CAP:NAME", groups joined by ';')."""
    code, out = container.exec_run(["sh", "-c", 'printf %s "$G" > /etc/wan22-fake-gpus'],
                                   environment={"G": spec}, user="root")
    assert code == 0, out


# ------------------------------------------------------------------------- verdicts (pure)


@pytest.mark.parametrize("cap,arch_list,status,note", [
    ("9.0", "8.9;9.0", "PASS", ""),
    ("8.9", "8.0;9.0", "PASS", "runs the 8.0 kernels"),  # same-major cubins run on newer minors
    ("8.0", "8.9;9.0", "FAIL", "no sm_80 kernels in the image"),
    ("12.0", "8.9;9.0+PTX", "WARN", "only 9.0+PTX: JIT-compiled on first use"),
    ("7.5", "7.5;8.9;9.0", "FAIL", ""),  # below the kit's floor whatever the list says
])
def test_arch_verdicts(cap, arch_list, status, note):
    from wan22ctl.doctor.rules import arch_verdict

    verdict = arch_verdict(cap, arch_list)
    assert (verdict.status, verdict.note) == (status, note)


@pytest.mark.parametrize("driver,cuda,status", [
    ("580.95.05", "12.8.0", "PASS"),
    ("570.26", "12.8.1", "PASS"),
    ("535.104.05", "12.8.0", "WARN"),  # minor-version compatibility: cubins run, PTX JIT does not
    ("470.82.01", "12.1.0", "FAIL"),
    ("575.51.03", "13.0.1", "FAIL"),  # CUDA 13 has no compatibility below 580
])
def test_driver_verdicts(driver, cuda, status):
    from wan22ctl.doctor.rules import driver_verdict

    assert driver_verdict(driver, cuda).status == status


def test_shm_and_memlock_verdicts():
    from wan22ctl.doctor.rules import memlock_verdict, shm_verdict

    assert shm_verdict(0.0625, ranks=1).status == "WARN"  # Docker's 64 MiB default, one process
    assert shm_verdict(0.0625, ranks=4).status == "FAIL"  # NCCL between 4 ranks
    assert shm_verdict(16, ranks=8).status == "PASS"
    assert memlock_verdict("unlimited").status == "PASS"
    assert memlock_verdict("8192").status == "WARN"


# ------------------------------------------------------------------------- no GPU on this host


def test_runtime_probe_fails_with_toolkit_fix_and_leaves_nothing(kit, docker_client):
    name = kit.env["CONTAINER_NAME"]
    assert docker_client.containers.list(all=True, filters={"name": name}) == []
    proc = kit("doctor", timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"NVIDIA runtime\s*│\s*FAIL", proc.stdout) and "nvidia-ctk" in proc.stdout
    assert "fix the FAIL rows first" in proc.stdout

    proc, report = _doctor(kit)
    runtime = _check(report, "nvidia.runtime")
    assert runtime["status"] == "FAIL"
    assert "could not select device driver" in runtime["value"]
    assert "NVIDIA Container Toolkit" in runtime["fix"] and "nvidia-ctk runtime configure" in runtime["fix"]
    # The cause is reported once; the GPU rows wait for it instead of repeating it.
    assert _check(report, "gpu.visible")["status"] == "SKIP"
    assert _check(report, "container.health")["status"] == "WARN"
    assert _probes_left(docker_client, name) == []
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


def test_json_schema_is_stable(kit):
    proc, report = _doctor(kit, "--task", "ti2v-5B")
    assert proc.returncode == 1  # the runtime check fails here
    assert set(report) == {"schema", "task", "ok", "counts", "checks"}
    assert report["schema"] == "wan22ctl.doctor/1"
    assert report["task"] == "ti2v-5B" and report["ok"] is False
    assert [c["id"] for c in report["checks"]] == CHECK_IDS
    for c in report["checks"]:
        assert set(c) == {"id", "name", "status", "value", "requirement", "fix", "data"}
        assert c["status"] in ("PASS", "WARN", "FAIL", "SKIP")
        assert isinstance(c["value"], str) and c["value"] and isinstance(c["requirement"], str)
        assert c["fix"] is None if c["status"] == "PASS" else True
        assert isinstance(c["data"], dict)
    assert set(report["counts"]) == {"PASS", "WARN", "FAIL", "SKIP"}
    assert sum(report["counts"].values()) == len(CHECK_IDS)
    assert report["counts"]["FAIL"] == sum(c["status"] == "FAIL" for c in report["checks"])
    assert _check(report, "docker.daemon")["status"] == "PASS"
    assert _check(report, "image.present")["status"] == "PASS"


def test_unknown_task_is_a_user_error(kit):
    proc = kit("doctor", "--task", "t2v-14B")
    assert proc.returncode == 2
    assert "unknown task 't2v-14B'" in proc.stderr and "t2v-A14B" in proc.stderr


# ------------------------------------------------------------------------- stand-in GPUs


def test_h100_80gb_passes_t2v_a14b(kit, running):
    fake_gpus(running, "1x80:9.0:NVIDIA H100 80GB HBM3")
    _, report = _doctor(kit, "--task", "t2v-A14B")
    visible = _check(report, "gpu.visible")
    assert visible["status"] == "PASS" and "1x NVIDIA H100 80GB HBM3 80 GB (cc 9.0)" in visible["value"]
    assert visible["data"]["source"] == f"nvidia-smi in {running.name}"
    assert _check(report, "gpu.arch")["status"] == "PASS"
    vram = _check(report, "gpu.vram")
    assert vram["status"] == "PASS", vram
    assert vram["data"]["nproc"] == 1 and vram["data"]["est_peak_gb"] <= 80
    # The image declares the CUDA runtime of the torch wheel it pins (label io.wan22ctl.cuda-version).
    driver = _check(report, "gpu.driver")
    assert driver["status"] == "PASS" and "image CUDA 12.8" in driver["value"], driver
    assert _check(report, "container.health")["status"] == "PASS"


def test_a100_40gb_single_runs_t2v_a14b_through_host_copies(kit, running):
    fake_gpus(running, "1x40:8.0:NVIDIA A100-SXM4-40GB")
    proc, report = _doctor(kit, "--task", "t2v-A14B")
    assert proc.returncode == 1
    vram = _check(report, "gpu.vram")
    assert vram["status"] == "PASS" and vram["data"]["nproc"] == 1 and vram["data"]["est_peak_gb"] <= 40
    # both bf16 experts and T5 stay page-locked on the host for the run: ~64 GB on this small machine
    pinned = _check(report, "host.pinned")
    assert pinned["data"]["pinned_gb"] == pytest.approx(63.9) and pinned["data"]["dtype"] == "bf16"
    assert pinned["status"] == ("FAIL" if _check(report, "host.ram")["data"]["total_gb"] < 72 else "PASS")
    arch = _check(report, "gpu.arch")  # 8.0 is not in the default 8.9;9.0 list
    assert arch["status"] == "FAIL" and "no sm_80 kernels" in arch["value"]
    assert 'TORCH_CUDA_ARCH_LIST="8.0;8.9;9.0"' in arch["fix"]


def test_16gb_card_fails_t2v_a14b_720p_and_names_what_fits(kit, running):
    fake_gpus(running, "1x16:8.9:NVIDIA RTX 4060 Ti 16GB")
    proc, report = _doctor(kit, "--task", "t2v-A14B")
    assert proc.returncode == 1
    vram = _check(report, "gpu.vram")
    assert vram["status"] == "FAIL" and "one GPU" in vram["requirement"]
    assert "--size 832*480" in vram["fix"] and "streamed" in vram["fix"]


def test_eight_a100_40gb_fit_t2v_a14b(kit, running):
    fake_gpus(running, "8x40:8.0:NVIDIA A100-SXM4-40GB")
    _, report = _doctor(kit, "--task", "t2v-A14B")
    vram = _check(report, "gpu.vram")
    assert vram["status"] == "PASS" and vram["data"]["nproc"] == 8 and vram["data"]["launcher"] == "torchrun"
    # Eight ranks each load the weights on the CPU: far beyond this host's RAM.
    ram = _check(report, "host.ram")
    assert ram["status"] == "FAIL" and ram["data"]["need_gb"] > 400 and "8 rank(s)" in ram["requirement"]


def test_preflight_generate_stops_on_a_gpu_the_image_has_no_kernels_for(kit, running):
    from wan22ctl.doctor import preflight, require
    from wan22ctl.doctor.rules import launch_plan
    from wan22ctl.errors import EnvError
    from wan22ctl.plan.inventory import Gpu
    from wan22ctl.settings import load_settings

    settings = load_settings(environ=kit.env)
    fake_gpus(running, "2x40:8.0:NVIDIA A100-SXM4-40GB")
    with pytest.raises(EnvError) as err:
        require(settings, "generate", task="ti2v-5B")
    assert err.value.exit_code == 3
    assert err.value.message.startswith("GPU architecture: NVIDIA A100-SXM4-40GB cc 8.0 (no sm_80 kernels")
    assert 'TORCH_CUDA_ARCH_LIST="8.0;8.9;9.0"' in err.value.fix
    # Memory is the caller's plan verdict (generate refuses a plan that does not fit unless --force).
    fake_gpus(running, "1x16:8.9:NVIDIA RTX 4060 Ti 16GB")  # 720P A14B needs ~21 GB even streamed
    plan = launch_plan("t2v-A14B", [Gpu(0, "NVIDIA RTX 4060 Ti 16GB", 16.0, "8.9", "580.95.05")], None)
    assert not plan.fits
    assert preflight(settings, "generate", task="t2v-A14B", plan=plan) is None


def test_container_without_gpus_fails_with_the_recreate_fix(kit, running):
    fake_gpus(running, "")  # the stand-in then fails as nvidia-smi does without a driver
    proc, report = _doctor(kit, "--task", "ti2v-5B")
    visible = _check(report, "gpu.visible")
    assert visible["status"] == "FAIL" and "couldn't communicate with the NVIDIA driver" in visible["value"]
    assert "GPUS=all" in visible["fix"] and "wan22ctl up --recreate" in visible["fix"]
    assert _check(report, "gpu.vram")["status"] == "SKIP"


def test_compute_capability_7_5_fails(kit, running):
    fake_gpus(running, "1x16:7.5:Tesla T4")
    _, report = _doctor(kit, "--task", "ti2v-5B")
    arch = _check(report, "gpu.arch")
    assert arch["status"] == "FAIL" and "Tesla T4 cc 7.5" in arch["value"]
    assert "8.0 or newer" in arch["fix"]


def test_shm_memlock_and_health_measured_inside_the_container(kit, running):
    fake_gpus(running, "1x80:9.0:NVIDIA H100 80GB HBM3")
    _, report = _doctor(kit)
    code, out = running.exec_run(["df", "-k", "/dev/shm"])
    shm_kb = int(out.decode().splitlines()[-1].split()[1])
    shm = _check(report, "container.shm")
    assert shm["data"]["size_gb"] == round(shm_kb / 1024**2, 3)
    assert shm["status"] == ("PASS" if shm_kb >= 1024**2 else "WARN")
    memlock = _check(report, "container.memlock")  # MEMLOCK=off: the host's cap applies
    assert memlock["status"] == "WARN" and memlock["value"].endswith("KB")
    assert "MEMLOCK=unlimited" in memlock["fix"]
    assert _check(report, "container.health")["value"] == "running, health healthy"


@pytest.fixture(scope="module")
def cuda_image(docker_client, standin_image):
    """The stand-in image declaring torch's CUDA 12.8 (the kit's label), an old driver and its own arch list."""
    tag = "wan22ctl-test/doctor-cuda:" + standin_image.rsplit(":", 1)[-1]
    dockerfile = (f"FROM {standin_image}\nLABEL io.wan22ctl.cuda-version=12.8.0\n"
                  "ENV CUDA_VERSION=12.1.0 WAN22_FAKE_DRIVER=470.82.01 "
                  'WAN22_FAKE_GPUS="1x40:8.0:NVIDIA A100-SXM4-40GB" TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0"\n')
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def test_driver_too_old_for_the_image_cuda(kit, cuda_image, docker_client, tmp_path):
    name = unique("wan22doc-cuda")
    cli = Cli(kit.cwd, {**kit.env, "CONTAINER_NAME": name, "DOCKER_IMAGE": cuda_image}, [name, probe_name(name)])
    try:
        assert cli("up", "--wait", "90").returncode == 0
        proc, report = _doctor(cli, "--task", "ti2v-5B")
        driver = _check(report, "gpu.driver")
        assert driver["status"] == "FAIL", driver
        assert driver["value"] == "driver 470.82.01, image CUDA 12.8.0"
        assert "570.26" in driver["requirement"] and "upgrade the NVIDIA driver" in driver["fix"]
        # The architecture list is the image's own (8.0 included), not the setting's default.
        arch = _check(report, "gpu.arch")
        assert arch["status"] == "PASS" and arch["data"]["arch_list"] == "8.0;8.6;9.0"
    finally:
        cli.remove_created(docker_client)


# ------------------------------------------------------------------------- disk


@pytest.fixture
def tiny_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "checkpoints"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_check_on_a_1mb_tmpfs(kit, tiny_tmpfs):
    proc, report = _doctor(kit, "--task", "ti2v-5B", extra_env={"CHECKPOINT_DIR": str(tiny_tmpfs)})
    disk = _check(report, "disk.checkpoints")
    assert disk["status"] == "FAIL"
    assert disk["data"]["free_gb"] <= 0.0011 and disk["data"]["needed_gb"] == 34
    assert disk["data"]["models"] == {"Wan-AI/Wan2.2-TI2V-5B": "absent"}
    assert f"at {tiny_tmpfs}" in disk["value"] and "CHECKPOINT_DIR" in disk["fix"]


def test_preflight_download_checks_folders_and_leaves_disk_to_the_hub_sizes(tiny_tmpfs, kit, tmp_path):
    """`download` runs the folder check only: its own preflight judges disk from the hub's real sizes."""
    from wan22ctl import catalog
    from wan22ctl.doctor import preflight, require
    from wan22ctl.errors import EnvError
    from wan22ctl.settings import load_settings

    small = load_settings(environ={**kit.env, "CHECKPOINT_DIR": str(tiny_tmpfs)})
    assert preflight(small, "download", models=catalog.resolve_selector("ti2va")) is None
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    broken = load_settings(environ={**kit.env, "CHECKPOINT_DIR": str(blocker / "ckpt")})
    with pytest.raises(EnvError) as err:
        require(broken, "download", models=catalog.resolve_selector("ti2v"))
    assert err.value.exit_code == 3 and "CHECKPOINT_DIR" in err.value.render()


def test_preflight_up_names_an_unusable_folder(kit, tmp_path):
    from wan22ctl.doctor import preflight
    from wan22ctl.settings import load_settings

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = load_settings(environ={**kit.env, "OUTPUT_DIR": str(blocker / "outputs")})
    failed = preflight(settings, "up")
    assert failed is not None and failed.id == "host.folders"
    assert f"OUTPUT_DIR={blocker / 'outputs'}" in failed.value and "OUTPUT_DIR" in failed.fix
    assert preflight(load_settings(environ=kit.env), "up") is None


def test_up_stops_before_anything_slow_on_an_unusable_folder(kit, tmp_path, docker_client):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    name = unique("wan22doc-up")
    proc = kit("up", extra_env={"CONTAINER_NAME": name, "OUTPUT_DIR": str(blocker / "outputs"),
                                "DOCKER_IMAGE": "wan22ctl-test/never-built:1", "IMAGE_MODE": "build"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"error: host folders: OUTPUT_DIR={blocker / 'outputs'} is not a writable folder" in proc.stderr
    assert "fix: " in proc.stderr and "Traceback" not in proc.stderr
    assert "building" not in proc.stdout  # no build was started
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


# ------------------------------------------------------------------------- Hugging Face (olah)


def test_hub_endpoint_token_and_repo(kit, hub):
    env = {"HF_ENDPOINT": hub.endpoint}
    _, report = _doctor(kit, "--task", "t2v-A14B", extra_env=env)
    assert _check(report, "hf.endpoint")["status"] == "PASS"
    assert _check(report, "hf.token")["status"] == "SKIP"
    repo = _check(report, "hf.repo")
    assert repo["status"] == "PASS" and "Wan-AI/Wan2.2-T2V-A14B" in repo["requirement"]

    with hub.require_token("hf_good"):
        _, report = _doctor(kit, "--task", "t2v-A14B", extra_env=env)
        repo = _check(report, "hf.repo")
        assert repo["status"] == "FAIL" and "needs a token" in repo["value"] and "HF_TOKEN" in repo["fix"]

        _, report = _doctor(kit, "--task", "t2v-A14B", extra_env={**env, "HF_TOKEN": "hf_bad"})
        token = _check(report, "hf.token")
        assert token["status"] == "FAIL" and token["value"] == "rejected (401)"
        assert "huggingface.co/settings/tokens" in token["fix"]
        assert _check(report, "hf.repo")["status"] == "FAIL"

        proc, report = _doctor(kit, "--task", "t2v-A14B", extra_env={**env, "HF_TOKEN": "hf_good"})
        token = _check(report, "hf.token")  # olah answers whoami with 504: only the repo check can tell
        assert token["status"] == "WARN" and "has no whoami" in token["value"]
        assert _check(report, "hf.repo")["status"] == "PASS"
        assert "hf_good" not in proc.stdout + proc.stderr

    with hub.gated():
        _, report = _doctor(kit, "--task", "i2v-A14B", extra_env={**env, "HF_TOKEN": "hf_good"})
        repo = _check(report, "hf.repo")
        assert repo["status"] == "FAIL" and "gated" in repo["value"]
        assert f"{hub.endpoint}/Wan-AI/Wan2.2-I2V-A14B" in repo["fix"]


# ------------------------------------------------------------------------- daemon and image


def test_unreachable_daemon_fails_once_and_skips_what_depends_on_it(kit, tmp_path):
    proc, report = _doctor(kit, "--task", "ti2v-5B", extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert proc.returncode == 1
    daemon = _check(report, "docker.daemon")
    assert daemon["status"] == "FAIL" and "cannot reach the Docker daemon" in daemon["value"]
    assert "systemctl start docker" in daemon["fix"]
    for check_id in ("image.present", "nvidia.runtime", "gpu.visible", "container.health"):
        assert _check(report, check_id)["status"] == "SKIP", check_id
    fails = {c["id"] for c in report["checks"] if c["status"] == "FAIL"}
    # The daemon once, and this module's unreachable hub; host RAM depends on the machine.
    assert fails - {"host.ram"} == {"docker.daemon", "hf.endpoint"}


def test_image_absent_and_not_pullable(kit, docker_client):
    ref = "127.0.0.1:9/wan22ctl/never-pushed:1"
    proc, report = _doctor(kit, extra_env={"DOCKER_IMAGE": ref, "IMAGE_MODE": "pull"})
    image = _check(report, "image.present")
    assert image["status"] == "FAIL" and "the registry says" in image["value"]
    assert "IMAGE_MODE=build" in image["fix"]
    assert _check(report, "nvidia.runtime")["status"] == "SKIP"
    proc, report = _doctor(kit, extra_env={"DOCKER_IMAGE": ref, "IMAGE_MODE": "build"})
    image = _check(report, "image.present")
    assert image["status"] == "WARN" and image["value"] == "not built yet" and "wan22ctl build" in image["fix"]
