"""A real HF-compatible server for tests: olah (offline) behind a small auth/Range/throttle proxy.

    def test_x(hub_server):
        hub_server.endpoint            # http://127.0.0.1:PORT  (for the host)
        hub_server.container_endpoint  # http://172.17.0.1:PORT (for bridge-network containers)
        with hub_server.require_token("hf_good"):   # 401 without it, 401 for a wrong one
            ...
        with hub_server.gated():                    # 403 GatedRepo even with a token
            ...
        hub_server.rate = 2_000_000                 # bytes/s per response (0: unthrottled)
        hub_server.cut_after = 3_000_000            # the next file body stops there (link dropped)
        hub_server.corrupt_next = True              # the next file body has one byte flipped
        hub_server.served["Wan-AI/Wan2.2-TI2V-5B/config.json"]   # body bytes sent per file

Why a proxy: olah 0.5.4 serves git repositories under `mirrors-path/models/<org>/<repo>` (LFS
payloads under `.git/lfs/objects`) but never checks tokens and ignores `Range`. The proxy adds
what the real Hub does and the tests need: 401/403 with the Hub's `X-Error-Code` headers,
`Range` → 206 (so resume is byte-exact, as against huggingface.co), throttling (to catch a
download mid-file), a cut connection (a dropped link mid-file) and byte accounting (to prove
what was, and was not, fetched again).
It listens on 0.0.0.0 so containers on the default bridge reach it through the docker0 gateway.

The fixture repos mirror the real catalog layouts (T5 .pth, google/umt5-xxl/ tokenizer folder,
VAE, A14B high/low_noise_model shards with their index) at tiny sizes: olah reads every LFS
payload into memory on each request. `build_repo()` is reused by benchmarks/.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.ports import free_port, wait_answering  # noqa: F401 (free_port: also imported from here by other tests)
from wan22ctl import catalog

OLAH_CLI = os.environ.get("WAN22CTL_OLAH_CLI", "/opt/wan22ctl-ci/olah/bin/olah-cli")
def docker_gateway() -> str:
    """The host's address on Docker's default bridge (how bridge containers reach the proxy)."""
    if os.environ.get("WAN22CTL_DOCKER_GATEWAY"):
        return os.environ["WAN22CTL_DOCKER_GATEWAY"]
    try:
        import docker

        config = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"]
        return next(c["Gateway"] for c in config if c.get("Gateway"))
    except Exception:
        return "172.17.0.1"

# Files whose payload goes to LFS, as on the Hub (.gitattributes tracks these suffixes).
LFS_SUFFIXES = (".pth", ".safetensors", ".model", ".bin", ".onnx", ".pt", ".ckpt")



def _payload(name: str, size: int) -> bytes:
    return random.Random(name).randbytes(size)


def build_repo(mirrors: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """Make a git repo olah serves as `repo_id`; LFS files become pointers + objects. Returns the commit."""
    root = mirrors / "models" / repo_id
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", "-C", str(root)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    attrs = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
    (root / ".gitattributes").write_text(attrs)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(LFS_SUFFIXES):
            oid = hashlib.sha256(data).hexdigest()
            obj = root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n")
        else:
            path.write_bytes(data)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fixture"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _common(vae: str) -> dict[str, bytes]:
    return {
        "models_t5_umt5-xxl-enc-bf16.pth": _payload("t5", 96 * 1024),
        "google/umt5-xxl/special_tokens_map.json": _json({"eos_token": "</s>", "pad_token": "<pad>"}),
        "google/umt5-xxl/spiece.model": _payload("spiece", 8 * 1024),
        "google/umt5-xxl/tokenizer.json": _json({"version": "1.0", "model": {"type": "Unigram"}}),
        "google/umt5-xxl/tokenizer_config.json": _json({"model_max_length": 512}),
        vae: _payload(vae, 24 * 1024),
        "README.md": b"# tiny fixture of the real layout\n",
    }


def _dit(prefix: str, shards: int, shard_size: int, seed: str) -> dict[str, bytes]:
    names = [f"diffusion_pytorch_model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    files = {f"{prefix}config.json": _json({"_class_name": "WanModel", "dim": 64})}
    files[f"{prefix}diffusion_pytorch_model.safetensors.index.json"] = _json(
        {"metadata": {"total_size": shard_size * shards}, "weight_map": {f"w{i}": n for i, n in enumerate(names)}}
    )
    for n in names:
        files[prefix + n] = _payload(seed + prefix + n, shard_size)
    return files


# TI2V-5B carries one shard big enough (8 MiB) to be caught mid-transfer when throttled.
BIG_FILE = "diffusion_pytorch_model-00002-of-00003.safetensors"


def fixture_repos() -> dict[str, dict[str, bytes]]:
    """Every catalog repo at tiny size, same file names and folders as on the Hub."""
    a14b = lambda seed: {**_common("Wan2.1_VAE.pth"), **_dit("high_noise_model/", 6, 4096, seed),  # noqa: E731
                         **_dit("low_noise_model/", 6, 4096, seed)}
    ti2v = {**_common("Wan2.2_VAE.pth"), **_dit("", 3, 16 * 1024, "ti2v")}
    ti2v[BIG_FILE] = _payload("ti2v-big", 8 * 1024 * 1024)
    fun = {**_common("Wan2.2_VAE.pth"), **_dit("", 1, 8192, "fun")}
    cog = {
        "model_index.json": _json({"_class_name": "CogVideoXPipeline"}),
        "transformer/config.json": _json({"num_layers": 2}),
        "transformer/diffusion_pytorch_model.safetensors": _payload("cog-dit", 16 * 1024),
        "vae/config.json": _json({"latent_channels": 16}),
        "vae/diffusion_pytorch_model.safetensors": _payload("cog-vae", 8 * 1024),
        "text_encoder/config.json": _json({"d_model": 64}),
        "text_encoder/model.safetensors": _payload("cog-te", 8 * 1024),
        "tokenizer/spiece.model": _payload("cog-spiece", 4096),
        "tokenizer/tokenizer_config.json": _json({}),
        "scheduler/scheduler_config.json": _json({}),
    }
    s2v = {**_common("Wan2.1_VAE.pth"), **_dit("", 4, 4096, "s2v"),
           "wav2vec2-large-xlsr-53-english/config.json": _json({"model_type": "wav2vec2"}),
           "wav2vec2-large-xlsr-53-english/preprocessor_config.json": _json({"sampling_rate": 16000}),
           "wav2vec2-large-xlsr-53-english/vocab.json": _json({"a": 1}),
           "wav2vec2-large-xlsr-53-english/model.safetensors": _payload("wav2vec", 8192)}
    animate = {**_common("Wan2.1_VAE.pth"), **_dit("", 4, 4096, "animate"),
               "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth": _payload("clip", 16 * 1024),
               "xlm-roberta-large/tokenizer.json": _json({"model": {"type": "Unigram"}}),
               "xlm-roberta-large/sentencepiece.bpe.model": _payload("xlmr-spm", 4096),
               "relighting_lora.ckpt": _payload("lora", 4096),
               **{name: _payload(name, 4096) for name in catalog.ANIMATE_PROCESS_CHECKPOINTS}}
    fun_a14b = lambda seed: {**_common("Wan2.1_VAE.pth"), **_dit("high_noise_model/", 1, 4096, seed),  # noqa: E731
                             **_dit("low_noise_model/", 1, 4096, seed)}
    # Wan2.2-Lightning: several releases side by side, one LoRA per expert each, plus workflows
    lightning = {"README.md": b"# tiny fixture of lightx2v/Wan2.2-Lightning\n"}
    for folder in ("Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1", "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1",
                   "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1", "Wan2.2-T2V-A14B-4steps-lora-250928"):
        for expert in ("high_noise_model", "low_noise_model"):
            lightning[f"{folder}/{expert}.safetensors"] = _payload(folder + expert, 48 * 1024)
        lightning[f"{folder}/{folder}-NativeComfy.json"] = _json({"nodes": []})
    cosyvoice = {**{name: _payload("cosyvoice-" + name, 4096) for name in
                    ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2.onnx")},
                 "cosyvoice2.yaml": b"sample_rate: 24000\n",
                 "CosyVoice-BlankEN/config.json": _json({"model_type": "qwen2"}),
                 "CosyVoice-BlankEN/model.safetensors": _payload("cosyvoice-blank-en", 8192)}
    return {
        "lightx2v/Wan2.2-Lightning": lightning,
        "FunAudioLLM/CosyVoice2-0.5B": cosyvoice,
        "Wan-AI/Wan2.2-S2V-14B": s2v,
        "Wan-AI/Wan2.2-Animate-14B": animate,
        **{m.repo_id: fun_a14b(m.key) for m in catalog.FAMILY_MODELS if "a14b" in m.key},
        **{m.repo_id: {**_common("Wan2.2_VAE.pth"), **_dit("", 1, 8192, m.key)}
           for m in catalog.FAMILY_MODELS if "-5b-" in m.key},
        "Wan-AI/Wan2.2-T2V-A14B": a14b("t2v"),
        "Wan-AI/Wan2.2-I2V-A14B": a14b("i2v"),
        "Wan-AI/Wan2.2-TI2V-5B": ti2v,
        "alibaba-pai/Wan2.2-Fun-5B-Control": fun,
        "alibaba-pai/CogVideoX-Fun-V1.1-5b-InP": cog,
    }


def write_olah_config(path: Path, mirrors: Path, repos_path: Path, port: int, host: str = "127.0.0.1") -> None:
    path.write_text(
        "[basic]\n"
        f'host = "{host}"\nport = {port}\n'
        f'repos-path = "{repos_path}"\n'
        'hf-scheme = "https"\nhf-netloc = "huggingface.co"\nhf-lfs-netloc = "cdn-lfs.huggingface.co"\n'
        f'mirror-scheme = "http"\nmirror-netloc = "{host}:{port}"\nmirror-lfs-netloc = "{host}:{port}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        "\n[accessibility]\noffline = true\n"
    )


@contextlib.contextmanager
def run_olah(workdir: Path, mirrors: Path, port: int | None = None):
    """Start olah offline on 127.0.0.1 serving `mirrors`; yields its endpoint; stops it after."""
    if not Path(OLAH_CLI).exists():
        pytest.skip(f"olah not installed at {OLAH_CLI} (bash .ci/run installs it)")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "olah.toml"
    write_olah_config(config, mirrors, workdir / "repos", port)
    log = open(workdir / "olah.log", "wb")
    proc = subprocess.Popen([OLAH_CLI, "-c", str(config)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not wait_answering(proc, lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close(), 60, 0.2):
            raise RuntimeError(f"olah did not start: {(workdir / 'olah.log').read_text()[-2000:]}")
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@dataclass
class HubServer:
    """Handle on the running test hub; see the module docstring."""

    endpoint: str
    container_endpoint: str
    olah_endpoint: str
    mirrors: Path
    commits: dict[str, str]
    files: dict[str, dict[str, bytes]]
    token: str | None = None
    gate: bool = False
    rate: int = 0
    cut_after: int | None = None  # the next file body is cut off after this many bytes (a dropped link)
    corrupt_next: bool = False  # the next file body has one byte flipped (a bad mirror or proxy)
    served: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, authorization)
    in_flight: int = 0  # requests the proxy is still answering (a killed client's body may still be going out)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def require_token(self, token: str):
        """Requests without `Authorization: Bearer <token>` get 401 while inside."""
        self.token = token
        try:
            yield self
        finally:
            self.token = None

    @contextlib.contextmanager
    def gated(self):
        """Every repo answers 403 GatedRepo (a token that was not granted access) while inside."""
        self.gate = True
        try:
            yield self
        finally:
            self.gate = False

    def reset_counters(self) -> None:
        self.served.clear()
        self.requests.clear()

    def settle(self, timeout: float = 30) -> None:
        """Wait until no answer is still being sent, so nothing from one test counts in the next."""
        deadline = time.monotonic() + timeout
        while self.in_flight:
            assert time.monotonic() < deadline, f"{self.in_flight} proxy answer(s) still going after {timeout}s"
            time.sleep(0.01)


class _Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer
    upstream: tuple[str, int]

    def log_message(self, *args) -> None:  # quiet
        pass

    def _deny(self, status: int, code: str, message: str) -> None:
        body = _json({"error": message})
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        hub = self.hub
        auth = self.headers.get("Authorization", "")
        hub.requests.append((self.command, self.path, auth))
        if hub.token is not None:
            if not auth:
                return self._deny(401, "GatedRepo", "Access to this model is restricted. You must be authenticated to access it.")
            if auth != f"Bearer {hub.token}":
                return self._deny(401, "InvalidCredentials", "Invalid credentials in Authorization header")
        if hub.gate:
            return self._deny(403, "GatedRepo", "Access to this model is restricted and you are not in the authorized list.")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("range", "connection", "accept-encoding")}
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read() if self.command != "HEAD" else b""
        conn.close()
        status, start = resp.status, 0
        rng = self.headers.get("Range", "")
        out_headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server")]
        if self.command == "GET" and status == 200 and rng.startswith("bytes=") and "/resolve/" in self.path:
            first = rng[len("bytes="):].split("-")[0]
            start = int(first) if first.isdigit() else 0
            if 0 < start <= len(data):
                status = 206
                out_headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
        if self.command == "HEAD":
            size = resp.getheader("Content-Length")
            out_headers.append(("Content-Length", size or "0"))
        else:
            out_headers.append(("Content-Length", str(len(data) - start)))
        self.send_response(status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        key = _served_key(self.path)
        view = memoryview(data)[start:]
        if key and hub.corrupt_next and len(view):
            flipped = bytearray(view)
            flipped[len(flipped) // 2] ^= 0x01
            view, hub.corrupt_next = memoryview(bytes(flipped)), False
        if key and hub.cut_after is not None and hub.cut_after < len(view):
            view, hub.cut_after = view[:hub.cut_after], None
            self.close_connection = True
        chunk = 64 * 1024
        for i in range(0, len(view), chunk):
            piece = view[i:i + chunk]
            self.wfile.write(piece)
            if key:
                hub.served[key] += len(piece)
            if hub.rate:
                time.sleep(len(piece) / hub.rate)

    def _safe(self) -> None:
        with self.hub.lock:
            self.hub.in_flight += 1
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a test killed it): nothing to report
        finally:
            with self.hub.lock:
                self.hub.in_flight -= 1

    do_GET = do_HEAD = do_POST = _safe


def _served_key(path: str) -> str | None:
    """'/Org/Repo/resolve/<rev>/a/b' -> 'Org/Repo/a/b' (what the byte counters are keyed by)."""
    parts = path.split("?")[0].strip("/").split("/")
    if len(parts) >= 5 and parts[2] == "resolve":
        return "/".join(parts[:2] + parts[4:])
    return None


@contextlib.contextmanager
def run_proxy(hub: HubServer, upstream: str, port: int):
    host, _, up_port = upstream.removeprefix("http://").partition(":")
    handler = type("Proxy", (_Proxy,), {"hub": hub, "upstream": (host, int(up_port))})
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """olah serving every catalog repo at tiny size, behind the auth/Range/throttle proxy."""
    work = tmp_path_factory.mktemp("hub")
    mirrors = work / "mirrors"
    repos = fixture_repos()
    commits = {repo_id: build_repo(mirrors, repo_id, files) for repo_id, files in repos.items()}
    for repo_id, files in repos.items():  # what a download must reproduce, byte for byte
        files[".gitattributes"] = (mirrors / "models" / repo_id / ".gitattributes").read_bytes()
    with run_olah(work / "olah", mirrors) as olah_endpoint:
        port = free_port()
        hub = HubServer(
            endpoint=f"http://127.0.0.1:{port}",
            container_endpoint=f"http://{docker_gateway()}:{port}",
            olah_endpoint=olah_endpoint,
            mirrors=mirrors,
            commits=commits,
            files=repos,
        )
        with run_proxy(hub, olah_endpoint, port):
            yield hub


@pytest.fixture
def hub(hub_server):
    """The session hub with counters cleared and no token, gate or throttle left over."""
    _reset(hub_server)
    yield hub_server
    _reset(hub_server)


def _reset(hub: HubServer) -> None:
    hub.token, hub.gate, hub.rate, hub.cut_after, hub.corrupt_next = None, False, 0, None, False
    hub.settle()
    hub.reset_counters()
