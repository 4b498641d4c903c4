"""`wan22ctl download | verify | models` against a real HF-compatible server (olah behind the test proxy).

Each test drives the real CLI and asserts on what a user sees: exit codes, messages, files on
disk, and (through the proxy's byte counters) what went over the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hubserver import BIG_FILE

T2V = "Wan-AI/Wan2.2-T2V-A14B"
TI2V = "Wan-AI/Wan2.2-TI2V-5B"
SHARD = "high_noise_model/diffusion_pytorch_model-00003-of-00006.safetensors"

pytestmark = pytest.mark.hub


def _at_hub(cli, hub):
    cli.env.update(HF_ENDPOINT=hub.endpoint, WAN22CTL_HUB_RETRIES="3", WAN22CTL_HUB_BACKOFF_S="0.2")
    cli.env.pop("HF_TOKEN", None)
    cli.hub = hub
    return cli


@pytest.fixture
def dl(host_cli, hub):
    """The CLI pointed at the test hub (host side, no Docker needed), fast retries, no token."""
    return _at_hub(host_cli, hub)


@pytest.fixture
def dl_container(cli, hub):
    """The same, with a Docker Engine and the kit image for downloads through the container."""
    return _at_hub(cli, hub)


def ckpt(cli) -> Path:
    return Path(cli.env["CHECKPOINT_DIR"])


def assert_same_tree(hub, repo_id: str, target: Path) -> None:
    for rel, data in hub.files[repo_id].items():
        got = target / rel
        assert got.is_file(), f"{rel} missing under {target}"
        assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest(), rel


def models_json(cli) -> dict:
    r = cli("models", "--json")
    assert r.returncode == 0, r.stderr
    return {m["key"]: m for m in json.loads(r.stdout)["models"]}


def fetched(hub, repo_id: str) -> set[str]:
    return {k.removeprefix(repo_id + "/") for k, n in hub.served.items() if k.startswith(repo_id + "/") and n}


# --------------------------------------------------------------------------- input errors


def test_unknown_selector_lists_valid_ones_and_exits_2(dl):
    r = dl("download", "t2v", "wan3-ultra", "--local")
    assert r.returncode == 2
    assert "unknown model selector 'wan3-ultra'" in r.stderr
    for valid in ("t2v", "i2v", "ti2va", "ti2v-5b", "fun-control", "cogvideox-fun", T2V):
        assert valid in r.stderr
    assert "Traceback" not in r.stderr
    assert not dl.hub.requests  # refused before any network call


# --------------------------------------------------------------------------- local downloads


def test_local_download_lands_in_wan_layout_and_models_reports_states(dl):
    r = dl("download", "t2v", "--local")
    assert r.returncode == 0, r.stderr
    target = ckpt(dl) / "Wan2.2-T2V-A14B"
    assert_same_tree(dl.hub, T2V, target)
    manifest = json.loads((target / ".wan22ctl-manifest.json").read_text())
    assert manifest["commit"] == dl.hub.commits[T2V]
    assert manifest["files"][SHARD]["sha256"] == hashlib.sha256(dl.hub.files[T2V][SHARD]).hexdigest()
    assert "t2v: complete" in r.stderr

    states = models_json(dl)
    assert states["t2v"]["state"] == "complete" and states["t2v"]["revision"] == dl.hub.commits[T2V]
    assert states["i2v"]["state"] == "absent"
    assert states["cogvideox-fun"]["state"] == "absent"

    # A second run fetches nothing: every file is vouched for by the ledger.
    dl.hub.reset_counters()
    again = dl("download", "t2v", "--local")
    assert again.returncode == 0, again.stderr
    assert fetched(dl.hub, T2V) == set()

    # A missing tokenizer file makes the model partial and names what is missing.
    (target / "google/umt5-xxl/spiece.model").unlink()
    (target / SHARD).unlink()
    states = models_json(dl)
    assert states["t2v"]["state"] == "partial"
    assert SHARD in states["t2v"]["missing"]
    assert "google/umt5-xxl/spiece.model" in states["t2v"]["missing"]
    human = dl("models")
    assert human.returncode == 0 and "partial" in human.stdout

    # ... and the next download fetches exactly those two files.
    dl.hub.reset_counters()
    r = dl("download", "t2v", "--local")
    assert r.returncode == 0, r.stderr
    assert fetched(dl.hub, T2V) == {SHARD, "google/umt5-xxl/spiece.model"}
    assert models_json(dl)["t2v"]["state"] == "complete"

    # A Kubernetes pod's init container waits for each model it needs in turn (`kube render`).
    wait = subprocess.run([sys.executable, "-m", "wan22ctl.agent", "models", "--checkpoint-dir", str(ckpt(dl)),
                           "--wait-for", "t2v", "--wait-for", "no-such-model"], capture_output=True, text=True,
                          timeout=60)
    assert wait.stdout.startswith("t2v: complete") and wait.returncode == 2, (wait.stdout, wait.stderr)
    assert "unknown model 'no-such-model'" in wait.stderr


LIGHTNING = "lightx2v/Wan2.2-Lightning"
T2V_LORAS = "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1"


def test_lightning_selectors_fetch_one_release_folder_verified_and_resumable(dl):
    r = dl("download", "lightning-t2v", "--local")
    assert r.returncode == 0, r.stderr
    target = ckpt(dl) / "loras" / "lightning-t2v"
    wanted = {p for p in dl.hub.files[LIGHTNING] if p.startswith(T2V_LORAS + "/")}
    assert fetched(dl.hub, LIGHTNING) == wanted  # not the other releases, not the README
    for rel in wanted:
        assert (target / rel).read_bytes() == dl.hub.files[LIGHTNING][rel]
    manifest = json.loads((target / ".wan22ctl-manifest.json").read_text())
    assert set(manifest["files"]) == wanted and manifest["commit"] == dl.hub.commits[LIGHTNING]
    states = models_json(dl)
    assert states["lightning-t2v"]["state"] == "complete" and states["lightning-i2v"]["state"] == "absent"

    # the same guarantees as a checkpoint: a flipped byte is found and only that file fetched again
    lora = target / T2V_LORAS / "high_noise_model.safetensors"
    st = lora.stat()
    data = bytearray(lora.read_bytes())
    data[100] ^= 0x01
    lora.write_bytes(bytes(data))
    os.utime(lora, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = dl("verify", "lightning-t2v", "--local")
    assert r.returncode == 1 and "corrupt" in r.stderr and "wan22ctl download lightning-t2v" in r.stderr
    dl.hub.reset_counters()
    lora.with_name("low_noise_model.safetensors").unlink()
    assert dl("download", "lightning-t2v", "--local").returncode == 0
    assert fetched(dl.hub, LIGHTNING) == {f"{T2V_LORAS}/high_noise_model.safetensors",
                                          f"{T2V_LORAS}/low_noise_model.safetensors"}
    assert lora.read_bytes() == dl.hub.files[LIGHTNING][f"{T2V_LORAS}/high_noise_model.safetensors"]

    # the I2V selector lands beside it, in its own folder, with its own manifest
    assert dl("download", "lightning-i2v", "--local").returncode == 0
    assert models_json(dl)["lightning-i2v"]["state"] == "complete"
    assert models_json(dl)["lightning-t2v"]["state"] == "complete"
    r = dl("download", "lightning-t2v", "--source", "modelscope", "--local")
    assert r.returncode == 2 and "no ModelScope copy" in r.stderr


def test_flipped_byte_is_found_by_verify_and_repaired_by_download(dl):
    assert dl("download", "t2v", "--local").returncode == 0
    shard = ckpt(dl) / "Wan2.2-T2V-A14B" / SHARD
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only a hash can tell

    r = dl("verify", "t2v", "--local")
    assert r.returncode == 1
    assert SHARD in r.stderr and "corrupt" in r.stderr
    assert "wan22ctl download t2v" in r.stderr
    states = models_json(dl)
    assert states["t2v"]["state"] == "partial"

    dl.hub.reset_counters()
    r = dl("download", "t2v", "--local")
    assert r.returncode == 0, r.stderr
    assert fetched(dl.hub, T2V) == {SHARD}
    assert shard.read_bytes() == dl.hub.files[T2V][SHARD]
    ok = dl("verify", "t2v", "--local", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["models"][0]["state"] == "complete"

    # Without the hub, verify falls back to the hashes the manifest recorded.
    from tests.hubserver import free_port

    offline = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "WAN22CTL_HUB_RETRIES": "1"}
    r = dl("verify", "t2v", "--local", extra_env=offline)
    assert r.returncode == 0, r.stderr
    assert "checking t2v against its manifest instead" in " ".join(r.stderr.split())
    shard.write_bytes(b"\0" * st.st_size)
    r = dl("verify", "t2v", "--local", extra_env=offline)
    assert r.returncode == 1 and SHARD in r.stderr


def test_resume_after_sigkill_fetches_only_the_rest(dl):
    hub = dl.hub
    hub.rate = 1_000_000  # ~8 s for the 8 MiB shard: long enough to be caught mid-file
    target = ckpt(dl) / "Wan2.2-TI2V-5B"
    proc = dl.popen("download", "ti2v-5b", "--local")
    try:
        incomplete = target / ".cache" / "wan22ctl" / "partial"
        deadline = time.monotonic() + 60
        partial = None
        while time.monotonic() < deadline:
            found = [p for p in incomplete.glob("*.part") if p.stat().st_size >= 2_000_000] if incomplete.is_dir() else []
            if found:
                partial = found[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert partial is not None, "no partial download appeared"
    finally:
        proc.kill()
        proc.communicate()
    have = partial.stat().st_size
    big = len(hub.files[TI2V][BIG_FILE])
    assert 0 < have < big
    assert not (target / BIG_FILE).exists()
    assert dl("models", "--json").returncode == 0
    assert models_json(dl)["ti2v-5b"]["state"] == "partial"

    hub.rate = 0
    hub.reset_counters()
    r = dl("download", "ti2v-5b", "--local")
    assert r.returncode == 0, r.stderr
    assert fetched(hub, TI2V) == {BIG_FILE}  # the small files that had finished were not fetched again
    assert hub.served[f"{TI2V}/{BIG_FILE}"] == big - have  # and the shard resumed where it stopped
    assert_same_tree(hub, TI2V, target)
    assert models_json(dl)["ti2v-5b"]["state"] == "complete"


def test_ctrl_c_stops_promptly_and_keeps_the_partial(dl):
    hub = dl.hub
    hub.rate = 1_000_000
    target = ckpt(dl) / "Wan2.2-TI2V-5B"
    proc = dl.popen("download", "ti2v-5b", "--local")
    try:
        partial = target / ".cache" / "wan22ctl" / "partial"
        deadline = time.monotonic() + 60
        while not (partial.is_dir() and any(p.stat().st_size > 1_000_000 for p in partial.glob("*.part"))):
            assert time.monotonic() < deadline and proc.poll() is None, "no partial download appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)  # workers stop at their next chunk, not at the end of the file
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted: finished files are verified and kept" in err and "Traceback" not in err
    kept = [p for p in partial.glob("*.part") if p.stat().st_size > 1_000_000]
    assert kept and not (target / BIG_FILE).exists()


def test_dropped_link_mid_file_resumes_in_the_same_run(dl):
    hub = dl.hub
    big = len(hub.files[TI2V][BIG_FILE])
    hub.cut_after = 3 * 1024 * 1024  # the first file body (the biggest goes first) stops at 3 MiB
    r = dl("download", "ti2v-5b", "--local")
    assert r.returncode == 0, r.stderr
    assert "retrying in" in r.stderr
    assert hub.served[f"{TI2V}/{BIG_FILE}"] == big  # the retry asked only for the missing bytes
    assert_same_tree(hub, TI2V, ckpt(dl) / "Wan2.2-TI2V-5B")


def test_corrupt_transfer_is_caught_by_its_hash_and_fetched_again(dl):
    hub = dl.hub
    hub.corrupt_next = True  # the first file body served arrives with one byte flipped
    r = dl("download", "ti2v-5b", "--local")
    assert r.returncode == 0, r.stderr
    bad = [line for line in r.stderr.splitlines() if "hash mismatch after download (attempt 1)" in line]
    assert len(bad) == 1, r.stderr
    rel = bad[0].split(": ")[1]
    assert hub.served[f"{TI2V}/{rel}"] == 2 * len(hub.files[TI2V][rel])  # fetched twice, nothing else was
    assert_same_tree(hub, TI2V, ckpt(dl) / "Wan2.2-TI2V-5B")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root can mount one here); unmounted afterwards."""
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_preflight_refuses_with_both_numbers_and_writes_nothing(dl, tiny_disk):
    dl.env["CHECKPOINT_DIR"] = str(tiny_disk)
    plan = dl("download", "ti2v-5b", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)["plans"][0]
    assert data["fits"] is False
    needed = data["space"][0]["needed_bytes"]
    free = data["space"][0]["free_bytes"]
    assert needed == data["total_bytes"] == sum(len(b) for b in dl.hub.files[TI2V].values())
    assert free <= 1024 * 1024

    r = dl("download", "ti2v-5b", "--local")
    assert r.returncode == 3
    line = " ".join(r.stderr.split())
    assert "not enough disk space" in line
    assert f"{free} bytes" in line and f"{needed} bytes" in line
    assert list(tiny_disk.iterdir()) == []
    assert fetched(dl.hub, TI2V) == set()


def test_disk_full_midway_keeps_completed_files(dl, tiny_disk):
    dl.env["CHECKPOINT_DIR"] = str(tiny_disk)
    assert dl("download", "t2v", "--local").returncode == 0  # ~180 KiB: fits
    r = dl("download", "ti2v-5b", "--local", "--force")  # 8 MiB on a 1 MiB disk, preflight overridden
    assert r.returncode == 3, r.stderr
    line = " ".join(r.stderr.split())
    assert "disk full while downloading Wan-AI/Wan2.2-TI2V-5B" in line
    assert "nothing completed was deleted" in line and "rerun the same command to resume" in line
    assert "Traceback" not in r.stderr
    states = models_json(dl)
    assert states["t2v"]["state"] == "complete"
    assert states["ti2v-5b"]["state"] == "partial"
    assert_same_tree(dl.hub, T2V, tiny_disk / "Wan2.2-T2V-A14B")
    partials = list((tiny_disk / "Wan2.2-TI2V-5B" / ".cache/wan22ctl/partial").glob("*.part"))
    assert partials and partials[0].stat().st_size > 0  # kept for the resume


# --------------------------------------------------------------------------- hub faults


def test_missing_bad_and_ungranted_tokens_name_hf_token(dl):
    hub = dl.hub
    with hub.require_token("hf_right"):
        r = dl("download", "t2v", "--local")
        assert r.returncode == 3
        assert "HF_TOKEN is not set" in r.stderr and "settings/tokens" in r.stderr

        r = dl("download", "t2v", "--local", extra_env={"HF_TOKEN": "hf_wrong"})
        assert r.returncode == 3
        assert "HF_TOKEN is set but was refused" in r.stderr
        assert "hf_wrong" not in r.stderr + r.stdout
    with hub.gated():
        r = dl("download", "t2v", "--local", extra_env={"HF_TOKEN": "hf_wrong"})
        assert r.returncode == 3
        assert "gated" in r.stderr and "HF_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_endpoint_is_retried_with_backoff_then_named(dl):
    from tests.hubserver import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    r = dl("download", "t2v", "--local", extra_env={"HF_ENDPOINT": dead})
    elapsed = time.monotonic() - start
    assert r.returncode == 3
    assert f"cannot reach the Hugging Face endpoint {dead}" in r.stderr
    assert "3 attempts" in r.stderr and "HF_ENDPOINT" in r.stderr
    assert r.stderr.count("retrying in") == 2
    assert "retrying in 0.2s" in r.stderr and "retrying in 0.4s" in r.stderr
    assert elapsed >= 0.6


# --------------------------------------------------------------------------- through the container


@pytest.mark.docker
def test_download_in_container_keeps_token_out_of_inspect_and_logs(dl_container, docker_client):
    dl = dl_container
    hub = dl.hub
    secret = "hf_SeCrEt" + os.urandom(6).hex()
    dl.env.update(HF_ENDPOINT=hub.container_endpoint, HF_TOKEN=secret)
    with hub.require_token(secret):
        r = dl("download", "t2v", "fun-control", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_tree(hub, T2V, ckpt(dl) / "Wan2.2-T2V-A14B")
    # fun-control is a VideoX-Fun model: fetched on the host into VIDEOX_MODELS_DIR/Diffusion_Transformer/
    videox = Path(dl.env["VIDEOX_MODELS_DIR"]) / "Diffusion_Transformer" / "Wan2.2-Fun-5B-Control"
    assert_same_tree(hub, "alibaba-pai/Wan2.2-Fun-5B-Control", videox)
    states = models_json(dl)
    assert states["t2v"]["state"] == "complete" and states["fun-control"]["state"] == "complete"
    # every repo request carried the token (huggingface_hub's own registry probe,
    # /api/agent-harnesses, goes without one), and the token went nowhere else
    repo_requests = [auth for _, path, auth in hub.requests if "/api/models/" in path or "/resolve/" in path]
    assert len(repo_requests) > 20 and all(auth == f"Bearer {secret}" for auth in repo_requests)
    container = docker_client.containers.get(dl.env["CONTAINER_NAME"])
    assert secret not in json.dumps(container.attrs)
    assert secret not in container.logs().decode("utf-8", "replace")
    assert secret not in r.stdout + r.stderr
    assert "downloading" in r.stderr  # the progress display rendered the streamed events

    # download_model.sh (inside the image) runs the same code
    code, out = container.exec_run(["download_model.sh"])
    assert code == 2 and b"usage" in out
    code, out = container.exec_run(["download_model.sh", "t2v"], environment={"HF_ENDPOINT": hub.container_endpoint,
                                                                               "HF_TOKEN": secret})
    assert code == 0, out.decode()
    assert b'"model_done"' in out

    # the host-side verify runs in the container too
    v = dl("verify", "t2v")
    assert v.returncode == 0, v.stderr
    assert "t2v: complete" in v.stderr

    # a CHECKPOINT_DIR that the running container does not mount is refused, not silently ignored
    moved = dl("download", "t2v", extra_env={"CHECKPOINT_DIR": str(ckpt(dl).parent / "elsewhere")})
    assert moved.returncode == 3
    assert "but CHECKPOINT_DIR is" in " ".join(moved.stderr.split())


def test_the_rest_of_the_family_downloads_into_its_layouts(dl):
    """s2v and animate land under CHECKPOINT_DIR in upstream's layout (wav2vec2 folder; CLIP,
    xlm-roberta, relighting LoRA and the preprocessing checkpoints), CosyVoice 2 (s2v's --tts-text)
    beside them; the Fun A14B models land in VideoX-Fun's models/Diffusion_Transformer with their
    two experts; every one complete."""
    r = dl("download", "s2v", "animate", "cosyvoice", "fun-a14b", "--local")
    assert r.returncode == 0, r.stderr
    assert_same_tree(dl.hub, "Wan-AI/Wan2.2-S2V-14B", ckpt(dl) / "Wan2.2-S2V-14B")
    assert_same_tree(dl.hub, "FunAudioLLM/CosyVoice2-0.5B", ckpt(dl) / "CosyVoice2-0.5B")
    assert_same_tree(dl.hub, "Wan-AI/Wan2.2-Animate-14B", ckpt(dl) / "Wan2.2-Animate-14B")
    assert (ckpt(dl) / "Wan2.2-Animate-14B/process_checkpoint/pose2d/vitpose_h_wholebody.onnx").is_file()
    videox = Path(dl.env["VIDEOX_MODELS_DIR"]) / "Diffusion_Transformer"
    for name in ("Wan2.2-Fun-A14B-InP", "Wan2.2-Fun-A14B-Control"):
        assert_same_tree(dl.hub, f"alibaba-pai/{name}", videox / name)
    states = models_json(dl)
    assert {k: states[k]["state"] for k in ("s2v", "animate", "cosyvoice", "fun-a14b-inp", "fun-a14b-control",
                                            "vace-fun-a14b")} == \
        {"s2v": "complete", "animate": "complete", "cosyvoice": "complete", "fun-a14b-inp": "complete",
         "fun-a14b-control": "complete", "vace-fun-a14b": "absent"}
