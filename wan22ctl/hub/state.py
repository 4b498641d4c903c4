"""What is on disk for a catalog model: complete, partial or absent. Pure filesystem, no network.

A model directory is *complete* only when its manifest (`.wan22ctl-manifest.json`, written by
`download`/`verify` after every file was checked against the hub's sha256 / git blob id) is
present, every file the manifest lists is there with its recorded size, and every entry of the
catalog's `required` list exists. Anything less with some files present is *partial*; an empty
or missing directory is *absent*.

Other parts of the kit (generate, doctor, ui) ask `model_state()` before they start anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wan22ctl.catalog import Model

MANIFEST_NAME = ".wan22ctl-manifest.json"
# huggingface_hub keeps its local_dir metadata (and our per-file ledger) under here.
CACHE_DIR_NAME = ".cache"
LEDGER_RELPATH = ".cache/wan22ctl/verified.json"


def model_dir(model: Model, root: str | os.PathLike) -> Path:
    """Where `model` lives under a mount root (CHECKPOINT_DIR or VIDEOX_MODELS_DIR)."""
    return Path(root) / model.subdir


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The manifest of a model directory, or None when absent or unreadable."""
    try:
        with open(Path(directory) / MANIFEST_NAME, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _present(directory: Path, entry: str) -> bool:
    """A required file exists and is non-empty, or a required folder ("x/") holds at least one file."""
    path = directory / entry.rstrip("/")
    if entry.endswith("/"):
        return path.is_dir() and any(p.is_file() for p in path.rglob("*"))
    return path.is_file() and path.stat().st_size > 0


def _has_payload(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    return any(p.name != CACHE_DIR_NAME for p in directory.iterdir())


def model_state(model: Model, root: str | os.PathLike) -> tuple[str, list[str], dict | None]:
    """(state, missing, manifest) of `model` under `root`.

    state is 'complete', 'partial' or 'absent'. `missing` names required entries (and manifest
    files) that are not there or have the wrong size; when every file is there but nothing has
    verified them yet, it holds MANIFEST_NAME alone. `manifest` is the parsed manifest or None.
    """
    directory = model_dir(model, root)
    if not _has_payload(directory):
        return "absent", list(model.required), None
    manifest = read_manifest(directory)
    missing = [entry for entry in model.required if not _present(directory, entry)]
    if manifest is not None:
        for rel, info in sorted(manifest["files"].items()):
            path = directory / rel
            try:
                ok = path.stat().st_size == int(info.get("size", -1))
            except OSError:
                ok = False
            if not ok and rel not in missing:
                missing.append(rel)
    if manifest is None and not missing:
        missing = [MANIFEST_NAME]
    if manifest is not None and not missing:
        return "complete", [], manifest
    return "partial", missing, manifest
