"""huggingface_hub 2.x adapter: list a repo at a commit, fetch one file into a model folder, and
turn the hub's failures into the kit's errors.

Listing uses `HfApi.model_info` + `list_repo_tree` (sizes, LFS sha256, git blob ids). Files are
streamed through huggingface_hub's own HTTP session, auth headers and error mapping
(`get_session`, `build_hf_headers`, `hf_raise_for_status`) into a partial file under
`.cache/wan22ctl/partial/` that outlives the process, resumed with a Range request: 2.x's
`hf_hub_download` writes to a per-process temporary file it deletes on error, so an interrupted
126 GB download would start each shard again. The kit drives its own worker pool; each file is
hashed as its bytes arrive and takes its final name only when the hash matches.

Unreachable endpoints (connection refused, DNS, timeouts, 5xx) are retried with exponential
backoff: `WAN22CTL_HUB_RETRIES` attempts (default 5), first delay `WAN22CTL_HUB_BACKOFF_S`
seconds (default 2), doubling up to 60 s.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Callable, TypeVar

from wan22ctl.errors import EnvError, UserError, Wan22Error
from wan22ctl.plan.download import RemoteFile, RemoteListing

T = TypeVar("T")

TOKEN_FIX = (
    "set HF_TOKEN in .env (or the environment) to a read token from https://huggingface.co/settings/tokens "
    "whose account has accepted the model's terms on its Hugging Face page"
)
ENDPOINT_FIX = "check the network (proxy, firewall), or set HF_ENDPOINT to a reachable mirror such as https://hf-mirror.com"


class Unreachable(EnvError):
    """The endpoint could not be reached after every retry."""


def retry_settings() -> tuple[int, float]:
    """(attempts, first delay in seconds) from the environment."""
    try:
        attempts = max(1, int(os.environ.get("WAN22CTL_HUB_RETRIES", "5")))
    except ValueError:
        attempts = 5
    try:
        delay = max(0.0, float(os.environ.get("WAN22CTL_HUB_BACKOFF_S", "2")))
    except ValueError:
        delay = 2.0
    return attempts, delay


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _chain(exc))


def unreachable_reason(exc: BaseException) -> str | None:
    """A short reason when `exc` means the endpoint could not be reached (worth retrying), else None."""
    try:
        import httpx2
    except ImportError:  # huggingface_hub 2.x releases before the httpx2 switch
        import httpx as httpx2
    from huggingface_hub.errors import HfHubHTTPError

    for e in _chain(exc):
        if isinstance(e, (httpx2.ConnectError, httpx2.TimeoutException, httpx2.RemoteProtocolError,
                          httpx2.NetworkError, ConnectionError)):
            return f"{type(e).__name__}: {e}".strip()
        if isinstance(e, HfHubHTTPError) and e.response is not None and e.response.status_code in (500, 502, 503, 504):
            return f"HTTP {e.response.status_code}"
    return None


def translate(exc: BaseException, repo_id: str, endpoint: str, token_set: bool) -> Wan22Error | None:
    """The kit's error for a hub failure (token, gate, missing repo/revision), or None when not one of those."""
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    token_state = "HF_TOKEN is set but was refused (invalid, expired, or without access)" if token_set \
        else "HF_TOKEN is not set"
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, GatedRepoError):
            return EnvError(f"{repo_id} is gated on {endpoint} (HTTP {status}): {token_state}", fix=TOKEN_FIX)
        if isinstance(e, RevisionNotFoundError):
            return UserError(f"{repo_id} has no such revision on {endpoint}")
        if isinstance(e, RepositoryNotFoundError):
            if status in (401, 403):
                return EnvError(
                    f"{repo_id} was refused by {endpoint} (HTTP {status}: not found or private): {token_state}",
                    fix=TOKEN_FIX,
                )
            return EnvError(f"{repo_id} does not exist on {endpoint}", fix="check HF_ENDPOINT and the catalog repo id")
        if isinstance(e, HfHubHTTPError) and status in (401, 403):
            return EnvError(f"{endpoint} refused access to {repo_id} (HTTP {status}): {token_state}", fix=TOKEN_FIX)
    return None


def with_retries(fn: Callable[[], T], *, what: str, endpoint: str,
                 on_retry: Callable[[int, int, float, str], None] | None = None) -> T:
    """Run `fn`, retrying while the endpoint is unreachable; EnvError naming the endpoint after the last try."""
    attempts, delay = retry_settings()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Wan22Error:
            raise
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            if attempt == attempts:
                raise Unreachable(
                    f"cannot reach the Hugging Face endpoint {endpoint} while {what} "
                    f"({reason}; {attempts} attempts)",
                    fix=ENDPOINT_FIX,
                ) from None
            wait = min(60.0, delay * 2 ** (attempt - 1))
            if on_retry:
                on_retry(attempt, attempts, wait, reason)
            time.sleep(wait)
    raise AssertionError("unreachable")


def list_repo(repo_id: str, revision: str, endpoint: str, token: str | None,
              on_retry: Callable[[int, int, float, str], None] | None = None) -> RemoteListing:
    """The repo's files with sizes and hashes at the commit `revision` resolves to."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token or None)

    def fetch() -> RemoteListing:
        try:
            commit = api.model_info(repo_id, revision=revision).sha
            entries = api.list_repo_tree(repo_id, revision=commit, recursive=True)
            files = tuple(
                RemoteFile(
                    path=e.path, size=e.lfs.size if e.lfs else e.size,
                    sha256=e.lfs.sha256 if e.lfs else None, blob_id=None if e.lfs else e.blob_id,
                )
                for e in entries if isinstance(e, RepoFile)
            )
        except Exception as exc:
            err = translate(exc, repo_id, endpoint, bool(token))
            if err is not None:
                raise err from None
            raise
        return RemoteListing(repo_id=repo_id, revision=revision, commit=commit, files=files,
                             source="hf", endpoint=endpoint)

    return with_retries(fetch, what=f"listing {repo_id}", endpoint=endpoint, on_retry=on_retry)


class Cancelled(Exception):
    """The run was interrupted (Ctrl-C); workers stop at their next chunk, partials stay."""


class HashMismatch(Exception):
    """The bytes that arrived do not hash to what the hub lists (the partial was discarded)."""


class ShortTransfer(ConnectionError):
    """The server closed the stream before the whole file arrived (retried like a dropped link)."""


def partial_path(local_dir: Path, path: str, expect_hash: str | None) -> Path:
    """Where the resumable partial of `path` lives; keyed by the expected hash so a changed
    upstream file never resumes onto the old one's bytes."""
    return local_dir / ".cache" / "wan22ctl" / "partial" / f"{path}.{expect_hash or 'nohash'}.part"


def partial_bytes(local_dir: Path, path: str, expect_hash: str | None) -> int:
    """Bytes of `path` already transferred by an interrupted run, 0 when none."""
    try:
        return partial_path(local_dir, path, expect_hash).stat().st_size
    except OSError:
        return 0


def forget_local(local_dir: Path, path: str, expect_hash: str | None) -> None:
    """Remove a bad file (and any partial of it) so the next fetch starts afresh."""
    for p in (local_dir / path, partial_path(local_dir, path, expect_hash)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def download_file(repo_id: str, path: str, commit: str, local_dir: Path, *, endpoint: str, token: str | None,
                  size: int, expect_hash: str | None, new_hasher: Callable[[], object] | None,
                  on_bytes: Callable[[int], None]) -> Path:
    """Fetch one file of the repo at `commit` into `local_dir`, resuming an earlier partial with Range.

    huggingface_hub 2.x downloads into a process-unique temporary file that it deletes on error
    (and orphans on SIGKILL), so nothing resumes across runs; this streams through its HTTP
    session, headers and error mapping instead, into a partial file that survives the process.
    The bytes are hashed as they arrive (`new_hasher()`), so a 10 GB shard is not read back from
    disk to be verified; the file reaches its final name only when the hash matches
    `expect_hash` (else HashMismatch, and the partial is gone).
    """
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint)
    headers = build_hf_headers(token=token or None)
    # Sizes, hashes and Range offsets are those of the raw bytes: no gzip for text files.
    headers["Accept-Encoding"] = "identity"
    part = partial_path(local_dir, path, expect_hash)
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher = new_hasher() if new_hasher else None
    with open(part, "ab") as f:
        have = f.tell()
        if have > size:
            f.truncate(0)
            on_bytes(-have)
            have = 0
        if hasher is not None and have:
            _hash_prefix(hasher, part, have)
        if have < size:
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        hf_raise_for_status(resp)
                    if have and resp.status_code == 200:  # Range ignored: start over
                        f.truncate(0)
                        on_bytes(-have)
                        have = 0
                        hasher = new_hasher() if new_hasher else None
                    for chunk in resp.iter_bytes():  # as the socket delivers them; the file object batches
                        f.write(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        on_bytes(len(chunk))
            except Exception as exc:
                err = translate(exc, repo_id, endpoint, bool(token))
                if err is not None:
                    raise err from None
                raise
    got = part.stat().st_size
    if got != size:
        raise ShortTransfer(f"{path}: got {got} of {size} bytes")
    if hasher is not None and expect_hash and hasher.hexdigest() != expect_hash:
        part.unlink()
        raise HashMismatch(f"{path}: sha {hasher.hexdigest()} != {expect_hash}")
    final = local_dir / path
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    return final


def _hash_prefix(hasher, path: Path, n: int) -> None:
    """Feed the first `n` bytes of `path` (an earlier run's partial) into `hasher`."""
    with open(path, "rb") as f:
        while n > 0 and (block := f.read(min(n, 8 << 20))):
            hasher.update(block)
            n -= len(block)
