"""ModelScope source (`--source modelscope`), through the optional `modelscope` package.

`pip install 'wan22ctl[modelscope]'` (the image does not carry it by default). ModelScope's
`snapshot_download(local_dir=...)` fetches and checks each file against the Sha256 its listing
gives; the kit then hashes every file once more and writes the same manifest as for the
Hugging Face source, so `models` and `generate` see no difference. Endpoint: MODELSCOPE_ENDPOINT
(the package's own setting). Not exercised by the test suite (no ModelScope-compatible test server).
"""

from __future__ import annotations

import os
from pathlib import Path

from wan22ctl.catalog import Model
from wan22ctl.errors import EnvError, RunFailed
from wan22ctl.hub.integrity import file_digest, write_manifest
from wan22ctl.hub.state import CACHE_DIR_NAME, model_dir
from wan22ctl.plan.download import FileStep, ModelPlan


def _require():
    try:
        import modelscope  # noqa: F401
    except ImportError:
        raise EnvError("--source modelscope needs the modelscope package",
                       fix="pip install 'wan22ctl[modelscope]' (inside the container: /opt/wan22ctl-venv/bin/pip install modelscope)") from None


def download(model: Model, roots: dict[str, str], *, workers: int, on_event) -> dict:
    """Fetch `model` from ModelScope into its catalog folder and write the manifest."""
    _require()
    from modelscope import snapshot_download

    target = model_dir(model, roots[model.mount])
    target.mkdir(parents=True, exist_ok=True)
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT", "https://www.modelscope.cn")
    on_event("model_start", key=model.key, repo=model.modelscope_id, commit="master", target_dir=str(target),
             total_bytes=0, fetch_bytes=0)
    try:
        snapshot_download(model_id=model.modelscope_id, local_dir=str(target), max_workers=workers)
    except Exception as exc:
        raise RunFailed(f"ModelScope download of {model.modelscope_id} from {endpoint} failed: {exc}") from None
    files = []
    for p in sorted(target.rglob("*")):
        rel = p.relative_to(target).as_posix()
        if p.is_file() and not rel.startswith((CACHE_DIR_NAME + "/", ".wan22ctl", ".mdl", ".msc", "._")):
            files.append(FileStep(path=rel, size=p.stat().st_size, action="keep", have_bytes=p.stat().st_size,
                                  sha256=file_digest(Path(p))))
    plan = ModelPlan(key=model.key, repo_id=model.modelscope_id, revision="master", commit="master",
                     source="modelscope", endpoint=endpoint, mount=model.mount, target_dir=str(target),
                     files=tuple(files))
    manifest = write_manifest(plan)
    on_event("model_done", key=model.key, state="complete", fetched=len(files), target_dir=str(target), commit="master")
    return manifest
