"""Outputs that are never lost or clobbered: MP4 check, readable names, atomic no-overwrite publish.

Upstream's `save_video` swallows every exception and the process still exits 0, so a finished
run proves nothing; `check_mp4()` reads the file's top-level boxes (ftyp first, moov with an
mvhd, mdat, sizes adding up to the file size) without ffmpeg. `publish()` gives the checked
file its final name with a hard link (atomic, fails instead of overwriting), falling back to
an exclusive create + rename where links are not allowed. Stdlib only.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
from datetime import datetime


def check_mp4(path: str) -> str | None:
    """None when `path` looks like a complete MP4, else one line saying what is wrong."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return "no file was written"
    if size == 0:
        return "the file is empty"
    boxes: list[str] = []
    moov_ok = False
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            header = f.read(8)
            if len(header) < 8:
                return f"truncated box header at byte {pos}"
            box_size, kind = struct.unpack(">I4s", header)
            header_len = 8
            if box_size == 1:
                large = f.read(8)
                if len(large) < 8:
                    return f"truncated box header at byte {pos}"
                box_size = struct.unpack(">Q", large)[0]
                header_len = 16
            elif box_size == 0:
                box_size = size - pos  # "extends to the end of the file"
            name = kind.decode("latin-1")
            if not re.fullmatch(r"[\x20-\x7e]{4}", name):
                return f"not an MP4 (garbage box type at byte {pos})"
            if box_size < header_len:
                return f"box {name!r} at byte {pos} has an impossible size {box_size}"
            if pos + box_size > size:
                return f"box {name!r} at byte {pos} runs past the end of the file (truncated write)"
            if name == "moov" and box_size >= header_len + 8:
                f.seek(pos + header_len)
                child = f.read(8)
                moov_ok = len(child) == 8 and child[4:8] == b"mvhd"
            boxes.append(name)
            pos += box_size
    if not boxes or boxes[0] != "ftyp":
        return "not an MP4 (no ftyp box at the start)"
    for needed in ("moov", "mdat"):
        if needed not in boxes:
            return f"incomplete MP4: no {needed} box (boxes: {', '.join(boxes)})"
    if not moov_ok:
        return "incomplete MP4: the moov box has no movie header (mvhd)"
    return None


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe piece of the prompt: word characters joined by '-', no '*' or '/'."""
    words = re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-_")
    return words[:limit].rstrip("-_") or "video"


def final_stem(task: str, size: str, prompt: str, when: datetime) -> str:
    """`t2v-A14B_1280x720_a-red-fox-in-snow_20261127-081500`: readable, sortable, shell-safe."""
    return f"{task}_{size.replace('*', 'x')}_{slug(prompt)}_{when.strftime('%Y%m%d-%H%M%S')}"


def _link_or_rename(src: str, dst: str) -> None:
    """Make `dst` name `src`'s content, failing with FileExistsError if `dst` exists."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(dst) from None
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links here: reserve the name exclusively, then replace our own reservation.
        fd = os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(src, dst)
        return
    os.unlink(src)


def publish(temp: str, directory: str, stem: str, suffix: str = ".mp4") -> str:
    """Give `temp` the name `stem+suffix` in `directory` (or stem-2, stem-3, ...); never overwrites."""
    for n in range(1, 10000):
        name = stem + suffix if n == 1 else f"{stem}-{n}{suffix}"
        dst = os.path.join(directory, name)
        sidecar = os.path.join(directory, (stem if n == 1 else f"{stem}-{n}") + ".json")
        if os.path.exists(sidecar):
            continue  # keep each video's sidecar next to it, unambiguous
        try:
            _link_or_rename(temp, dst)
        except FileExistsError:
            continue
        try:
            os.chmod(dst, 0o644)
        except OSError:
            pass
        return dst
    raise FileExistsError(f"no free name for {stem} in {directory}")


def free_names(directory: str, stem: str, suffix: str = ".mp4") -> tuple[str, str]:
    """The first `stem`, `stem-2`, ... whose video and sidecar names are both free: (video, sidecar)."""
    for n in range(1, 10000):
        base = os.path.join(directory, stem if n == 1 else f"{stem}-{n}")
        if not os.path.exists(base + suffix) and not os.path.exists(base + ".json"):
            return base + suffix, base + ".json"
    raise FileExistsError(f"no free name for {stem} in {directory}")


def publish_as(temp: str, dst: str) -> None:
    """Give `temp` the name `dst` (FileExistsError if that exists: nothing is overwritten)."""
    _link_or_rename(temp, dst)
    try:
        os.chmod(dst, 0o644)
    except OSError:
        pass


def write_sidecar(video_path: str, data: dict) -> str:
    """Write the JSON beside the video (same stem, .json), exclusively; returns its path."""
    path = os.path.splitext(video_path)[0] + ".json"
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n"
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    try:
        _link_or_rename(tmp, path)
    except FileExistsError:
        os.unlink(tmp)
        raise
    return path


def settle_files(output: str, sidecar: str | None) -> bool:
    """A job's named files after its run was interrupted: True when video and sidecar were both
    published (the job is done), else remove whatever part was published and answer False."""
    if os.path.isfile(output) and sidecar and os.path.isfile(sidecar):
        return True
    for path in (output, sidecar, sidecar and sidecar + ".partial"):
        if path and os.path.lexists(path):
            os.remove(path)
    return False
