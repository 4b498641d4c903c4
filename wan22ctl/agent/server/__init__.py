"""`wan22ctl-agent server`: load Wan2.2 once, then serve many videos through an HTTP API.

Examples (inside the container, or anywhere with the kit installed):
    wan22ctl-agent server --task ti2v-5B                        # 127.0.0.1:8000, no key needed
    wan22ctl-agent server --task s2v-14B --plan auto            # requests upload an image and an audio
    wan22ctl-agent server --task t2v-A14B --lora /opt/checkpoints/loras/lightning-t2v/Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1
    WAN22_API_KEY=... wan22ctl-agent server --task t2v-A14B --host 0.0.0.0
    wan22ctl-agent server --task t2v-A14B --plan auto            # GPUs and flags as `generate` picks them
    torchrun --nproc_per_node 2 -m wan22ctl.agent server --task t2v-A14B --dit-fsdp --t5-fsdp --ulysses-size 2
    python -m wan22ctl.agent server --task t2v-A14B --pipeline tests/standins/fake_wan_pipeline.py \\
        --ckpt-dir /tmp/ckpt --output-dir /tmp/out            # a stand-in pipeline, no GPU

The queue lives in `<output-dir>/.wan22ctl/server/queue.sqlite3` (SQLite, WAL), so jobs
survive a restart of the server or of the container. With `WAN22_QUEUE_URL=postgresql://…` it
lives in PostgreSQL instead (`pgstore`), shared by any number of replicas that mount the same
outputs volume: each pulls the next job, holds it with a lease, and answers for every job.
Modules: `store` (queue), `pgstore` (shared queue), `requests`
(validation), `engine` (pipeline + progress hook), `ranks` (torchrun hand-off), `autoplan`
(`--plan auto` through `plan.launch`), `service`
(worker, progress, metrics), `api` (routes on FastAPI: OpenAI's Videos API, the web page),
`listen` (the socket, the exposure rule, uvicorn).

LoRAs are merged into the weights once, at load (`--lora`, `--lora-high`, `--lora-low`): the set
is fixed for the server's life, and a request naming another set (`loras`, or a `preset` whose
LoRAs differ) is refused with 400 rather than run on weights it did not ask for.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from wan22ctl import catalog, paths
from wan22ctl.errors import EnvError, RunFailed, UserError

DEFAULT_PORT = 8000
STATE_SUBDIR = ".wan22ctl/server"


def _bool_arg(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("must be true or false")


def read_api_key(args) -> str | None:
    """The API key: --api-key-file (first line), else WAN22_API_KEY; None when neither is set."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read --api-key-file {args.api_key_file}: {exc.strerror}") from None
        return key or None
    return os.environ.get("WAN22_API_KEY") or None


def run(args) -> int:
    from wan22ctl.agent.server.engine import Engine, PipelineOptions, load_backend
    from wan22ctl.agent.server.ranks import Control, world_from_env

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s", stream=sys.stdout)
    log = logging.getLogger("wan22ctl.server")
    catalog.check_served(args.task)
    if args.queue_url_file:  # `up --serve`: the URL holds a password, so never in the container's spec
        try:
            os.environ["WAN22_QUEUE_URL"] = Path(args.queue_url_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read --queue-url-file {args.queue_url_file}: {exc.strerror}") from None
    if args.api_only and not os.environ.get("WAN22_QUEUE_URL"):
        raise UserError("--api-only answers for the replicas of a shared queue: set WAN22_QUEUE_URL")
    if args.api_only and args.plan == "auto":
        raise UserError("--api-only runs no jobs and uses no GPU: leave out --plan auto")
    rank, world_size, local_rank = world_from_env()
    api_key = read_api_key(args)
    if rank == 0:
        from wan22ctl.agent.server import listen

        listen.check_exposure(listen.resolve(args.host, args.port), api_key)  # before anything slow
    plan_info = None
    if args.plan == "auto" and "RANK" not in os.environ:
        from wan22ctl.agent.server.autoplan import apply

        plan_info = apply(args, sys.argv[1:])  # with several GPUs: re-executes under torchrun
    task = catalog.TASKS[args.task]
    if args.ulysses_size > 1 and task.num_heads % args.ulysses_size:
        raise UserError(f"--ulysses-size {args.ulysses_size} does not divide {args.task}'s {task.num_heads} heads")
    ckpt_dir = args.ckpt_dir or os.path.join(paths.CONTAINER_CHECKPOINT_DIR, catalog.MODEL_BY_KEY[task.model_key].subdir)
    lora_set = _install_loras(args, ckpt_dir, task.moe)
    options = PipelineOptions(task=args.task, ckpt_dir=ckpt_dir, offload_model=args.offload_model,
                              ulysses_size=args.ulysses_size, t5_fsdp=args.t5_fsdp, dit_fsdp=args.dit_fsdp,
                              t5_cpu=args.t5_cpu, convert_model_dtype=args.convert_model_dtype)

    backend = load_backend(args.pipeline, offload=options.resolved_offload(world_size))
    control = Control.start(rank, world_size, local_rank)
    control.init_sequence_parallel(backend, args.ulysses_size)
    engine = Engine(backend, options, rank=rank, world_size=world_size, local_rank=local_rank)
    if rank != 0:
        from wan22ctl.agent.server.service import follow

        # torchrun and Ctrl-C signal every rank; followers stop when rank 0 says so, after the
        # running job's current step, so all ranks leave their collectives together.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        engine.load()
        follow(engine, control)
        control.close()
        return 0
    return _serve_rank0(args, api_key, engine, control, log, plan_info, lora_set)


def _install_loras(args, ckpt_dir: str, moe: bool) -> list[dict]:
    """Check the server's LoRA set against the checkpoint (exit 2 when wrong) and have it merged at
    load; the set as requests are compared with it (`loras.canonical`)."""
    from wan22ctl import loras

    try:
        specs = [loras.LoraSpec.parse(v, e) for flag, e in (("lora", None), ("lora_high", "high"), ("lora_low", "low"))
                 for v in getattr(args, flag) or ()]
        if args.preset:
            specs.insert(0, loras.LoraSpec(_preset_folder(args.preset, args.task)))
        if not specs:
            return []
        checked = loras.prepare(specs, ckpt_dir, moe)
    except loras.LoraError as exc:
        raise UserError(str(exc)) from None
    if args.pipeline == "wan":
        from wan22ctl.agent import lora

        lora.install(checked)
    return loras.canonical([spec for spec, _ in checked])


def _preset_folder(name: str, task: str) -> str:
    """The catalog LoRA folder of preset `name` for `task` under this machine's checkpoint root."""
    from wan22ctl.agent.inventory import runtime

    preset = catalog.PRESETS[name]
    key = preset.loras.get(task)
    if key is None:
        raise UserError(f"--preset {name} has no distilled LoRA for {task} in the catalog (it has: {', '.join(preset.loras)})")
    folder = os.path.join(runtime().checkpoint_dir, catalog.lora_folder(catalog.MODEL_BY_KEY[key]))
    if not os.path.isdir(folder):
        raise UserError(f"--preset {name} needs the {key} LoRAs in {folder}", fix=f"run: wan22ctl download {key}")
    return folder


def _serve_rank0(args, api_key, engine, control, log, plan_info, lora_set) -> int:
    from wan22ctl.agent.server import listen
    from wan22ctl.agent.server.api import build_app
    from wan22ctl.agent.server.service import Service, ServiceConfig

    output_dir = Path(args.output_dir)
    state_dir = output_dir / STATE_SUBDIR
    state_dir.mkdir(parents=True, exist_ok=True)
    store, owner, replica = _open_store(args, state_dir)
    config = ServiceConfig(task=args.task, output_dir=output_dir, state_dir=state_dir,
                           max_image_bytes=args.max_image_mb * 1024 * 1024,
                           max_media_bytes=args.max_media_mb * 1024 * 1024, loras=tuple(lora_set),
                           preset=args.preset, replica=replica)
    service = Service(config, store, engine, control)
    for job_id, state in service.recover_outputs() + store.recover(args.on_interrupt, args.max_attempts):
        log.info("job %s was running when the server stopped: now %s", job_id, state)
    info = {"task": args.task, "pipeline": args.pipeline, "plan": {
        "ckpt_dir": engine.options.ckpt_dir, "offload_model": engine.options.resolved_offload(engine.world_size),
        "ulysses_size": engine.options.ulysses_size, "t5_fsdp": engine.options.t5_fsdp,
        "dit_fsdp": engine.options.dit_fsdp, "t5_cpu": engine.options.t5_cpu,
        "convert_model_dtype": engine.options.convert_model_dtype,
        "attention": os.environ.get("WAN22_ATTENTION", "auto"), "auto": plan_info},
        "preset": args.preset, "loras": lora_set,
        "gpus": _gpus(), "queue": store.location, "replica": replica, "interrupted_policy": args.on_interrupt,
        "auth": api_key is not None}
    sock = listen.bind(args.host, args.port)
    try:
        listen.check_exposure(sock.getsockname()[0], api_key)  # the address actually bound
    except UserError:
        sock.close()
        raise
    app, changes = build_app(service, api_key, info, max_body=args.max_body_mb * 1024 * 1024,
                             max_concurrent=args.max_concurrent, body_idle_timeout=args.client_timeout)
    httpd = listen.Listener(app, changes, sock, header_timeout=args.client_timeout).start()
    log.info("listening on http://%s:%d (task %s, queue %s)", args.host, httpd.address[1], args.task,
             store.location)

    def stop(signum, frame):
        log.info("signal %d: stopping after the current step; the running job goes back to the queue", signum)
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.api_only:
        # The pipeline's configs (request defaults) are loaded; its weights are not, and no job runs here.
        service.ready = True
        log.info("answering the API only; the GPU replicas run the jobs")
        service.stopping.wait()
        httpd.stop()
        store.close()
        control.close()
        return 0
    gpu_lock = _lock_gpus(Path(args.gpu_lock_dir) if args.gpu_lock_dir else output_dir, service)
    if gpu_lock is None:
        httpd.stop()
        return 130
    try:
        engine.load()
    except Exception as exc:
        service.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("loading the pipeline failed")
        httpd.stop()
        raise RunFailed(f"loading the {args.task} pipeline failed: {service.load_error}") from None
    service.ready = True
    log.info("pipeline loaded in %.1f s; serving", engine.load_seconds)
    service.worker_loop()
    httpd.stop()
    store.close()
    control.close()
    gpu_lock.release()
    if owner is not None:
        owner.close()
    return 0


def _open_store(args, state_dir: Path):
    """(store, queue-file lock or None, replica id or None): the shared PostgreSQL queue when
    WAN22_QUEUE_URL is set, else this server's own SQLite file."""
    url = os.environ.get("WAN22_QUEUE_URL")
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise UserError("WAN22_QUEUE_URL must be a postgresql:// URL (unset it for the embedded SQLite queue)")
        try:
            from wan22ctl.agent.server.pgstore import PgJobStore
        except ModuleNotFoundError as exc:
            raise EnvError(f"WAN22_QUEUE_URL needs {exc.name}, which this Python lacks",
                           fix="pip install 'psycopg[binary,pool]' (docker/requirements-server.txt)") from None
        replica = args.replica_id or f"{os.uname().nodename}-{args.port}"
        return PgJobStore(url, task=args.task, replica=replica, lease_s=args.lease_seconds), None, replica
    from wan22ctl.agent.server.store import JobStore

    owner = _own_queue(state_dir, args)  # held (flock) until the process ends, even by kill -9
    return JobStore(state_dir / "queue.sqlite3"), owner, None


def _own_queue(state_dir: Path, args):
    """One server per queue: recovery re-queues every job left running, which is only right when
    no other live server is running them."""
    import fcntl
    import json

    f = open(state_dir / "server.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another server"
        f.close()
        raise EnvError(f"the queue in {state_dir} is served already: {holder}",
                       fix="use that server, stop it first, or give this one another --output-dir") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "task": args.task, "port": args.port}))
    f.flush()
    return f


def _gpu_indices() -> list[int]:
    """The GPUs this server uses, in nvidia-smi numbering (CUDA_VISIBLE_DEVICES as the plan sets it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return list(range(torch.cuda.device_count()))
    return []


def _lock_gpus(lock_root: Path, service):
    """Hold `generate`'s GPU locks for the server's life, so a generate.py run never lands on GPUs
    whose memory the resident pipeline holds (it waits, naming the server). Waits while a
    generate run holds them; None when the server is stopped meanwhile."""
    from wan22ctl.agent.locks import GpuLock

    lock = GpuLock(str(lock_root), _gpu_indices(), f"server-{os.getpid()}")
    return lock if lock.acquire(wait=True, stop=service.stopping) else None


def _gpus() -> list[dict]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return []
    return [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())]


def add_parser(sub) -> None:
    p = sub.add_parser("server", help="load Wan2.2 once and serve videos over HTTP")
    p.add_argument("--task", default=os.environ.get("WAN22_TASK", "ti2v-5B"), help="Wan2.2 task this server runs")
    p.add_argument("--ckpt-dir", default=None, help="checkpoint folder (default: the task's folder under /opt/checkpoints)")
    p.add_argument("--output-dir", default=os.environ.get("WAN22_OUTPUT_DIR", paths.CONTAINER_OUTPUT_DIR),
                   help="videos, sidecars and the queue database go here")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; any but loopback (0.0.0.0 included) needs an API key")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--api-key-file", default=None, help="read the API key from this file instead of WAN22_API_KEY")
    p.add_argument("--queue-url-file", default=None,
                   help="read the shared queue's URL from this file instead of WAN22_QUEUE_URL (it holds a password)")
    p.add_argument("--pipeline", default=os.environ.get("WAN22_SERVER_PIPELINE", "wan"),
                   help="'wan' (Wan2.2 in WAN22_DIR), or a module name or .py file with the same classes (a stand-in)")
    p.add_argument("--plan", choices=("flags", "auto"), default="flags",
                   help="auto: choose GPUs, torchrun/Ulysses/FSDP and memory flags as `generate` would "
                        "(from nvidia-smi and host RAM); flags: use the options below")
    p.add_argument("--offload-model", type=_bool_arg, default=None,
                   help="true/false; default true on one GPU, false under torchrun (as generate.py)")
    p.add_argument("--ulysses-size", type=int, default=1)
    p.add_argument("--t5-fsdp", action="store_true")
    p.add_argument("--dit-fsdp", action="store_true")
    p.add_argument("--t5-cpu", action="store_true")
    p.add_argument("--convert-model-dtype", action="store_true")
    p.add_argument("--preset", choices=tuple(catalog.PRESETS), default=None,
                   help="merge the preset's catalog LoRAs at load; requests that name no preset get its settings")
    p.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="a LoRA merged into the DiT at load (one-DiT task), or a Lightning-layout folder; repeatable")
    p.add_argument("--lora-high", action="append", metavar="PATH[:SCALE]",
                   help="a LoRA for the A14B high-noise expert; repeatable")
    p.add_argument("--lora-low", action="append", metavar="PATH[:SCALE]",
                   help="a LoRA for the A14B low-noise expert; repeatable")
    p.add_argument("--on-interrupt", choices=("requeue", "fail"), default="requeue",
                   help="what happens to a job that was running when the server died")
    p.add_argument("--max-attempts", type=int, default=2,
                   help="with requeue: a job interrupted this many times is marked failed")
    p.add_argument("--lease-seconds", type=float, default=float(os.environ.get("WAN22_LEASE_SECONDS", "30")),
                   help="shared queue (WAN22_QUEUE_URL): a running job whose replica stops renewing its lease "
                        "for this long goes back to the queue")
    p.add_argument("--replica-id", default=os.environ.get("WAN22_REPLICA_ID"),
                   help="shared queue: this replica's name (default: hostname-port; a pod's name on Kubernetes)")
    p.add_argument("--api-only", action="store_true",
                   help="shared queue: answer the API (submit, list, events, cancel, content) but load no "
                        "pipeline and run no job; keeps accepting jobs while GPU replicas are scaled to zero")
    p.add_argument("--gpu-lock-dir", default=os.environ.get("WAN22_GPU_LOCK_DIR"),
                   help="folder for the per-GPU lock files (default: the output dir); a pod-local folder when "
                        "pods on one node share the outputs volume but not their GPUs")
    p.add_argument("--max-body-mb", type=int, default=24, help="largest request body accepted")
    p.add_argument("--max-image-mb", type=int, default=16, help="largest input image accepted")
    p.add_argument("--max-media-mb", type=int, default=16,
                   help="s2v-14B: largest audio, and largest pose video, accepted")
    p.add_argument("--max-concurrent", type=int, default=512,
                   help="requests in progress at once (an event stream counts for its life); more get 429")
    p.add_argument("--client-timeout", type=float, default=10.0,
                   help="seconds a client may take to send a request's headers, or pause mid-body, before "
                        "the server gives up on it (idle and slow-loris connections are closed)")
    p.set_defaults(func=run)
