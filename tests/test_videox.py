"""The VideoX-Fun stack against a real Docker Engine: `up --stack videox-fun`, `wan22ctl ui`, side by side.

The image is the product Dockerfile's `videox-fun` target (GPU_STACK=false) plus stand-ins at
the process boundary (tests/standins/videox.Dockerfile): nvidia-smi reporting one 24 GB GPU,
and a UI stand-in that the real launcher starts in place of VideoX-Fun's Gradio app. The
stand-in serves the launch plan at /plan, so the tests see what VideoX-Fun would be given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, KIT_INPUTS, REPO, STANDINS, cached_image
from tests.ports import free_port
from wan22ctl.agent.videox import ensure_checkout
from wan22ctl.errors import EnvError
from wan22ctl.catalog import VIDEOX
from wan22ctl.paths import CONTAINER_KIT_DIR
from wan22ctl.plan.image import BuildFacts, plan_image
from wan22ctl.plan.videox import (
    choose_gpu_memory_mode,
    plan_ui_launch,
    plan_videox_container,
    shm_warning,
    ui_host_address,
)
from wan22ctl.settings import load_settings


# ---------------------------------------------------------------------------- plans (no Docker)


@pytest.mark.parametrize("mib, mode", [
    (81559, "model_full_load"),  # H100 80GB
    (46068, "model_full_load"),  # L40S
    (24564, "model_cpu_offload"),  # RTX 4090
    (16384, "model_cpu_offload_and_qfloat8"),  # V100 16GB
    (12288, "sequential_cpu_offload"),  # RTX 3060
    (None, "sequential_cpu_offload"),  # nvidia-smi failed
])
def test_gpu_memory_mode_follows_gpu_memory(mib, mode):
    assert choose_gpu_memory_mode(mib) == mode


def test_ui_launch_plan_host_mode_loads_the_control_model():
    env = {"VIDEOX_DIR": "/vx", "VIDEOX_MODEL": "Wan2.2-Fun-5B-Control", "VIDEOX_SERVER_PORT": "7999"}
    launch = plan_ui_launch(env, 81559, model_present=True)
    assert launch.ui_mode == "host"
    assert launch.model_path == "/vx/models/Diffusion_Transformer/Wan2.2-Fun-5B-Control"
    assert (launch.model_type, launch.config_path) == ("Control", "config/wan2.2/wan_civitai_5b.yaml")
    assert launch.ui_module == "videox_fun.ui.wan2_2_fun_ui" and launch.scheduler_dict == "flow_scheduler_dict"
    assert (launch.gpu_memory_mode, launch.server_port) == ("model_full_load", 7999)

    cog = plan_ui_launch({**env, "VIDEOX_MODEL": "CogVideoX-Fun-V1.1-5b-InP",
                          "VIDEOX_GPU_MEMORY_MODE": "sequential_cpu_offload"}, 81559, model_present=False)
    assert (cog.ui_mode, cog.model_type, cog.config_path) == ("normal", "Inpaint", None)
    assert cog.ui_module == "videox_fun.ui.cogvideox_fun_ui" and cog.scheduler_dict == "ddpm_scheduler_dict"
    assert cog.gpu_memory_mode == "sequential_cpu_offload"  # an explicit mode wins over the GPU size

    with pytest.raises(ValueError, match="wan22ctl download fun-control"):
        plan_ui_launch({**env, "VIDEOX_UI_MODE": "host"}, None, model_present=False)


@pytest.mark.parametrize("mib, mode", [
    (143771, "model_full_load"),  # H200: both bf16 experts, T5 and activations
    (81559, "model_cpu_offload"),  # H100 80GB: one expert at a time
    (46068, "model_cpu_offload_and_qfloat8"),  # L40S
    (24564, "sequential_cpu_offload"),  # RTX 4090
])
def test_the_a14b_fun_models_get_a_mode_for_two_experts(mib, mode):
    env = {"VIDEOX_DIR": "/vx", "VIDEOX_MODEL": "Wan2.2-Fun-A14B-InP"}
    launch = plan_ui_launch(env, mib, model_present=True)
    assert (launch.gpu_memory_mode, launch.model_type, launch.config_path) == \
        (mode, "Inpaint", "config/wan2.2/wan_civitai_i2v.yaml")
    assert launch.ui_module == "videox_fun.ui.wan2_2_fun_ui" and "two 14B experts" in launch.gpu_memory_reason
    control = plan_ui_launch({**env, "VIDEOX_MODEL": "Wan2.2-Fun-A14B-Control"}, mib, model_present=True)
    assert (control.model_type, control.gpu_memory_mode) == ("Control", mode)


def test_models_the_ui_cannot_drive_name_their_example_script():
    for model, script in (("Wan2.2-VACE-Fun-A14B", "examples/wan2.2_vace_fun/predict_v2v_control.py"),
                          ("Wan2.2-Fun-A14B-Control-Camera", "examples/wan2.2_fun/predict_v2v_control_camera.py"),
                          ("Wan2.2-Fun-5B-Control-Camera", "examples/wan2.2_fun/predict_v2v_control_camera_5b.py")):
        with pytest.raises(ValueError, match=f"python {script}"):
            plan_ui_launch({"VIDEOX_MODEL": model}, 81559, model_present=True)
    with pytest.raises(ValueError, match="wan22ctl download fun-a14b-inp"):
        plan_ui_launch({"VIDEOX_MODEL": "Wan2.2-Fun-A14B-InP", "VIDEOX_UI_MODE": "host"}, None, model_present=False)


def test_spec_networking_and_no_secrets():
    host = plan_videox_container(load_settings(None, environ={"HF_TOKEN": "hf_secret123"}))
    assert host.network_mode == "host" and host.ports == {}
    assert host.environment["VIDEOX_SERVER_PORT"] == "7860"
    assert host.security_opt == ("seccomp=unconfined",) and host.shm_size == "200g"
    assert "hf_secret123" not in json.dumps(host.to_dict())
    bridged = plan_videox_container(load_settings(None, environ={"VIDEOX_HOST_NETWORK": "false", "VIDEOX_PORT": "8111"}))
    assert bridged.network_mode is None and bridged.ports == {"7860/tcp": 8111}
    assert bridged.environment["VIDEOX_SERVER_PORT"] == "7860"


def test_shm_warning_and_ui_address():
    assert "VIDEOX_SHM_SIZE=200g" in shm_warning("200g", 128 * 1024**3)
    assert "at most 128g" in shm_warning("200g", 128 * 1024**3)
    assert shm_warning("200g", 256 * 1024**3) is None
    assert shm_warning("200g", None) is None
    assert ui_host_address(None) == "localhost"
    assert ui_host_address("unix:///var/run/docker.sock") == "localhost"
    assert ui_host_address("tcp://gpu-box.lan:2376") == "gpu-box.lan"
    assert ui_host_address("ssh://me@gpu-box") == "gpu-box"


# ---------------------------------------------------------------------------- real Docker

docker = pytest.mark.docker


@pytest.fixture(scope="session")
def videox_image(docker_client, kit_image) -> str:
    """Dockerfile target videox-fun (GPU_STACK=false) with the nvidia-smi and UI stand-ins."""
    target = cached_image(docker_client, "wan22ctl-test/videox", KIT_INPUTS, BASE_IMAGE, REPO,
                          {"BASE_IMAGE": BASE_IMAGE, "GPU_STACK": "false"}, target="videox-fun")
    return cached_image(docker_client, "wan22ctl-test/videox-standin",
                        [STANDINS / "videox.Dockerfile", STANDINS / "nvidia-smi", STANDINS / "videox_ui_standin.py"],
                        target, STANDINS, {"VIDEOX_IMAGE": target}, dockerfile="videox.Dockerfile")



@pytest.fixture
def vx(cli, videox_image):
    """The `cli` fixture set up for the VideoX-Fun stack on a free published port."""
    cli.env.update(VIDEOX_IMAGE=videox_image, VIDEOX_IMAGE_MODE="pull", VIDEOX_HOST_NETWORK="false",
                   VIDEOX_PORT=str(free_port()))
    return cli


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def vx_up(cli):
    r = cli("up", "--stack", "videox-fun")
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def write_control(cli, control: dict) -> None:
    models = Path(cli.env["VIDEOX_MODELS_DIR"])
    models.mkdir(parents=True, exist_ok=True)
    (models / "standin.json").write_text(json.dumps(control))


@docker
def test_up_then_ui_prints_the_url(vx, docker_client, tmp_path):
    write_control(vx, {"delay_s": 3})  # the UI listens a few seconds after the container starts
    r = vx_up(vx)
    name = vx.env["VIDEOX_CONTAINER_NAME"]
    assert f"{name} created" in r.stdout and "wan22ctl ui" in r.stdout
    # This Docker host has less memory than the default 200g /dev/shm: a warning, not a failure.
    assert "warning: VIDEOX_SHM_SIZE=200g is more than the Docker host's memory" in r.stdout
    for sub in ("Diffusion_Transformer", "Personalized_Model"):
        assert (tmp_path / "videox-models" / sub).is_dir()  # made on the host before the container

    port = vx.env["VIDEOX_PORT"]
    r = vx("ui", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"VideoX-Fun UI ready: http://localhost:{port}/" in r.stdout
    assert "normal mode" in r.stderr and "GPU memory mode model_cpu_offload" in r.stderr

    plan = get_json(f"http://127.0.0.1:{port}/plan")
    assert plan["gpu_memory_mode"] == "model_cpu_offload"  # auto, from the stand-in's 24 GB GPU
    assert plan["ui_mode"] == "normal"  # no model downloaded yet: VideoX-Fun's model picker
    assert plan["cwd"] == "/workspace/VideoX-Fun" and plan["server_port"] == 7860
    assert plan["savedir"] == "/opt/outputs/videox-fun"
    assert (tmp_path / "outputs" / "videox-fun").is_dir()

    container = docker_client.containers.get(name)
    attrs = container.attrs
    assert attrs["HostConfig"]["ShmSize"] == 200 * 1024**3
    assert attrs["HostConfig"]["SecurityOpt"] == ["seccomp=unconfined"]
    assert attrs["HostConfig"]["PortBindings"] == {"7860/tcp": [{"HostIp": "", "HostPort": port}]}
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace/VideoX-Fun/models"]["Source"] == str(tmp_path / "videox-models")
    assert mounts[f"{CONTAINER_KIT_DIR}/wan22ctl"]["RW"] is False

    r = vx("ui", "--json", "--timeout", "5")
    data = json.loads(r.stdout)
    assert (data["url"], data["http_status"], data["gpu_memory_mode"]) == (f"http://localhost:{port}/", 200, "model_cpu_offload")
    code, out = container.exec_run(["python3", "-m", "wan22ctl.agent.videox", "ui-health"])
    assert code == 0, out  # the container's health check sees the UI too


@docker
def test_downloaded_model_is_loaded_at_start_on_host_networking(vx, hub, tmp_path):
    # `wan22ctl download fun-control` (issue 3's code, real HF-compatible server) puts the model
    # where VideoX-Fun looks; the launcher then starts the UI in host mode with it loaded.
    vx.env.update(HF_ENDPOINT=hub.endpoint)
    r = vx("download", "fun-control", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    model = tmp_path / "videox-models" / "Diffusion_Transformer" / "Wan2.2-Fun-5B-Control"
    assert (model / "config.json").read_bytes() == hub.files["alibaba-pai/Wan2.2-Fun-5B-Control"]["config.json"]

    vx.env.update(VIDEOX_HOST_NETWORK="true", VIDEOX_GPU_MEMORY_MODE="model_full_load", VIDEOX_SHM_SIZE="1g")
    r = vx_up(vx)
    assert "warning" not in r.stdout
    port = vx.env["VIDEOX_PORT"]
    r = vx("ui", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    plan = get_json(f"http://127.0.0.1:{port}/plan")
    assert plan["ui_mode"] == "host" and plan["model_type"] == "Control"
    assert plan["model_path"] == "/workspace/VideoX-Fun/models/Diffusion_Transformer/Wan2.2-Fun-5B-Control"
    assert plan["config_path"] == "config/wan2.2/wan_civitai_5b.yaml"
    assert plan["gpu_memory_mode"] == "model_full_load" and plan["server_port"] == int(port)


@docker
def test_ui_times_out_with_the_last_log_lines(vx):
    write_control(vx, {"mode": "hang"})
    vx_up(vx)
    r = vx("ui", "--timeout", "4")
    assert r.returncode == 1
    assert f"did not answer at http://localhost:{vx.env['VIDEOX_PORT']}/ within 4s" in r.stderr
    assert "loading the model forever, never listening" in r.stderr  # the container's own log line


@docker
def test_ui_fails_when_the_launcher_stops(vx):
    vx.env["VIDEOX_UI_MODE"] = "host"  # host mode without the model: the launcher refuses
    vx_up(vx)
    r = vx("ui", "--timeout", "60")
    assert r.returncode == 1
    assert "stopped before its UI answered" in r.stderr and "exit code 2" in r.stderr
    assert "wan22ctl download fun-control" in r.stderr  # the launcher's own message, from the log


@docker
def test_ui_without_the_container_says_how_to_start_it(vx):
    r = vx("ui")
    assert r.returncode == 3  # the environment lacks the container: EnvError, as for every command that needs one
    assert "does not exist" in r.stderr and "wan22ctl up --stack videox-fun" in r.stderr


@docker
def test_both_stacks_side_by_side(vx, docker_client):
    main, videox = vx.env["CONTAINER_NAME"], vx.env["VIDEOX_CONTAINER_NAME"]
    r = vx("up", "--wait", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    vx_up(vx)
    assert vx("ui", "--timeout", "60").returncode == 0

    r = vx("status", "--json")
    report = {c["stack"]: c for c in json.loads(r.stdout)["containers"]}
    assert {k: c["state"] for k, c in report.items()} == {"main": "running", "videox-fun": "running"}
    assert report["videox-fun"]["url"] == f"http://localhost:{vx.env['VIDEOX_PORT']}/"

    r = vx("down", "--stack", "videox-fun")
    assert r.returncode == 0 and f"{videox} removed" in r.stdout
    assert docker_client.containers.get(main).status == "running"

    vx_up(vx)
    r = vx("down")
    assert r.returncode == 0 and f"{main} removed" in r.stdout
    assert docker_client.containers.get(videox).status == "running"
    assert vx("ui", "--timeout", "60").returncode == 0  # the UI still answers


def test_launcher_fetches_videox_fun_into_the_mounted_checkout(tmp_path):
    """A pulled image without VideoX-Fun: the launcher fetches the pinned commit with real git,
    around the already-mounted models/ folder (which `git clone` would refuse)."""

    upstream = tmp_path / "upstream"
    (upstream / "videox_fun").mkdir(parents=True)
    (upstream / "videox_fun" / "__init__.py").write_text("")
    (upstream / "models").mkdir()
    (upstream / "models" / "put models here.txt").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(upstream)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pinned"],
                 ["config", "uploadpack.allowAnySHA1InWant", "true"]):
        subprocess.run(git + args, check=True)
    pinned = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (upstream / "later.txt").write_text("")
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "later"], check=True)

    checkout = tmp_path / "VideoX-Fun"
    (checkout / "models" / "Diffusion_Transformer" / "Wan2.2-Fun-5B-Control").mkdir(parents=True)  # the mount
    ensure_checkout(str(checkout), f"file://{upstream}", pinned)
    assert (checkout / "videox_fun" / "__init__.py").is_file()
    assert not (checkout / "later.txt").exists()  # the pinned commit, not the branch tip
    assert (checkout / "models" / "Diffusion_Transformer" / "Wan2.2-Fun-5B-Control").is_dir()
    ensure_checkout(str(checkout), "file:///nonexistent", pinned)  # present: nothing fetched again

    with pytest.raises(EnvError, match="fetching VideoX-Fun failed"):
        ensure_checkout(str(tmp_path / "other"), "file:///nonexistent", pinned)


# A stand-in VideoX-Fun checkout for videox_app.py: the same module paths and entry-point
# signatures as aigc-apps/VideoX-Fun at VIDEOX_REF (examples/*/app.py), recording what they get.
_FAKE_UI = '''
import json, os
def _record(**kw):
    class Demo:
        def queue(self, status_update_rate):
            kw["status_update_rate"] = status_update_rate
            return self
        def launch(self, server_name, server_port, prevent_thread_lock):
            kw.update(server_name=server_name, server_port=server_port)
            return "app", None, None
    return Demo(), kw
def ui(GPU_memory_mode, scheduler_dict, {config}compile_dit, weight_dtype, savedir_sample=None):
    return _record(entry="ui", mode=GPU_memory_mode, scheduler=scheduler_dict, {config_rec}
                   dtype=weight_dtype, savedir=savedir_sample, cwd=os.getcwd())
def ui_host(GPU_memory_mode, scheduler_dict, model_name, model_type, {config}compile_dit, weight_dtype, savedir_sample=None):
    return _record(entry="ui_host", mode=GPU_memory_mode, scheduler=scheduler_dict, model=model_name,
                   model_type=model_type, {config_rec}dtype=weight_dtype, savedir=savedir_sample, cwd=os.getcwd())
'''
_FAKE_API = '''
import json, os
def update_diffusion_transformer_api(_, app, controller):
    controller["apis"] = controller.get("apis", []) + ["update_diffusion_transformer"]
    with open(os.environ["RECORD"], "w") as f:
        json.dump(controller, f)
    os._exit(0)  # instead of serving forever
def infer_forward_api(_, app, controller):
    controller["apis"] = controller.get("apis", []) + ["infer_forward"]
'''


def _fake_checkout(root):
    files = {
        "torch/__init__.py": "bfloat16, float16 = 'bf16', 'fp16'\nclass cuda:\n    is_available = staticmethod(lambda: False)\n",
        "videox_fun/__init__.py": "", "videox_fun/api/__init__.py": "", "videox_fun/api/api.py": _FAKE_API,
        "videox_fun/ui/__init__.py": "",
        "videox_fun/ui/controller.py": "flow_scheduler_dict = 'flow'\nddpm_scheduler_dict = 'ddpm'\n",
        "videox_fun/ui/wan2_2_fun_ui.py": _FAKE_UI.replace("{config}", "config_path, ").replace("{config_rec}", "config=config_path, "),
        "videox_fun/ui/cogvideox_fun_ui.py": _FAKE_UI.replace("{config}", "").replace("{config_rec}", ""),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.mark.parametrize("model, present, expected", [
    ("Wan2.2-Fun-5B-Control", True, {"entry": "ui_host", "model_type": "Control", "scheduler": "flow",
                                     "config": "config/wan2.2/wan_civitai_5b.yaml"}),
    ("Wan2.2-Fun-5B-Control", False, {"entry": "ui", "scheduler": "flow", "config": "config/wan2.2/wan_civitai_5b.yaml"}),
    ("CogVideoX-Fun-V1.1-5b-InP", True, {"entry": "ui_host", "model_type": "Inpaint", "scheduler": "ddpm"}),
])
def test_videox_app_calls_videox_funs_entry_points(tmp_path, model, present, expected):
    """The real launcher, then the real videox_app.py, against a stand-in VideoX-Fun checkout."""
    checkout = tmp_path / "VideoX-Fun"
    _fake_checkout(checkout)
    if present:
        (checkout / "models" / "Diffusion_Transformer" / model).mkdir(parents=True)
        (checkout / "models" / "Diffusion_Transformer" / model / "config.json").write_text("{}")
    record = tmp_path / "record.json"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}:{checkout}", "RECORD": str(record),
           "VIDEOX_DIR": str(checkout), "VIDEOX_MODEL": model, "VIDEOX_GPU_MEMORY_MODE": "model_cpu_offload",
           "VIDEOX_SERVER_PORT": "7861", "VIDEOX_OUTPUT_DIR": str(tmp_path / "out"),
           "VIDEOX_PYTHON": sys.executable}
    r = subprocess.run([sys.executable, "-m", "wan22ctl.agent.videox", "ui"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(record.read_text())
    assert {k: got.get(k) for k in expected} == expected
    assert got["mode"] == "model_cpu_offload" and got["dtype"] == "fp16"  # no bf16 without CUDA
    assert (got["server_name"], got["server_port"], got["status_update_rate"]) == ("0.0.0.0", 7861, 1)
    assert got["savedir"] == str(tmp_path / "out") and got["cwd"] == str(checkout)
    assert got["apis"] == ["infer_forward", "update_diffusion_transformer"]
    if present:
        assert got["model"] == str(checkout / "models" / "Diffusion_Transformer" / model)
    for sub in ("Diffusion_Transformer", "Personalized_Model"):
        assert (checkout / "models" / sub).is_dir()


def test_build_mode_does_not_tag_our_image_as_pais():
    pai = "mybigpai-public-registry.cn-beijing.cr.aliyuncs.com/easycv/torch_cuda:cogvideox_fun"
    pulled = load_settings(None, environ={})
    built = load_settings(None, environ={"VIDEOX_IMAGE_MODE": "build"})
    mine = load_settings(None, environ={"VIDEOX_IMAGE_MODE": "build", "VIDEOX_IMAGE": "me/vx:1"})
    assert plan_videox_container(pulled).image == pai
    assert plan_videox_container(built).image == "wan22ctl/videox-fun:0.1.0"
    assert plan_videox_container(mine).image == "me/vx:1"
    plan = plan_image(built, VIDEOX, str(REPO), BuildFacts("classic", "0123"), present=False)
    assert (plan.action, plan.ref, plan.build.tag, plan.build.target) == (
        "build", "wan22ctl/videox-fun:0.1.0", "wan22ctl/videox-fun:0.1.0", "videox-fun")
    assert plan.build.buildargs["VIDEOX_REF"] == "804a4258e2608f855ccaec8fffa279e75a3b89c6"


@docker
def test_no_nvidia_runtime_is_named_and_leaves_no_container(vx, docker_client):
    vx.env["GPUS"] = "all"  # this Docker Engine has no NVIDIA runtime
    r = vx("up", "--stack", "videox-fun")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "NVIDIA Container Toolkit" in r.stderr and "Traceback" not in r.stderr
    import docker as docker_py

    with pytest.raises(docker_py.errors.NotFound):  # the half-created container was removed
        docker_client.containers.get(vx.env["VIDEOX_CONTAINER_NAME"])


def test_pkg_resources_stand_in_when_setuptools_lacks_it():
    """VideoX-Fun's controller imports pkg_resources, gone from recent setuptools (found starting the real UI)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"  # what a setuptools without it looks like
        "from wan22ctl.agent.videox_app import provide_pkg_resources\n"
        "del sys.modules['pkg_resources']\n"
        "import importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'pkg_resources': raise ImportError('no pkg_resources')\n"
        "sys.meta_path.insert(0, Block())\n"
        "provide_pkg_resources()\n"
        "import pkg_resources\n"
        "print(pkg_resources.get_distribution('pytest').version)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    import pytest as _pytest

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _pytest.__version__
