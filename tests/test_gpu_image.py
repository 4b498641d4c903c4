"""The image users build, with its GPU stack, built for real and smoke-tested inside.

The `gpu_image` fixture (conftest.py) builds the product Dockerfile with GPU_STACK=true on the
Debian test base: torch 2.8.0 (cu128) from PyPI, the requirements of the stand-in Wan2.2 tree
(upstream's requirements.txt at WAN22_REF, byte for byte: tests/test_upstream.py), flash-attn
skipped, FlashAttention-4 and cuDNN's Python frontend installed. No GPU here, so each check goes as far as a machine without
one can: versions and labels, imports, `pip check`, the kit's bootstrap up to the first CUDA call,
the health check.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, clean_environ

pytestmark = pytest.mark.docker

# What Wan2.2 at WAN22_REF imports (wan/__init__.py imports every pipeline eagerly) and the kit
# runs it with (the resident server's HTTP stack too): each must import in the image's Python.
IMPORTS = ("torch", "torchvision", "torchaudio", "flash_attn.cute", "cudnn", "diffusers", "transformers", "tokenizers",
           "accelerate", "decord", "librosa", "cv2", "imageio", "imageio_ffmpeg", "easydict", "ftfy", "dashscope",
           "peft", "einops", "safetensors", "PIL", "tqdm", "numpy", "triton",
           "fastapi", "uvicorn", "httptools", "uvloop", "python_multipart", "sse_starlette")

# `pip check` findings that are expected, each with the reason it is harmless. Empty: a clean check.
PIP_CHECK_EXCEPTIONS: dict[str, str] = {}


def in_image(client, image: str, command: list[str] | str, **kw) -> tuple[int, str, str]:
    """Run `command` in a fresh container of `image`: exit code, stdout, stderr."""
    if isinstance(command, str):
        command = ["bash", "-c", command]
    container = client.containers.run(image, command, detach=True, **kw)
    try:
        code = container.wait(timeout=600)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
    finally:
        container.remove(force=True)
    return code, out, err


def test_torch_and_its_cuda_runtime_match_the_image_labels(docker_client, gpu_image):
    labels = docker_client.images.get(gpu_image).labels
    code, out, err = in_image(docker_client, gpu_image, [
        "python3", "-c", "import json, torch, importlib.metadata as m; print(json.dumps({'torch': torch.__version__, "
        "'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
        "'runtime': m.version('nvidia-cuda-runtime-cu12')}))"])
    assert code == 0, err
    seen = json.loads(out)
    assert seen["torch"].split("+")[0] == labels["io.wan22ctl.torch-version"] == "2.8.0"
    assert seen["cuda"] == labels["io.wan22ctl.cuda-version"] == "12.8"
    assert seen["runtime"].startswith("12.8.") and seen["cudnn"] >= 91000


def test_every_import_wan_and_the_kit_need_succeeds(docker_client, gpu_image):
    script = ("import importlib, json, traceback\nresult = {}\n"
              f"for name in {IMPORTS!r}:\n"
              "    try:\n        importlib.import_module(name); result[name] = 'ok'\n"
              "    except BaseException as exc:\n        result[name] = f'{type(exc).__name__}: {exc}'\n"
              "print(json.dumps(result))\n")
    code, out, err = in_image(docker_client, gpu_image, ["python3", "-c", script])
    assert code == 0, err
    failed = {k: v for k, v in json.loads(out.strip().splitlines()[-1]).items() if v != "ok"}
    assert not failed, failed


def test_pip_check_is_clean_or_its_exceptions_are_explained(docker_client, gpu_image):
    code, out, err = in_image(docker_client, gpu_image, ["python3", "-m", "pip", "check"])
    findings = [line for line in out.splitlines() if line.strip() and "No broken requirements" not in line]
    unexplained = [line for line in findings if not any(line.startswith(k) for k in PIP_CHECK_EXCEPTIONS)]
    assert not unexplained, out + err
    assert code == (1 if findings else 0)


def test_the_agent_runs_the_bootstrap_until_a_gpu_is_needed(docker_client, gpu_image):
    """`wan22ctl generate`'s container side: plan -> launcher -> wanrun (backend and speedups
    installed) -> generate.py -> `import wan`, whose first CUDA call ends it with the kit's line."""
    plan = subprocess.run([sys.executable, "-m", "wan22ctl", "plan", "--task", "t2v-A14B", "--prompt", "a red fox",
                           "--gpu-count", "1", "--gpu-mem-gb", "141", "--json"],
                          cwd=REPO, env=clean_environ(), capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "wan22ctl.agent.wanrun" in plan.stdout  # the plan starts Wan through the bootstrap
    code, out, err = in_image(docker_client, gpu_image, ["wan22ctl-agent", "generate", "--plan-json", plan.stdout])
    assert code == 3 and "error: generate.py exited with code 3" in err, out + err  # 3: an environment fault
    line = "error: Wan2.2 needs a CUDA GPU and this container sees none (torch 2.8.0+cu128: Found no NVIDIA driver"
    assert line in err and "GPUS=all" in err and "Traceback" not in out + err
    assert '"event":"phase","name":"load","state":"start"' in out  # the launcher ran it and watched


HAND_TYPED = ('cd /workspace/wan2.2 && python generate.py --task t2v-A14B --size 1280*720 '
              '--ckpt_dir ./checkpoints/Wan2.2-T2V-A14B --offload_model True --prompt "a red fox"')


def test_a_hand_typed_generate_gets_the_kit_and_the_same_line(docker_client, gpu_image):
    code, out, err = in_image(docker_client, gpu_image, HAND_TYPED)
    assert code == 1, out + err
    lines = err.strip().splitlines()
    assert lines[0].startswith("wan22ctl: attention picked per GPU at first use, WAN22_ATTENTION=auto; speedups: "), err
    assert lines[-1].startswith("error: Wan2.2 needs a CUDA GPU and this container sees none"), err


def test_upstreams_own_attention_is_refused_at_once_with_flash_attn_4_alone(docker_client, gpu_image):
    """FLASH_ATTN=none: flash-attn-4's bare `flash_attn` namespace would pass upstream's probe and
    fail its first attention call, after the weights have loaded."""
    code, out, err = in_image(docker_client, gpu_image, "export WAN22_BOOTSTRAP=0; " + HAND_TYPED)
    assert code == 3, out + err
    assert err.startswith("error: WAN22_BOOTSTRAP=0 runs Wan2.2's own attention, which needs flash-attn 2"), err


def test_health_answers(docker_client, gpu_image):
    code, out, err = in_image(docker_client, gpu_image, ["wan22ctl-agent", "health"])
    assert (code, out.strip()) == (0, "healthy"), err
