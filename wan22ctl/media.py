"""Input media read far enough to refuse a bad one before a 14B model loads: audio length, video frames.

Upstream decodes its inputs only after the weights are loaded (librosa for s2v's audio, decord
for the pose and animate videos, cv2 for the reference image), so a wrong file costs minutes and
ends in a traceback. These readers parse the containers' own headers with the standard library:
- audio: WAV (RIFF, any codec with a byte rate), FLAC (STREAMINFO), MP3 (the MPEG frame chain,
  after an ID3v2 tag), Ogg Vorbis/Opus (the last page's granule position), M4A/MP4 (the sound
  track's mdhd) — each yields a duration, or the reason it cannot;
- video: MP4/MOV (the video track's sample count, size and duration), the container
  preprocessing and most tools write; Matroska/WebM and AVI are recognised, not counted;
- images: PNG, JPEG, WebP or BMP by their first bytes.
Used on the host (`plan.launch.build_request`), in the container (the agent records what it read)
and by the resident server on uploads (`audio_info_of`, `video_info_of`: the same readers on bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class MediaError(ValueError):
    """The file is not what it must be; the message says why, in a few words."""


@dataclass(frozen=True)
class AudioInfo:
    kind: str  # wav, flac, mp3, ogg, m4a
    seconds: float


@dataclass(frozen=True)
class VideoInfo:
    kind: str  # mp4, mkv, avi
    frames: int | None  # None: a container these readers recognise but do not count
    width: int | None = None
    height: int | None = None
    seconds: float | None = None

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.frames and self.seconds else None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise MediaError("is a folder, not a file") from None
    except FileNotFoundError:
        raise MediaError("does not exist") from None
    except OSError as exc:
        raise MediaError(f"cannot be read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- audio


def _wav(data: bytes) -> float:
    pos, byte_rate, data_bytes = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cid == b"fmt " and size >= 16:
            channels, rate, byte_rate = struct.unpack("<HII", data[pos + 10:pos + 20])
            if not channels or not rate or not byte_rate:
                raise MediaError("WAV with an empty format chunk")
        elif cid == b"data":
            data_bytes = min(size, len(data) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    if byte_rate is None:
        raise MediaError("WAV without a format chunk")
    if not data_bytes:
        raise MediaError("WAV without audio data")
    return data_bytes / byte_rate


def _flac(data: bytes) -> float:
    if len(data) < 42 or data[4] & 0x7F != 0:
        raise MediaError("FLAC without a STREAMINFO block")
    info = int.from_bytes(data[18:26], "big")
    rate, samples = info >> 44, info & ((1 << 36) - 1)
    if not rate:
        raise MediaError("FLAC with a sample rate of 0")
    if not samples:
        raise MediaError("FLAC that states no length")
    return samples / rate


_MP3_BITRATES = {  # (version 1?, layer) -> kbit/s by index
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame(data: bytes, pos: int) -> tuple[int, float] | None:
    """(frame length, seconds) of the MPEG audio frame at `pos`, or None."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    bitrate_i, rate_i, padding = data[pos + 2] >> 4, (data[pos + 2] >> 2) & 3, (data[pos + 2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_i in (0, 15) or rate_i == 3:
        return None
    layer = 4 - layer_bits
    bitrate = _MP3_BITRATES[(version == 3, layer)][bitrate_i] * 1000
    rate = _MP3_RATES[version][rate_i]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384 / rate
    samples = 1152 if layer == 2 or version == 3 else 576
    return samples // 8 * bitrate // rate + padding, samples / rate


def _mp3(data: bytes) -> float:
    pos = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    frames, seconds = 0, 0.0
    while True:
        frame = _mp3_frame(data, pos)
        if frame is None:
            break
        frames += 1
        seconds += frame[1]
        pos += frame[0]
    if frames < 2 and not (frames == 1 and pos >= len(data)):
        raise MediaError("MP3 without a chain of audio frames")
    return seconds


def _ogg(data: bytes) -> float:
    if b"\x01vorbis" in data[:512]:
        i = data.index(b"\x01vorbis")
        rate = struct.unpack("<I", data[i + 12:i + 16])[0]
    elif b"OpusHead" in data[:512]:
        rate = 48000
    else:
        raise MediaError("Ogg without Vorbis or Opus audio")
    last = data.rfind(b"OggS")
    granule = struct.unpack("<q", data[last + 6:last + 14])[0] if last >= 0 and last + 14 <= len(data) else -1
    if not rate or granule <= 0:
        raise MediaError("Ogg that states no length")
    return granule / rate


# --------------------------------------------------------------------------- ISO base media (MP4, M4A, MOV)

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise MediaError("truncated MP4 box header")
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise MediaError("MP4 box runs past the end of the file (truncated?)")
        yield kind, pos + header, pos + size
        pos += size


def _tracks(data: bytes) -> list[dict]:
    """Each track's handler, mdhd duration and timescale, tkhd size and sample count."""
    if data[4:8] != b"ftyp":
        raise MediaError("not an MP4 (no ftyp box at the start)")
    moov = next(((s, e) for k, s, e in _boxes(data, 0, len(data)) if k == b"moov"), None)
    if moov is None:
        raise MediaError("MP4 without a moov box (unfinished write?)")
    tracks = []
    for kind, s, e in _boxes(data, *moov):
        if kind != b"trak":
            continue
        track: dict = {}
        stack = [(s, e)]
        while stack:
            for k, bs, be in _boxes(data, *stack.pop()):
                if k in _CONTAINERS:
                    stack.append((bs, be))
                elif k == b"hdlr":
                    track["handler"] = data[bs + 8:bs + 12]
                elif k == b"mdhd":
                    if data[bs] == 1:
                        track["timescale"], track["duration"] = struct.unpack(">IQ", data[bs + 20:bs + 32])
                    else:
                        track["timescale"], track["duration"] = struct.unpack(">II", data[bs + 12:bs + 20])
                elif k == b"tkhd":
                    w, h = struct.unpack(">II", data[be - 8:be])
                    track["width"], track["height"] = w >> 16, h >> 16
                elif k == b"stsz":
                    track["samples"] = struct.unpack(">I", data[bs + 8:bs + 12])[0]
        tracks.append(track)
    return tracks


def _track_seconds(track: dict) -> float | None:
    return track["duration"] / track["timescale"] if track.get("timescale") else None


def _m4a(data: bytes) -> float:
    sound = [t for t in _tracks(data) if t.get("handler") == b"soun"]
    if not sound:
        raise MediaError("MP4 without an audio track")
    seconds = _track_seconds(sound[0])
    if not seconds:
        raise MediaError("MP4 audio track that states no length")
    return seconds


def audio_info(path: str) -> AudioInfo:
    """The audio's format and length; MediaError when it is none of the formats or is damaged."""
    return audio_info_of(_read(path))


def audio_info_of(data: bytes) -> AudioInfo:
    """`audio_info` of a file's bytes (an upload)."""
    if not data:
        raise MediaError("is empty")
    readers = ((lambda d: d[:4] == b"RIFF" and d[8:12] == b"WAVE", "wav", _wav),
               (lambda d: d[:4] == b"fLaC", "flac", _flac),
               (lambda d: d[:4] == b"OggS", "ogg", _ogg),
               (lambda d: d[4:8] == b"ftyp", "m4a", _m4a),
               (lambda d: d[:3] == b"ID3" or _mp3_frame(d, 0) is not None, "mp3", _mp3))
    for matches, kind, read in readers:
        if matches(data):
            try:
                seconds = read(data)
            except (struct.error, IndexError):
                raise MediaError(f"damaged {kind.upper()} header") from None
            if seconds <= 0:
                raise MediaError(f"{kind.upper()} with no audio")
            return AudioInfo(kind, round(seconds, 3))
    raise MediaError("not audio that can be decoded (WAV, FLAC, MP3, Ogg or M4A, checked by its header)")


def video_info(path: str) -> VideoInfo:
    """An MP4's video track (frames, size, seconds); MKV/WebM and AVI recognised without counting."""
    return video_info_of(_read(path))


def video_info_of(data: bytes) -> VideoInfo:
    """`video_info` of a file's bytes (an upload)."""
    if not data:
        raise MediaError("is empty")
    if data[:4] == b"\x1aE\xdf\xa3":
        return VideoInfo("mkv", None)
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return VideoInfo("avi", None)
    if data[4:8] != b"ftyp":
        raise MediaError("not a video (MP4, MOV, MKV/WebM or AVI, checked by its header)")
    try:
        video = [t for t in _tracks(data) if t.get("handler") == b"vide"]
    except (struct.error, IndexError):
        raise MediaError("damaged MP4 header") from None
    if not video:
        raise MediaError("MP4 without a video track")
    track = video[0]
    frames = track.get("samples")
    if not frames:
        raise MediaError("MP4 video track without frames")
    return VideoInfo("mp4", frames, track.get("width"), track.get("height"), _track_seconds(track))


def image_kind(path: str) -> str:
    """png, jpeg, webp or bmp by the file's first bytes (animate's src_ref.png is a copy of whatever
    the reference image was); MediaError otherwise."""
    data = _read(path)[:16]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    raise MediaError("not an image (PNG, JPEG, WebP or BMP, checked by its first bytes)")

