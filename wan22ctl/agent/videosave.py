"""WAN22_STREAM_SAVE: encode the MP4 while the VAE decodes, instead of after it.

Upstream decodes the whole video (Wan's causal VAE runs one latent frame at a time: 1 frame, then
4 per step) and only then `save_video` converts it to uint8 and pipes it through imageio's libx264
writer: at 720P the decode takes ~6 s and the encode ~3 s, one after the other. Here, inside the
generate() of a t2v / i2v / ti2v pipeline, every chunk the decoder returns is converted to uint8
as `save_video` would convert it and handed to the same imageio writer (same codec, quality, fps)
on a thread, so x264 works on the CPU while the GPU decodes the next chunk. When generate.py (or
the server) then calls `save_video` with the returned video, the streamed frames are checked
against that video, converted exactly as upstream converts it; only if every byte matches is the
streamed file moved into place. Any difference (another decode, other fps or range, a failed
writer) and upstream's own save_video runs as before: the file is the same either way, since the
encoder gets the same frames with the same arguments, only sooner.

Imports only the standard library and torch (Wan's process imports it through `speedups`, which
installs `patch_vae`, `patch_utils` and a `streaming` wrapper of STREAMED_PIPELINES' generate() as
those modules load); imageio is upstream's own dependency, imported when a stream starts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import shutil
import tempfile
import threading

import torch

# pipeline classes whose generate() decodes one video with one VAE.decode call and returns it
STREAMED_PIPELINES = {"wan.text2video": "WanT2V", "wan.image2video": "WanI2V", "wan.textimage2video": "WanTI2V"}
# the VAE modules whose WanVAE_.decode loops over latent frames, and how a decoder chunk becomes
# video frames (Wan2.2's 5B VAE unpatchifies 2x2 after the loop: frame by frame, so per chunk too)
VAE_MODULES = ("wan.modules.vae2_1", "wan.modules.vae2_2")

log = logging.getLogger("wan22ctl.videosave")
_state: dict = {"fps": None, "stream": None, "directory": None, "published": 0}
_lock = threading.Lock()


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] decoder output -> [B, T, H, W, C] uint8, as upstream turns it into MP4 frames:
    VAE.decode's `.float().clamp_(-1, 1)`, then save_video's clamp and make_grid's normalize
    (`clamp_(-1, 1)`, `sub_(-1)`, `div_(2)`), `* 255` and `.type(torch.uint8)`: the same float32
    operations, element by element."""
    x = video.float().clamp(-1, 1).sub(-1).div(2)
    return (x * 255).type(torch.uint8).permute(0, 2, 3, 4, 1)


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


class Stream:
    """One video being encoded while it is decoded: frames in, an MP4 in `path` out."""

    def __init__(self, fps: int, directory: str | None):
        fd, self.path = tempfile.mkstemp(prefix=".wan22-stream-", suffix=".mp4", dir=directory)
        os.close(fd)
        os.chmod(self.path, 0o666 & ~_umask())  # the mode save_video's own file gets (mkstemp: 0600)
        self.fps = fps
        self.frames: list[torch.Tensor] = []  # host uint8 [T, H, W, C] chunks, kept for the check
        self.error: BaseException | None = None
        self.written = 0  # frames the writer took
        self.complete = False  # the decode that fed it returned normally
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write, name="wan22-stream-save", daemon=True)
        self._thread.start()

    def add(self, chunk: torch.Tensor) -> None:
        """A decoder output chunk [1, C, t, H, W] (post-processed to frames)."""
        frames = to_uint8(chunk)[0].contiguous().cpu()
        self.frames.append(frames)
        self._queue.put(frames)

    def _write(self) -> None:
        writer = None
        try:
            import imageio  # upstream's dependency, as its save_video uses it

            while (frames := self._queue.get()) is not None:
                if self.error is not None:
                    continue  # drain
                if writer is None:
                    writer = imageio.get_writer(self.path, fps=self.fps, codec="libx264", quality=8)
                for frame in frames.numpy():
                    writer.append_data(frame)
                    self.written += 1
        except BaseException as exc:  # noqa: BLE001 - reported through `error`, the save falls back
            self.error = exc
            while self._queue.get() is not None:
                pass
        finally:
            if writer is not None:
                try:
                    writer.close()
                except BaseException as exc:  # noqa: BLE001
                    self.error = self.error or exc

    def close(self) -> None:
        """No more frames: wait for the encoder to write the file's end."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def discard(self) -> None:
        self.close()
        self.frames = []
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def matches(self, tensor: torch.Tensor, fps, nrow, normalize, value_range) -> str | None:
        """Why the streamed file is not what save_video(tensor, …) would write; None when it is."""
        if not self.complete or self.error is not None:
            return f"the stream failed: {self.error}" if self.error is not None else "the decode did not finish"
        if (fps, bool(normalize), tuple(value_range)) != (self.fps, True, (-1, 1)):
            return f"save_video(fps={fps}, normalize={normalize}, value_range={value_range}) is not the stream's"
        if tensor.dim() != 5 or tensor.shape[0] != 1:
            return f"a batch of {tuple(tensor.shape)}"
        expected = to_uint8(tensor)[0].cpu()
        streamed = torch.cat(self.frames) if self.frames else None
        if streamed is None or streamed.shape != expected.shape or not torch.equal(streamed, expected):
            return "the video differs from the decoded frames"
        if self.written != len(streamed):
            return f"the writer took {self.written} of {len(streamed)} frames"
        return None


def _take() -> Stream | None:
    with _lock:
        stream, _state["stream"] = _state["stream"], None
    return stream


def _begin() -> Stream | None:
    """At a VAE decode inside a streamed generate(): a new stream (the previous one, if any, dropped)."""
    fps = _state["fps"]
    old = _take()
    if old is not None:
        old.discard()
    if fps is None:
        return None
    try:
        stream = Stream(fps, _state["directory"])
    except OSError as exc:
        log.warning("streamed save off for this video: %s", exc)
        return None
    with _lock:
        _state["stream"] = stream
    return stream


def discard() -> None:
    """Drop the pending stream, if any (a job that ended without saving)."""
    stream = _take()
    if stream is not None:
        stream.discard()


def patch_vae(module) -> None:
    cls = getattr(module, "WanVAE_", None)
    if cls is None or "_wan22_streamed" in cls.__dict__:
        return
    original = cls.decode
    unpatchify = getattr(module, "unpatchify", None) if module.__name__.endswith("vae2_2") else None

    @functools.wraps(original)
    def decode(self, z, scale):
        stream = _begin()
        if stream is None:
            return original(self, z, scale)

        def hook(_module, _args, out):
            if stream.error is None:
                try:
                    stream.add(out if unpatchify is None else unpatchify(out, patch_size=2))
                except BaseException as exc:  # noqa: BLE001 - the save falls back to upstream's
                    stream.error = exc

        handle = self.decoder.register_forward_hook(hook)
        try:
            out = original(self, z, scale)
        except BaseException:
            discard()
            raise
        finally:
            handle.remove()
        stream.complete = True
        return out

    cls.decode = decode
    cls._wan22_streamed = True


@contextlib.contextmanager
def streaming(fps: int):
    """Inside: a VAE decode streams its frames to an MP4 at `fps` (a generate() of STREAMED_PIPELINES)."""
    _state["fps"] = int(fps)
    try:
        yield
    except BaseException:
        discard()
        raise
    finally:
        _state["fps"] = None


def patch_utils(module) -> None:
    original = module.save_video
    if getattr(original, "_wan22_streamed", False):
        return

    @functools.wraps(original)
    def save_video(tensor, save_file=None, fps=30, suffix=".mp4", nrow=8, normalize=True, value_range=(-1, 1)):
        stream = _take()
        if stream is not None:
            if save_file is not None and publish(stream, tensor, save_file, fps, nrow, normalize, value_range):
                return None
            stream.discard()
        return original(tensor, save_file=save_file, fps=fps, suffix=suffix, nrow=nrow, normalize=normalize,
                        value_range=value_range)

    save_video._wan22_streamed = True
    module.save_video = save_video


def publish(stream: Stream, tensor, save_file: str, fps, nrow, normalize, value_range) -> bool:
    """Finish the stream and move its file to `save_file` if it holds exactly this video."""
    stream.close()
    why = stream.matches(tensor, fps, nrow, normalize, value_range)
    if why is not None:
        log.info("streamed save not used: %s; save_video writes the video", why)
        return False
    try:
        os.replace(stream.path, save_file)
    except OSError:  # another filesystem
        try:
            shutil.move(stream.path, save_file)
        except OSError as exc:
            log.info("streamed save not used: %s; save_video writes the video", exc)
            return False
    stream.frames = []
    _state["published"] += 1
    return True


def use_directory(directory: str | None) -> None:
    """Where streams are written before they move into place: the folder of the final file makes
    the move a rename (default: the system's temporary folder)."""
    _state["directory"] = directory


def published() -> int:
    """How many videos this process saved from a stream (tests, logs)."""
    return _state["published"]
