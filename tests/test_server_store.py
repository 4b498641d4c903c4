"""The queue database and the image checks without a server process (pure and fast)."""

from __future__ import annotations

import base64
import struct

import pytest

from wan22ctl.agent.server.requests import RequestInvalid, check_image, fill_defaults, validate
from wan22ctl.agent.server.store import JobStore


def _job(store, n=0, key=None):
    return store.submit({"prompt": f"p{n}", "sample_steps": 3}, f"h{n}", key)[0]


def test_crash_loop_job_ends_failed_after_max_attempts(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    job = _job(store)
    for attempt in (1, 2):
        assert store.claim_next().id == job.id
        store.close()
        store = JobStore(tmp_path / "q.sqlite3")  # "restart"
        expected = "queued" if attempt < 2 else "failed"
        assert store.recover("requeue", max_attempts=2) == [(job.id, expected)]
    final = store.get(job.id)
    assert final.state == "failed" and "after 2 attempt(s)" in final.error and final.attempts == 2


def test_cancel_asked_before_a_crash_is_honoured(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    job = _job(store)
    store.claim_next()
    assert store.request_cancel(job.id).cancel_requested
    assert store.recover("requeue", 2) == [(job.id, "cancelled")]


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
def test_cancel_of_a_finished_job_changes_nothing(tmp_path, state):
    store = JobStore(tmp_path / "q.sqlite3")
    job = _job(store)
    store.claim_next()
    store.finish(job.id, state, error=None if state == "succeeded" else "why")
    before = store.get(job.id)
    after = store.request_cancel(job.id)
    assert (after.state, after.cancel_requested) == (state, False)
    assert store.get(job.id) == before  # nothing written: a later recover() has nothing to honour
    assert store.request_cancel("video_" + "0" * 24) is None


def test_queue_is_fifo_and_wal(tmp_path):
    store = JobStore(tmp_path / "q.sqlite3")
    ids = [_job(store, n).id for n in range(5)]
    assert [store.claim_next().id for _ in range(5)] == ids and store.claim_next() is None
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _webp_vp8x(w, h):
    payload = b"\x00" * 4 + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(payload)) + b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload


def test_image_kinds_and_sizes():
    img = check_image(base64.b64encode(_webp_vp8x(640, 480)).decode())
    assert (img.kind, img.width, img.height) == ("webp", 640, 480)
    with pytest.raises(RequestInvalid, match="larger than 100 bytes"):
        check_image(base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200).decode(), max_bytes=100)


def test_defaults_come_from_the_task_config():
    class Cfg:  # the fields of upstream's WAN_CONFIGS["ti2v-5B"] the server reads
        frame_num, sample_steps, sample_shift, sample_guide_scale = 121, 50, 5, 5

    params, _ = validate({"prompt": "x"}, "ti2v-5B")
    full = fill_defaults(params, Cfg)
    assert (full["frame_num"], full["sample_steps"], full["sample_shift"], full["sample_guide_scale"]) == (121, 50, 5.0, 5.0)
    assert isinstance(full["sample_guide_scale"], float) and isinstance(full["sample_shift"], float)
