"""The pure download plan and model state: no network, no Docker."""

from __future__ import annotations

import json

import pytest

from wan22ctl import catalog
from wan22ctl.errors import UserError
from wan22ctl.hub.state import MANIFEST_NAME, model_state
from wan22ctl.plan.download import (
    LocalFile, RemoteFile, RemoteListing, plan_download, plan_model, resolve_models, space_refusal,
)

T2V = catalog.MODEL_BY_KEY["t2v"]


def listing(files: dict[str, int]) -> RemoteListing:
    return RemoteListing(
        repo_id=T2V.repo_id, revision="main", commit="c" * 40, endpoint="http://hub",
        files=tuple(RemoteFile(path=p, size=s, sha256=f"{i:064x}") for i, (p, s) in enumerate(files.items())),
    )


def test_selectors_expand_dedupe_and_reject_unknown_with_the_valid_list():
    assert [m.key for m in resolve_models(["ti2va", "t2v", "Wan-AI/Wan2.2-TI2V-5B"])] == ["t2v", "i2v", "ti2v-5b"]
    with pytest.raises(UserError) as exc:
        resolve_models(["t2v", "bogus"])
    assert "bogus" in str(exc.value) and "cogvideox-fun" in str(exc.value)


def test_plan_decides_keep_check_fetch_and_counts_partials():
    files = {"a.safetensors": 100, "b.safetensors": 50, "c.pth": 30, "d.json": 10}
    local = {
        "a.safetensors": LocalFile(size=100, verified=True),  # vouched for: keep
        "b.safetensors": LocalFile(size=50),  # right size, unverified: hash it
        "c.pth": LocalFile(size=None, partial=12),  # interrupted: resume from 12
        "d.json": LocalFile(size=3),  # wrong size: fetch whole
    }
    plan = plan_model(T2V, listing(files), local, "/ck/Wan2.2-T2V-A14B")
    actions = {f.path: f.action for f in plan.files}
    assert actions == {"a.safetensors": "keep", "b.safetensors": "check", "c.pth": "fetch", "d.json": "fetch"}
    assert [f.path for f in plan.files][0] == "a.safetensors"  # biggest first
    assert plan.fetch_bytes == (30 - 12) + 10
    assert "google/umt5-xxl/" in plan.not_in_repo  # the catalog wants files this listing lacks


def test_only_a_partial_within_the_file_size_is_resumed():
    files = {"a.pth": 100, "b.pth": 100, "c.pth": 100}
    local = {
        "a.pth": LocalFile(partial=150),  # larger than the file: not this file's bytes, start again
        "b.pth": LocalFile(partial=100),  # every byte is there: only the hash is left to check
        "c.pth": LocalFile(partial=1),
    }
    plan = plan_model(T2V, listing(files), local, "/ck/Wan2.2-T2V-A14B")
    have = {f.path: (f.action, f.have_bytes) for f in plan.files}
    assert have == {"a.pth": ("fetch", 0), "b.pth": ("fetch", 100), "c.pth": ("fetch", 1)}
    assert plan.fetch_bytes == 100 + 0 + 99


def test_space_verdict_shares_one_filesystem_and_refusal_names_both_numbers():
    a = plan_model(T2V, listing({"x.pth": 600}), {}, "/disk/a")
    b = plan_model(catalog.MODEL_BY_KEY["i2v"], listing({"y.pth": 500}), {}, "/disk/b")
    plan = plan_download([a, b], {"/disk/a": ("/disk", 1000), "/disk/b": ("/disk", 1000)})
    assert len(plan.space) == 1 and plan.space[0].needed_bytes == 1100 and not plan.fits
    text = space_refusal(plan)
    assert "1000 bytes" in text and "1100 bytes" in text
    data = plan.to_dict()
    assert data["fits"] is False and data["models"][0]["fetch_bytes"] == 600
    json.dumps(data)  # plain data


def test_model_state_absent_partial_unverified_complete(tmp_path):
    assert model_state(T2V, tmp_path)[0] == "absent"
    d = tmp_path / T2V.subdir
    for rel in T2V.required:
        p = d / (rel + "spiece.model" if rel.endswith("/") else rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    state, missing, manifest = model_state(T2V, tmp_path)
    assert (state, missing, manifest) == ("partial", [MANIFEST_NAME], None)  # all there, never verified
    (d / MANIFEST_NAME).write_text(json.dumps({"commit": "c", "files": {"Wan2.1_VAE.pth": {"size": 1}}}))
    assert model_state(T2V, tmp_path)[0] == "complete"
    (d / "Wan2.1_VAE.pth").write_bytes(b"xy")  # size differs from the manifest
    assert model_state(T2V, tmp_path)[:2] == ("partial", ["Wan2.1_VAE.pth"])
