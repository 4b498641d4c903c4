"""Download plans: selectors, the hub's file listing and what is on disk in; what to do out.

Pure: the hub adapter (`wan22ctl.hub`) gathers the facts (remote listing, local file sizes,
free space) and executes the plan; this module only decides. The plan is plain data, printed
as is by `wan22ctl download --dry-run [--json]`.

Per file the decision is one of:
  keep   the file is on disk and our ledger says this exact file (size, mtime) matched the hub
  check  the file is on disk with the right size but unverified: hash it, re-fetch on mismatch
  fetch  absent, wrong size, or known bad: download it (resuming a partial `.incomplete`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from wan22ctl import catalog
from wan22ctl.catalog import Model
from wan22ctl.errors import UserError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo at a commit, as the hub lists it."""

    path: str
    size: int
    sha256: str | None = None  # LFS payload hash (what the Hub's etag is for LFS files)
    blob_id: str | None = None  # git blob sha1 (the etag of regular files)


@dataclass(frozen=True)
class RemoteListing:
    """A repo's files at one commit."""

    repo_id: str
    revision: str  # what was asked (a branch, tag or sha)
    commit: str  # what it resolved to
    files: tuple[RemoteFile, ...]
    source: str = "hf"
    endpoint: str = ""


@dataclass(frozen=True)
class LocalFile:
    """What the adapter found on disk for one remote file."""

    size: int | None = None  # None: absent
    partial: int = 0  # bytes already in a resumable partial download
    verified: bool = False  # the ledger vouches for this exact file (same size and mtime, hash matched)


@dataclass(frozen=True)
class FileStep:
    path: str
    size: int
    action: str  # keep | check | fetch
    have_bytes: int  # bytes on disk that count towards this file
    sha256: str | None = None
    blob_id: str | None = None


@dataclass(frozen=True)
class ModelPlan:
    """One catalog model: where it goes, which commit, what each file needs."""

    key: str
    repo_id: str
    revision: str
    commit: str
    source: str
    endpoint: str
    mount: str
    target_dir: str
    files: tuple[FileStep, ...]
    not_in_repo: tuple[str, ...] = ()  # catalog `required` entries the repo lacks (catalog out of date)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def fetch_bytes(self) -> int:
        """Bytes still to come over the network (partials count as already here)."""
        return sum(f.size - f.have_bytes for f in self.files if f.action == "fetch")

    @property
    def complete_on_disk(self) -> bool:
        return all(f.action == "keep" for f in self.files)


@dataclass(frozen=True)
class SpaceVerdict:
    """Free space on one target filesystem against what the plan will write there."""

    path: str
    free_bytes: int
    needed_bytes: int

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.free_bytes


@dataclass(frozen=True)
class DownloadPlan:
    models: tuple[ModelPlan, ...]
    space: tuple[SpaceVerdict, ...]
    force: bool = False  # --force: go on even when space says no
    notes: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return all(v.fits for v in self.space)

    @property
    def total_bytes(self) -> int:
        return sum(m.total_bytes for m in self.models)

    @property
    def fetch_bytes(self) -> int:
        return sum(m.fetch_bytes for m in self.models)

    def to_dict(self) -> dict:
        data = json.loads(json.dumps(asdict(self)))
        for m, plan in zip(data["models"], self.models):
            m["total_bytes"], m["fetch_bytes"] = plan.total_bytes, plan.fetch_bytes
        for v, verdict in zip(data["space"], self.space):
            v["fits"] = verdict.fits
        data.update(fits=self.fits, total_bytes=self.total_bytes, fetch_bytes=self.fetch_bytes)
        return data


def resolve_models(selectors: list[str] | tuple[str, ...]) -> tuple[Model, ...]:
    """Catalog models named by selectors, in order, without repeats; UserError listing the valid ones."""
    if not selectors:
        raise UserError(f"name at least one model; valid selectors: {', '.join(catalog.valid_selectors())}")
    models: list[Model] = []
    for selector in selectors:
        try:
            found = catalog.resolve_selector(selector)
        except KeyError:
            raise UserError(
                f"unknown model selector {selector!r}; valid selectors: {', '.join(catalog.valid_selectors())}"
            ) from None
        models += [m for m in found if m not in models]
    return tuple(models)


def included(model: Model, listing: RemoteListing) -> RemoteListing:
    """The listing cut to the model's `include` entries (folders "x/" or files); all of it when none."""
    if not model.include:
        return listing
    files = tuple(f for f in listing.files
                  if any(f.path.startswith(e) if e.endswith("/") else f.path == e for e in model.include))
    return RemoteListing(repo_id=listing.repo_id, revision=listing.revision, commit=listing.commit, files=files,
                         source=listing.source, endpoint=listing.endpoint)


def _step(remote: RemoteFile, local: LocalFile | None) -> FileStep:
    local = local or LocalFile()
    common = dict(path=remote.path, size=remote.size, sha256=remote.sha256, blob_id=remote.blob_id)
    if local.size == remote.size and local.verified:
        return FileStep(action="keep", have_bytes=remote.size, **common)
    if local.size == remote.size:
        return FileStep(action="check", have_bytes=remote.size, **common)
    partial = local.partial if 0 < local.partial <= remote.size else 0
    return FileStep(action="fetch", have_bytes=partial, **common)


def _required_in_repo(entry: str, paths: set[str]) -> bool:
    if entry.endswith("/"):
        return any(p.startswith(entry) for p in paths)
    return entry in paths


def plan_model(model: Model, listing: RemoteListing, local: dict[str, LocalFile], target_dir: str) -> ModelPlan:
    """Decide keep/check/fetch for every file of `listing`, biggest first (parallel workers balance better)."""
    steps = tuple(
        _step(f, local.get(f.path)) for f in sorted(listing.files, key=lambda f: (-f.size, f.path))
    )
    paths = {f.path for f in listing.files}
    return ModelPlan(
        key=model.key, repo_id=listing.repo_id, revision=listing.revision, commit=listing.commit,
        source=listing.source, endpoint=listing.endpoint, mount=model.mount, target_dir=target_dir,
        files=steps, not_in_repo=tuple(e for e in model.required if not _required_in_repo(e, paths)),
    )


def plan_download(models: list[ModelPlan], free_space: dict[str, tuple[str, int]], force: bool = False) -> DownloadPlan:
    """Add the space verdict: `free_space` maps each target_dir to (filesystem path, free bytes).

    Targets on the same filesystem (same reported path) share its free bytes.
    """
    needed: dict[str, int] = {}
    free: dict[str, int] = {}
    for m in models:
        fs_path, fs_free = free_space[m.target_dir]
        needed[fs_path] = needed.get(fs_path, 0) + m.fetch_bytes
        free[fs_path] = fs_free
    verdicts = tuple(SpaceVerdict(path=p, free_bytes=free[p], needed_bytes=needed[p]) for p in needed)
    notes = tuple(
        f"{m.key}: catalog expects {', '.join(m.not_in_repo)} but {m.repo_id}@{m.commit[:12]} lacks it"
        for m in models if m.not_in_repo
    )
    return DownloadPlan(models=tuple(models), space=verdicts, force=force, notes=notes)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as `df -h` shows them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def space_refusal(plan: DownloadPlan) -> str | None:
    """The one-line refusal when the plan does not fit (None when it does)."""
    short = [v for v in plan.space if not v.fits]
    if not short:
        return None
    parts = [
        f"{v.path} has {human_bytes(v.free_bytes)} ({v.free_bytes} bytes) free but the download needs "
        f"{human_bytes(v.needed_bytes)} ({v.needed_bytes} bytes)"
        for v in short
    ]
    return "not enough disk space: " + "; ".join(parts)
