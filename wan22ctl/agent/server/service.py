"""The server's core, apart from HTTP: submit, cancel, the worker loop, live progress, metrics.

Rank 0 runs `Service.worker_loop()` in one thread: it takes the oldest queued job, hands it to
every rank over the control channel, runs it through the engine, writes the video and its
sidecar, then records the end state. Requests only read the queue, submit and cancel; listeners
registered with `on_change` hear of every change (the HTTP layer's event streams). Other ranks
run `follow()`. `view()` is a job as the API shows it: an OpenAI `Video` object plus the kit's
own keys.
"""

from __future__ import annotations

import bisect
import logging
import os
import random
import shutil
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from wan22ctl import catalog
from wan22ctl.agent.server import requests as reqs
from wan22ctl.agent.server.engine import (Engine, JobCancelled, JobHooks, ServerStopping, StepReport,
                                          release_cached_memory)
from wan22ctl.agent.server.ranks import Control
from wan22ctl.agent.server.store import TERMINAL, Job, JobStore, StoreUnavailable

log = logging.getLogger("wan22ctl.server")


@dataclass
class Summary:
    """A Prometheus summary without quantiles: count and sum."""

    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value


@dataclass
class Live:
    """The running job's progress, in memory only; steps count across clips (s2v)."""

    phase: str = "starting"
    step: int = 0
    total: int = 0
    expert: str | None = None
    clip: int = 1
    clips: int = 1
    step_times: deque = field(default_factory=lambda: deque(maxlen=8))
    dequeued_at: float = field(default_factory=time.monotonic)
    first_step_latency: float | None = None
    decode_started: float | None = None
    save_started: float | None = None


@dataclass
class ServiceConfig:
    """Where a server keeps things and what it accepts."""

    task: str
    output_dir: Path
    state_dir: Path
    max_image_bytes: int = reqs.MAX_IMAGE_BYTES
    max_media_bytes: int = reqs.MAX_MEDIA_BYTES  # s2v's audio and pose video, each
    loras: tuple = ()  # the LoRA set merged at load (`loras.canonical`); requests must name this one or none
    preset: str | None = None  # requests that name no preset (and no LoRAs) get this one
    replica: str | None = None  # set when replicas share the queue (and the outputs volume)

    @property
    def tmp_dir(self) -> Path:
        """Videos being written; one folder per replica when several share the volume."""
        return self.state_dir / "tmp" / self.replica if self.replica else self.state_dir / "tmp"


def _outcome_of(exc: BaseException | None) -> dict:
    if exc is None:
        return {"status": "ok"}
    if isinstance(exc, JobCancelled):
        return {"status": "cancelled", "reason": str(exc)}
    if isinstance(exc, ServerStopping):
        return {"status": "stopping", "reason": str(exc)}
    return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


# OpenAI's Video.status for each job state (a cancelled job is a failed video, error code "cancelled").
VIDEO_STATUS = {"queued": "queued", "running": "in_progress", "succeeded": "completed", "failed": "failed",
                "cancelled": "failed"}


def video_seconds(params: dict, fps: int) -> str:
    """A video's length as OpenAI's `seconds` (text): 81 frames at 16 fps is "5"; s2v's clips of
    frame_num frames each, cut to the audio's length when the speech is merged in (ffmpeg -shortest)."""
    if params.get("clips"):
        seconds = min(params["frame_num"] * params["clips"] / fps, params["audio_seconds"])
    else:
        seconds = (params["frame_num"] - 1) / fps
    return format(round(seconds, 2), "g")


def total_steps(params: dict) -> int:
    """Denoising steps of the whole job: s2v denoises each clip."""
    return params["sample_steps"] * (params.get("clips") or 1)


EXIT_RANK_FAILED = 70  # a rank's job failed under torchrun: the whole server restarts (see run_on_rank)


def run_on_rank(engine: Engine, control: Control, message: dict, report, on_fatal=None) -> tuple[object, dict]:
    """Run one job message on this rank: (video or None, outcome). Never raises for job errors.

    On one process a failed job is reported and the server goes on. Under torchrun a rank
    whose job failed cannot know where the other ranks are (one may wait in an NCCL collective,
    another in the control group), so it exits: `--plan auto`'s supervisor (or the container's
    restart policy) restarts the server and the interrupted-job policy retries or fails the job. `on_fatal`
    (rank 0) records the reason first.
    """
    stop_source = message.get("_stop_source")  # rank 0 only: callable(step) -> decision

    def should_stop(step: int):
        local = stop_source(step) if stop_source else None
        return control.step_decision(local)

    hooks = JobHooks(should_stop=should_stop, report=report)
    try:
        video = engine.run(message["params"], message["seed"], hooks)
        return video, _outcome_of(None)
    except Exception as exc:  # the job's failure, reported; the server lives on
        if not isinstance(exc, (JobCancelled, ServerStopping)):
            log.error("job %s failed on rank %d:\n%s", message["job_id"], engine.rank, traceback.format_exc())
        outcome = _outcome_of(exc)
    if outcome["status"] == "failed" and control.world_size > 1:
        if on_fatal is not None:
            on_fatal(outcome["reason"])
        log.error("rank %d: job %s failed; exiting so that every rank restarts together", engine.rank,
                  message["job_id"])
        logging.shutdown()
        os._exit(EXIT_RANK_FAILED)
    engine.after_interrupted()  # outside the except block: the traceback and its tensors are gone
    return None, outcome


def follow(engine: Engine, control: Control) -> None:
    """A non-zero rank: run each job rank 0 broadcasts, until it says stop."""
    while True:
        message = control.broadcast(None)
        if message["op"] == "stop":
            return
        _, outcome = run_on_rank(engine, control, message, lambda report: None)
        control.gather(outcome)


class Service:
    """Queue, worker and live state of one server (rank 0)."""

    def __init__(self, config: ServiceConfig, store: JobStore, engine: Engine, control: Control):
        self.config = config
        self.store = store
        self.engine = engine
        self.control = control
        self.ready = False
        self.load_error: str | None = None
        self.started_at = time.time()
        self.version = 0
        self._version_lock = threading.Lock()
        self._queued_seqs: list[int] | None = None  # the queue's order, for queue positions
        self._queue_generation = 0
        self._listeners: list = []  # called (from any thread) after every change; see on_change
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self.current_id: str | None = None
        self.live: Live | None = None
        self._cancel_current = threading.Event()
        self._lease_lost = threading.Event()
        self.job_seconds: dict[str, Summary] = {s: Summary() for s in TERMINAL}
        self.step_seconds = Summary()
        self.start_latency = Summary()
        self.last_decode_seconds: float | None = None
        (config.state_dir / "inputs").mkdir(parents=True, exist_ok=True)
        # Half-written videos of a server that died mid-save: their jobs run again.
        shutil.rmtree(config.tmp_dir, ignore_errors=True)
        videosave = sys.modules.get("wan22ctl.agent.videosave")
        if videosave is not None:  # WAN22_STREAM_SAVE: streams next to the videos being written
            config.tmp_dir.mkdir(parents=True, exist_ok=True)
            videosave.use_directory(str(config.tmp_dir))
        store.listen(self._on_store_event)

    def stop(self) -> None:
        """Stop after the running job's current step; that job goes back to the queue."""
        self.stopping.set()
        self._wake.set()

    # ------------------------------------------------------------------ notification

    def on_change(self, listener) -> None:
        """Call `listener()` after every change of a job or of the running job's progress. It runs
        in the changing thread (the worker's or a request's), so it must only hand the news on."""
        self._listeners.append(listener)

    def notify(self, progress_only: bool = False) -> None:
        """Tell the listeners something changed; anything but the running job's progress may
        have changed the queue too."""
        with self._version_lock:
            self.version += 1
            if not progress_only:
                self._queued_seqs = None
                self._queue_generation += 1
        for listener in self._listeners:
            listener()

    def _on_store_event(self, kind: str, arg: str) -> None:
        """A change made by another replica of a shared queue (store.listen)."""
        if kind in ("queued", "reconnected"):
            self._wake.set()
        elif kind == "cancel" and arg == self.current_id:
            self._cancel_current.set()
        self.notify()

    def readiness(self) -> tuple[bool, dict]:
        """What /readyz answers: loaded, and the queue database reachable."""
        if self.load_error:
            return False, {"ready": False, "phase": "failed", "error": self.load_error}
        if not self.ready:
            return False, {"ready": False, "phase": "loading"}
        if self.store.problem:
            return False, {"ready": False, "phase": "queue unreachable", "error": self.store.problem}
        return True, {"ready": True}

    # ------------------------------------------------------------------ API operations

    def submit(self, body, idempotency_key: str | None) -> tuple[Job, bool]:
        """Validate, store the uploads (once per content), fill defaults from WAN_CONFIGS[task], queue."""
        params, uploads = reqs.validate(body, self.config.task, self.config.max_image_bytes, loras=self.config.loras,
                                        default_preset=self.config.preset, max_media_bytes=self.config.max_media_bytes)
        params = reqs.fill_defaults(params, self.engine.config)
        digest = reqs.request_hash(params)
        for name, upload in uploads.items():
            path = self.config.state_dir / "inputs" / f"{upload.sha256}.{upload.kind}"
            if not path.exists():
                tmp = path.with_suffix(".part")
                tmp.write_bytes(upload.data)
                os.replace(tmp, path)
            params[f"{name}_path"] = str(path)
        job, created = self.store.submit(params, digest, idempotency_key)
        if created:
            self._wake.set()
            self.notify()
        return job, created

    def cancel(self, job_id: str) -> Job | None:
        job = self.store.request_cancel(job_id)
        if job is not None and job.state == "running" and job_id == self.current_id:
            self._cancel_current.set()
        self.notify()
        return job

    def delete(self, job_id: str) -> tuple[bool, str | None]:
        """(deleted, reason when refused). A running job must be cancelled first."""
        job = self.store.get(job_id)
        if job is None:
            return False, None
        if job.state == "running":
            return False, "the job is running; cancel it first"
        for path in (job.output, job.sidecar):
            if path and os.path.exists(path):
                os.remove(path)
        self.store.delete(job_id)
        for name in reqs.UPLOADS:  # uploads are kept by hash, once for all the jobs that sent them
            path, key = job.params.get(f"{name}_path"), f"{name}_sha256"
            if path and os.path.exists(path) and not self.store.upload_users(key, job.params[key]):
                os.remove(path)
        self.notify()
        return True, None

    def _queued(self) -> list[int]:
        """The queued jobs' sequence numbers, oldest first: read once per change of the queue, for
        listings that show many queued jobs."""
        with self._version_lock:
            seqs, generation = self._queued_seqs, self._queue_generation
        if seqs is None:
            seqs = self.store.queued_seqs()
            with self._version_lock:
                if generation == self._queue_generation:
                    self._queued_seqs = seqs
        return seqs

    def _queue_position(self, seq: int, queued: list[int] | None) -> int:
        queued = queued if queued is not None else self._queued_seqs
        return bisect.bisect_left(queued, seq) if queued is not None else self.store.queue_position(seq)

    def views(self, jobs: list[Job]) -> list[dict]:
        """`view` of many jobs (a listing), reading the queue's order once for all of them."""
        queued = self._queued() if sum(j.state == "queued" for j in jobs) > 1 else None
        return [self.view(j, queued) for j in jobs]

    def view(self, job: Job, queued: list[int] | None = None) -> dict:
        """The API's JSON for one job: OpenAI's `Video` object (status, progress 0-100, size "WxH",
        seconds, error {code, message}) plus the kit's keys (state, live steps, expert, ETA, seed,
        timings, files), with live progress for the running job."""
        p = job.params
        steps = total_steps(p)
        detail: dict = {"phase": job.state, "step": 0, "total": steps, "expert": None,
                        "seconds_per_step": None, "eta_seconds": None}
        if p.get("clips"):
            detail.update(clip=1, clips=p["clips"])
        live = self.live if job.id == self.current_id else None
        if job.state == "queued":
            detail["queue_position"] = self._queue_position(job.seq, queued)
        elif job.state == "running" and live is None and job.progress:  # on another replica
            detail.update({k: job.progress[k] for k in detail if k in job.progress})
        elif live is not None:
            sps = sum(live.step_times) / len(live.step_times) if live.step_times else None
            remaining = max(live.total - live.step, 0) if live.total else steps
            eta = None if sps is None else remaining * sps + (self.last_decode_seconds or 0.0)
            detail.update(phase=live.phase, step=live.step, total=live.total or steps,
                          expert=live.expert, seconds_per_step=sps, eta_seconds=eta)
            if p.get("clips"):
                detail.update(clip=live.clip, clips=live.clips)
        elif job.state == "succeeded":
            detail.update(phase="done", step=job.steps_done or steps, eta_seconds=0.0)
        elif job.steps_done is not None:
            detail["step"] = job.steps_done
        total = detail["total"] or 1
        percent = 100 if job.state == "succeeded" else min(99, int(100 * detail["step"] / total))
        detail["percent"] = percent
        error = None
        if job.state in ("failed", "cancelled"):
            error = {"code": "cancelled" if job.state == "cancelled" else "generation_failed",
                     "message": job.error or job.state}
        width, height = p["size"].split("*")
        shown = {k: v for k, v in p.items() if k not in {f"{name}_path" for name in reqs.UPLOADS}}
        return {
            "id": job.id, "object": "video", "status": VIDEO_STATUS[job.state], "progress": percent,
            "created_at": int(job.created_at), "completed_at": None if job.finished_at is None else int(job.finished_at),
            "expires_at": None, "model": p["task"], "prompt": p["prompt"], "size": f"{width}x{height}",
            "seconds": video_seconds(p, catalog.TASKS[p["task"]].fps),
            "remixed_from_video_id": None, "error": error,
            # the kit's keys
            "state": job.state, "seq": job.seq, "task": p["task"], "submitted_at": job.created_at,
            "started_at": job.started_at, "finished_at": job.finished_at, "params": shown, "seed": job.seed,
            "progress_detail": detail, "timings": job.timings, "attempts": job.attempts,
            "cancel_requested": job.cancel_requested, "replica": job.owner, "output": job.output if job.state == "succeeded" else None,
            "sidecar": job.sidecar if job.state == "succeeded" else None,
            "content_url": f"/v1/videos/{job.id}/content" if job.state == "succeeded" else None,
        }

    # ------------------------------------------------------------------ worker

    def worker_loop(self) -> None:
        """Run queued jobs one at a time until the server stops (rank 0's main loop)."""
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                job = self.store.claim_next()
            except StoreUnavailable as exc:
                log.warning("%s; waiting for it", exc)
                self.stopping.wait(1.0)
                continue
            if job is None:
                self._wake.wait(timeout=1.0)
                continue
            try:
                self._run(job)
            except StoreUnavailable as exc:  # its lease runs out and another replica runs it again
                log.error("job %s: the queue became unreachable before its end was recorded: %s", job.id, exc)
                self._end_job()
        self.control.broadcast({"op": "stop"})

    def _stop_decision(self, step: int) -> str | None:
        if self.stopping.is_set() or self._lease_lost.is_set():
            return "shutdown"
        if self._cancel_current.is_set():
            return "cancel"
        return None

    def _report(self, r: StepReport) -> None:
        live = self.live
        if live is None:
            return
        if r.step_seconds is not None:
            live.step_times.append(r.step_seconds)
            self.step_seconds.observe(r.step_seconds)
        if live.first_step_latency is None and r.phase == "denoising":
            # dequeue -> the first denoising step starts: what a resident pipeline makes short
            live.first_step_latency = time.monotonic() - live.dequeued_at
            self.start_latency.observe(live.first_step_latency)
        # one loop a clip (s2v): the job's steps count on across its clips, as generate's progress does
        live.clips = max(live.clips, r.clip)
        live.phase, live.expert, live.clip = r.phase, r.expert, r.clip
        live.step, live.total = (r.clip - 1) * r.total + r.step, live.clips * r.total
        if r.phase == "decoding":
            live.decode_started = time.monotonic()
        if self.current_id is not None:
            sps = sum(live.step_times) / len(live.step_times) if live.step_times else None
            self.store.report_progress(self.current_id, {
                "phase": live.phase, "step": live.step, "total": live.total, "expert": live.expert,
                "clip": live.clip, "clips": live.clips,
                "seconds_per_step": sps, "eta_seconds": None if sps is None else max(live.total - live.step, 0) * sps})
        self.notify(progress_only=True)

    def _keep_lease(self, job_id: str, done: threading.Event) -> None:
        """Renew a shared queue's lease on the running job; hear cancels asked through other replicas."""
        while not done.wait(self.store.lease_s / 3):
            try:
                verdict = self.store.renew(job_id)
            except StoreUnavailable as exc:
                log.warning("job %s: cannot renew its lease: %s", job_id, exc)
                continue
            if verdict == "cancel":
                self._cancel_current.set()
            elif verdict == "lost":
                log.error("job %s: its lease passed to another replica; stopping this run", job_id)
                self._lease_lost.set()
                return

    def _run(self, job: Job) -> None:
        started = time.monotonic()
        self.current_id = job.id
        self.live = Live(total=total_steps(job.params), phase="encoding", clips=job.params.get("clips") or 1)
        self._cancel_current.clear()
        self._lease_lost.clear()
        if job.cancel_requested:
            self._cancel_current.set()
        lease_done = threading.Event()
        if self.store.lease_s:
            threading.Thread(target=self._keep_lease, args=(job.id, lease_done), name="lease", daemon=True).start()
        try:
            self._run_claimed(job, started)
        finally:
            lease_done.set()

    def _run_claimed(self, job: Job, started: float) -> None:
        seed = job.params["seed"] if job.params["seed"] >= 0 else (job.seed if job.seed is not None
                                                                   else random.randint(0, sys.maxsize))
        self.store.set_seed(job.id, seed)
        self.notify()
        problem = self._upload_problem(job.params)
        if problem:  # refused here, on rank 0 alone: a rank that failed to load it would take all down
            self.store.finish(job.id, "failed", error=problem, steps_done=0, timings=None)
            self._end_job()
            return
        message = {"op": "run", "job_id": job.id, "params": job.params, "seed": seed}
        self.control.broadcast(message)
        video, outcome = run_on_rank(self.engine, self.control, {**message, "_stop_source": self._stop_decision},
                                     self._report, on_fatal=lambda reason: self.store.note_error(job.id, reason))
        outcomes = self.control.gather(outcome)
        live = self.live
        state, error, output, sidecar = "failed", None, None, None
        statuses = [o["status"] for o in outcomes]
        if "stopping" in statuses:
            self.store.requeue(job.id)
            log.info("job %s re-queued: the server is stopping", job.id)
            self._end_job()
            return
        if "failed" in statuses:
            first = next(i for i, o in enumerate(outcomes) if o["status"] == "failed")
            error = outcomes[first]["reason"] + (f" (rank {first})" if len(outcomes) > 1 else "")
        elif "cancelled" in statuses:
            state, error = "cancelled", outcomes[0].get("reason")
        else:
            try:
                live.phase, live.save_started = "saving", time.monotonic()
                self.notify()
                decode_started = live.decode_started
                output, sidecar = self._save(job, seed, video, started, live)
                if decode_started is not None:
                    self.last_decode_seconds = time.monotonic() - decode_started
                state = "succeeded"
            except Exception as exc:
                log.error("job %s: saving failed:\n%s", job.id, traceback.format_exc())
                error = f"saving the video failed: {type(exc).__name__}: {exc}"
        del video  # the decoded frames (on the GPU for real Wan2.2)
        release_cached_memory()
        self.store.finish(job.id, state, error=error, output=output, sidecar=sidecar,
                          steps_done=live.step, timings=self._timings(live, started))
        self.job_seconds[state].observe(time.monotonic() - started)
        t = self._timings(live, started)
        log.info("job %s %s%s (start %.2f s, %.2f s/step, total %.1f s)", job.id, state, f": {error}" if error else "",
                 t["start_latency_s"] or 0.0, t["seconds_per_step"] or 0.0, t["total_s"])
        self._end_job()

    def _upload_problem(self, params: dict) -> str | None:
        """Why one of the job's staged uploads cannot be used (gone or damaged since submit), or None."""
        checks = {"image": lambda data: reqs.check_image_bytes(data, self.config.max_image_bytes),
                  "audio": lambda data: reqs.check_audio_bytes(data, self.config.max_media_bytes),
                  "pose_video": lambda data: reqs.check_pose_bytes(data, self.config.max_media_bytes)}
        for name in reqs.UPLOADS:
            path = params.get(f"{name}_path")
            if not path:
                continue
            what = f"the uploaded {name.replace('_', ' ')} {os.path.basename(path)}"
            try:
                with open(path, "rb") as f:
                    checks[name](f.read())
            except OSError as exc:
                return f"{what} cannot be read: {exc.strerror}"
            except reqs.RequestInvalid as exc:
                return f"{what} is unusable: {exc.reason}"
        return None

    @staticmethod
    def _timings(live: Live, started: float) -> dict:
        """Where a job's time went: dequeue to the first step, denoising, decode + save, total (s)."""
        now = time.monotonic()
        first = None if live.first_step_latency is None else live.dequeued_at + live.first_step_latency
        return {
            "start_latency_s": live.first_step_latency,
            "denoise_s": None if first is None else (live.decode_started or now) - first,
            "decode_save_s": None if live.decode_started is None else now - live.decode_started,
            "seconds_per_step": sum(live.step_times) / len(live.step_times) if live.step_times else None,
            "total_s": now - started,
        }

    def _end_job(self) -> None:
        self.current_id = None
        self.live = None
        self._cancel_current.clear()
        self.notify()

    def _save(self, job: Job, seed: int, video, started: float, live: Live) -> tuple[str, str]:
        """Check the video, record its final names in the job, then publish it and its sidecar.

        The record comes first, so a crash at any point leaves no file the queue does not know
        of: `recover_outputs` finishes the job or removes what it published and runs it again.
        """
        from datetime import datetime

        from wan22ctl.agent import outputs

        temp = str(self.config.tmp_dir / f"{job.id}.mp4")
        os.makedirs(os.path.dirname(temp), exist_ok=True)
        self.engine.save(video, temp, job.params.get("audio_path"))
        p = job.params
        stem = outputs.final_stem(p["task"], p["size"], p["prompt"], datetime.fromtimestamp(job.created_at))
        while True:
            path, sidecar = outputs.free_names(str(self.config.output_dir), stem)
            self.store.set_output(job.id, path, sidecar)
            try:
                outputs.publish_as(temp, path)
                break
            except FileExistsError:  # taken meanwhile (a generate run in the same folder): the next name
                continue
        outputs.write_sidecar(path, self._sidecar_data(job, seed, path, started, live))
        return path, sidecar

    def recover_outputs(self) -> list[tuple[str, str]]:
        """Settle the jobs a crash left running after their files were named: [(id, new state)].

        Video and sidecar both published: the job succeeded. Anything less: what was published
        is removed and the job's record forgets it, so `store.recover` runs it again and no
        orphan or duplicate video is left behind.
        """
        from wan22ctl.agent import outputs

        settled = []
        for job in self.store.interrupted():
            if not job.output:
                continue
            if outputs.settle_files(job.output, job.sidecar):
                self.store.finish(job.id, "succeeded", output=job.output, sidecar=job.sidecar,
                                  steps_done=total_steps(job.params), timings=None)
                settled.append((job.id, "succeeded"))
                continue
            self.store.set_output(job.id, None, None)
        return settled

    def _sidecar_data(self, job: Job, seed: int, path: str, started: float, live: Live) -> dict:
        """The same keys as `wan22ctl generate`'s sidecar (agent.launcher.sidecar_data), plus the job."""
        from wan22ctl import __version__
        from wan22ctl.agent.server import _gpu_indices

        p, eng = job.params, self.engine
        now = time.monotonic()
        first = None if live.first_step_latency is None else live.dequeued_at + live.first_step_latency
        phases = {"load": 0.0,  # resident: loaded once when the server started (see /v1/info)
                  "text_encode": live.first_step_latency,
                  "denoise": None if first is None or live.decode_started is None else live.decode_started - first,
                  "decode": None if live.decode_started is None or live.save_started is None
                  else live.save_started - live.decode_started,
                  "save": None if live.save_started is None else now - live.save_started}
        torch = sys.modules.get("torch")
        names = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                 if torch is not None and torch.cuda.is_available() else [])
        width, height = (int(x) for x in p["size"].split("*"))
        return {
            "video": os.path.basename(path), "bytes": os.path.getsize(path), "status": "ok", "exit_code": 0,
            "task": p["task"], "prompt": p["prompt"],
            "negative_prompt": p.get("negative_prompt") or eng.config.sample_neg_prompt,
            "size": p["size"], "width": width, "height": height, "frame_num": p["frame_num"],
            "fps": eng.config.sample_fps, "sample_steps": p["sample_steps"], "sample_shift": p["sample_shift"],
            "guide_scale": p["sample_guide_scale"],
            "guide_scale_source": "request" if p.get("guide_scale_given") else "config default",
            "seed": seed, "solver": p["sample_solver"],
            **{name: {"sha256": p[f"{name}_sha256"], "staged_as": p.get(f"{name}_path")}
               if p.get(f"{name}_sha256") else None for name in reqs.UPLOADS if f"{name}_sha256" in p},
            # s2v: generate's keys for its inputs (the tts_* ones stay None: the server takes recorded speech)
            **({**{name: p.get(name) for name in catalog.TASKS[p["task"]].inputs if name not in reqs.UPLOADS},
                "frames_per_clip": p["frame_num"], "clips_expected": p["clips"], "clips_run": live.clip,
                "speech_merged": True}  # a failed merge fails the job (engine.save)
               if p.get("clips") else {}),
            "plan": {"server": True, "world_size": eng.world_size, "pipeline": eng.backend.name,
                     **{k: v for k, v in vars(eng.options).items()},
                     "offload_model": eng.options.resolved_offload(eng.world_size)},
            "argv": list(sys.argv), "phases_s": {k: None if v is None else round(v, 3) for k, v in phases.items()},
            "gpus": names, "gpu_indices": _gpu_indices(), "docker_image_digest": None,
            "preset": p.get("preset"), "loras": _merged_loras() or list(self.config.loras),
            "total_s": round(time.monotonic() - started, 3), **_runtime(),
            "wan22_commit": os.environ.get("WAN22_REF"), "wan22ctl_version": __version__,
            "run_id": job.id, "job_id": job.id, "attempts": job.attempts,
            "started_at": _iso(job.started_at), "finished_at": _iso(time.time()),
        }

    # ------------------------------------------------------------------ metrics

    def metrics_text(self) -> str:
        """Prometheus text exposition (version 0.0.4)."""
        counts = self.store.counts()
        lines = [
            "# HELP wan22ctl_ready 1 once the pipeline is loaded and jobs run.",
            "# TYPE wan22ctl_ready gauge", f"wan22ctl_ready {int(self.ready)}",
            "# HELP wan22ctl_load_seconds Seconds the pipeline took to load.",
            "# TYPE wan22ctl_load_seconds gauge",
            f"wan22ctl_load_seconds {self.engine.load_seconds if self.engine.load_seconds is not None else 'NaN'}",
            "# HELP wan22ctl_queue_depth Jobs waiting in the queue.",
            "# TYPE wan22ctl_queue_depth gauge", f"wan22ctl_queue_depth {counts['queued']}",
            "# HELP wan22ctl_jobs Jobs in the queue database by state.", "# TYPE wan22ctl_jobs gauge",
            *[f'wan22ctl_jobs{{state="{s}"}} {n}' for s, n in counts.items()],
            "# HELP wan22ctl_job_duration_seconds Job run time (dequeue to end) since the server started.",
            "# TYPE wan22ctl_job_duration_seconds summary",
        ]
        for state, s in self.job_seconds.items():
            lines += [f'wan22ctl_job_duration_seconds_sum{{state="{state}"}} {s.total:.6f}',
                      f'wan22ctl_job_duration_seconds_count{{state="{state}"}} {s.count}']
        lines += [
            "# HELP wan22ctl_step_seconds Denoising step time.", "# TYPE wan22ctl_step_seconds summary",
            f"wan22ctl_step_seconds_sum {self.step_seconds.total:.6f}",
            f"wan22ctl_step_seconds_count {self.step_seconds.count}",
            "# HELP wan22ctl_job_start_latency_seconds Dequeue to the start of the first denoising step.",
            "# TYPE wan22ctl_job_start_latency_seconds summary",
            f"wan22ctl_job_start_latency_seconds_sum {self.start_latency.total:.6f}",
            f"wan22ctl_job_start_latency_seconds_count {self.start_latency.count}",
        ]
        return "\n".join(lines) + "\n"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


def _merged_loras() -> list[dict]:
    """What agent.lora merged at load in this process: file, sha256, scale, expert per file."""
    merged = sys.modules.get("wan22ctl.agent.lora")
    return merged.records() if merged is not None else []


def _runtime() -> dict:
    """The sidecar's `attention` (as wanrun's event reports it for `generate`), `gpu_memory`,
    `weights` (where the MoE experts live), `dtype` and `offload` (WAN22_DTYPE / WAN22_OFFLOAD)."""
    att, sp = sys.modules.get("wan22ctl.agent.attention"), sys.modules.get("wan22ctl.agent.speedups")
    attention = None
    if att is not None:
        fa = sys.modules.get("wan22ctl.agent.fp8attn")
        attention = {"requested": att.requested(), "backend": next(iter(att._resolved.values()), None),
                     "fp8_attention": fa.ran() if fa is not None else None,
                     "speedups": sp.active() if sp is not None else None}
    memory = None
    if "torch" in sys.modules:
        from wan22ctl.agent.wanrun import peak_memory

        memory = peak_memory()
    blocks = os.environ.get("WAN22_OFFLOAD", "") == "blocks"
    weights = sp.placement() if sp is not None else None
    return {"attention": attention, "gpu_memory": [memory] if memory else [], "weights": weights,
            "dtype": os.environ.get("WAN22_DTYPE", "bf16") or "bf16",
            "offload": "blocks" if blocks else "model" if weights == "pinned" else "off",
            "resident_blocks": int(os.environ.get("WAN22_RESIDENT_BLOCKS", "0") or 0) if blocks else None}
