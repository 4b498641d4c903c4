"""The queue database and the image checks without a server process (pure and fast)."""

from __future__ import annotations

import base64

import pytest

from wan22ctl.agent.server.requests import RequestInvalid, check_image, fill_defaults, validate
from wan22ctl.agent.server.store import IdempotencyConflict, JobStore


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


def test_image_kinds_and_sizes():
    from tests.test_server import image_bytes

    img = check_image(base64.b64encode(image_bytes(640, 480, "WEBP")).decode())
    assert (img.kind, img.width, img.height) == ("webp", 640, 480)
    with pytest.raises(RequestInvalid, match="larger than 100 bytes"):
        check_image(base64.b64encode(image_bytes(64, 64, "PNG")).decode(), max_bytes=100)


def test_submissions_that_arrive_together_share_one_transaction(tmp_path):
    """Group commit: many threads submitting at once all get their own job, keys stay exclusive."""
    from concurrent.futures import ThreadPoolExecutor

    store = JobStore(tmp_path / "q.sqlite3")
    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(lambda n: store.submit({"prompt": f"p{n}"}, f"h{n % 5}", f"k{n % 5}"), range(80)))
    assert sum(created for _, created in out) == 5 and len({job.id for job, _ in out}) == 5
    with pytest.raises(IdempotencyConflict):
        store.submit({"prompt": "other"}, "different", "k0")
    assert store.counts()["queued"] == 5


def test_defaults_come_from_the_task_config():
    class Cfg:  # the fields of upstream's WAN_CONFIGS["ti2v-5B"] the server reads
        frame_num, sample_steps, sample_shift, sample_guide_scale = 121, 50, 5, 5

    params, _ = validate({"prompt": "x"}, "ti2v-5B")
    full = fill_defaults(params, Cfg)
    assert (full["frame_num"], full["sample_steps"], full["sample_shift"], full["sample_guide_scale"]) == (121, 50, 5.0, 5.0)
    assert isinstance(full["sample_guide_scale"], float) and isinstance(full["sample_shift"], float)
