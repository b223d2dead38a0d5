"""Video files: probe them, read their frames, write new ones atomically.

Reading: `probe_video` decodes the video stream once with imageio-ffmpeg's ffmpeg, to count
its frames exactly and to find truncated or corrupt files before any work is done on them;
every bad file becomes one `UserError` sentence that names the path. `VideoReader` then yields
the frames as uint8 HxWx3 RGB, and raises rather than stopping early if the file turns out to
hold fewer frames than probed, so a caller never writes a partial result.

Writing: `VideoWriter` encodes H.264 (libx264) into .mp4, .mov or .mkv at exactly the size and
frame rate given, optionally with the audio of another file. Like the writers in
`exprengine.media` it never leaves a partial file: the video is written beside the target,
checked by decoding it, and renamed into place only when complete.

Only local files (ffmpeg's -protocol_whitelist) in video containers (-format_whitelist) are
opened: ffmpeg's playlist and concat demuxers would otherwise follow references in an
untrusted file to other files or to the network, and images are not videos.
"""
from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import imageio_ffmpeg
import numpy as np

from exprengine.errors import UserError
from exprengine.files import atomic_output, check_writable_place, signals_deferred, temp_beside
from exprengine.video import X264_PRESETS

if TYPE_CHECKING:
    from typing_extensions import Self

#: Largest frame accepted, in pixels (width * height): 8K UHD. Larger videos are refused from
#: their header, before a frame is decoded; larger frames are refused by `VideoWriter`.
MAX_VIDEO_PIXELS: int = 8192 * 4320

# ffmpeg demuxers that may open an input: video containers only ("mov" is also mp4, m4v and 3gp;
# "matroska" is also webm). An audio source for VideoWriter may also be an audio file.
_VIDEO_DEMUXERS = "mov,matroska,avi,mpegts,mpeg,flv,asf,ogg"
_AUDIO_DEMUXERS = _VIDEO_DEMUXERS + ",wav,mp3,flac,aac"
_READ_HINT = "use MP4, MOV, MKV, WebM or AVI"
# How much shorter than its header says a video may decode before it counts as truncated:
# rounding, and a frame and a half, or with other streams an audio packet (AAC at 8 kHz: 0.13 s)
# and the codec delay.
_END_TOLERANCE = 0.05
_END_TOLERANCE_WITH_AUDIO = 0.2

# Output suffix -> ffmpeg muxer.
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
_AUDIO_CODEC = ["-c:a", "aac", "-b:a", "192k"]

_LOG_LINE = re.compile(r"^((?:\[[^\]]* @ [^\]]*\] )*)\[(\w+)\] ?(.*)$")
_CONTEXT = re.compile(r"\[(?:[^\]/]*/)?(?:dec:)?([^\]/ ]+) @ [^\]]*\]")
_STREAM = re.compile(r"^\s*Stream #0:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")
_SIZE = re.compile(r", (\d+)x(\d+)(?=[\s,\[]|$)")
_GRAPH_INPUT = re.compile(r"\bw:(\d+) h:(\d+) pixfmt:\S+ tb:\d+/\d+ fr:(\d+)/(\d+)")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` found out about a video file by decoding it once."""

    path: Path
    width: int             # as displayed: after the container's rotation, which decoding applies
    height: int
    fps: float             # e.g. 29.97
    fps_rational: str      # exact, e.g. "30000/1001" or "25/1": write the output at the same rate
    frames: int            # decodable frames, counted
    duration: float        # seconds: frames / fps
    has_audio: bool
    # Also found, but not part of equality (two probes of one file always agree on them):
    pix_fmt: str = field(default="", compare=False)         # as decoded, e.g. "yuv420p", "yuvj420p"
    bit_depth: int = field(default=8, compare=False)        # bits per sample: 8, 10, ...
    color: ColorTags = field(default_factory=lambda: ColorTags(), compare=False)
    pts: tuple[float, ...] = field(default=(), compare=False)   # each frame's time, seconds from the file's start
    end: float | None = field(default=None, compare=False)      # where the last frame ends, seconds
    audio_tracks: int = field(default=0, compare=False)
    start: float = field(default=0.0, compare=False)            # the container's start time, seconds
    sar: str = field(default="", compare=False)                 # sample aspect ratio "N:D" as stated, or ""

    @property
    def constant_rate(self) -> bool:
        """Whether the frames are evenly spaced at `fps_rational` from 0 (to within 0.5 ms):
        then writing them at that rate keeps their times; else they need their own times."""
        if len(self.pts) != self.frames:
            return True                         # times unknown: the rate is all there is
        rate = Fraction(self.fps_rational)
        return all(abs(t - float(i / rate)) <= 0.0005 for i, t in enumerate(self.pts))


@dataclass(frozen=True)
class ColorTags:
    """How a video's YUV values are to be read: ffmpeg's names, None where the file does not say.

    range: "tv" (limited, Y' 16..235) or "pc" (full, 0..255); space: the matrix ("bt709",
    "bt470bg", "smpte170m", "bt2020nc", ...); primaries; transfer ("bt709", "smpte2084" (PQ),
    "arib-std-b67" (HLG), ...)."""

    range: str | None = None
    space: str | None = None
    primaries: str | None = None
    transfer: str | None = None

    @property
    def full_range(self) -> bool:
        """Whether the values use 0..255 ("pc") rather than the limited 16..235 ("tv", or unstated)."""
        return self.range == "pc"

    @property
    def hdr(self) -> bool:
        """PQ or HLG: a high-dynamic-range transfer."""
        return self.transfer in ("smpte2084", "arib-std-b67")

    def setparams(self) -> str:
        """An ffmpeg `setparams` filter that labels frames with these tags (no conversion)."""
        parts = [f"{key}={value}" for key, value in (("range", self.range), ("colorspace", self.space),
                                                    ("color_primaries", self.primaries),
                                                    ("color_trc", self.transfer)) if value]
        return "setparams=" + ":".join(parts) if parts else ""

    def encoder_options(self) -> list[str]:
        """ffmpeg output options that tag the encoded stream with these values (-color_range, ...)."""
        out = []
        for option, value in (("-color_range", self.range), ("-colorspace", self.space),
                              ("-color_primaries", self.primaries), ("-color_trc", self.transfer)):
            if value:
                out += [option, value]
        return out


#: The frames of `VideoWriter` given as RGB are sRGB; the encoder converts them with the BT.709
#: matrix and the file says so, so players (and VideoReader) convert back with the same matrix.
SRGB_TAGS = ColorTags(range="tv", space="bt709", primaries="bt709", transfer="bt709")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Check a video file by decoding its video stream, and describe it.

    Decoding it all costs one pass of ffmpeg's decoder, but it counts the frames exactly and
    refuses a truncated or corrupt file up front, before any editing work. The file is only
    read. Missing, unreadable, empty, non-video, audio-only, frameless, corrupt and oversized
    (more than MAX_VIDEO_PIXELS per frame) files each raise one UserError sentence.
    """
    p = Path(path)
    check_input_file(p, "video")
    scan = _scan(p, _VIDEO_DEMUXERS, decode=True)
    if not scan.opened:
        specific = [e for e in scan.open_errors if not e.startswith("Error opening input")]
        if specific and not scan.guessed and not any("whitelist" in e for e in specific):
            # The container was recognised but its header is broken (e.g. "moov atom not found").
            raise UserError(f"video {p} is truncated or corrupt ({_short(specific[0])})")
        raise UserError(f"{p} is not a video this program can read ({_READ_HINT})")
    if not scan.video:
        raise UserError(f"{p} has no video stream")
    if scan.oversized:
        w, h = scan.coded_size
        raise UserError(f"video {p} has {w}x{h} frames, larger than the limit of {MAX_VIDEO_PIXELS:,} pixels")
    frames = scan.frames or 0
    if scan.decode_errors and (frames > 0 or (scan.packets or 0) > 0 or _says_truncated(scan.decode_errors)):
        raise UserError(f"video {p} is truncated or corrupt ({_short(scan.decode_errors[0])})")
    if frames == 0:
        raise UserError(f"video {p} contains no video frames")
    rate = _choose_rate(scan.rate, scan.avg_rate, scan.tbr)
    if rate is None:
        raise UserError(f"video {p} does not state its frame rate")
    pts, end = (), None
    if len(scan.pts) == frames and scan.time_base is not None:
        pts = tuple(float(t * scan.time_base) for t in scan.pts)
        end = float((scan.pts[-1] + max(scan.last_duration, 0)) * scan.time_base)
    # The video's length: where its last frame ends (variable frame rates), else frames / rate.
    _check_length(p, scan, end if end is not None else float(frames / rate), float(1 / rate))
    if scan.returncode != 0:
        raise UserError(f"video {p} is truncated or corrupt (ffmpeg exit status {scan.returncode})")
    width, height = scan.size or scan.coded_size
    return VideoInfo(path=p, width=width, height=height, fps=float(rate),
                     fps_rational=f"{rate.numerator}/{rate.denominator}", frames=frames,
                     duration=float(frames / rate), has_audio=scan.has_audio, pix_fmt=scan.pix_fmt,
                     bit_depth=_bit_depth(scan.pix_fmt), color=scan.color, pts=pts, end=end,
                     audio_tracks=scan.audio_tracks, start=scan.start, sar=scan.sar)


def _bit_depth(pix_fmt: str) -> int:
    m = re.search(r"p(\d+)(?:le|be)$", pix_fmt)
    return int(m.group(1)) if m else 8


def check_editable(info: VideoInfo) -> None:
    """Refuse, in one sentence, a video whose pixels this program cannot keep exactly outside
    the faces: more than 8 bits per sample (10-bit, HDR) or a PQ/HLG (HDR) transfer."""
    if info.bit_depth > 8 or info.color.hdr:
        what = f"{info.bit_depth}-bit" if info.bit_depth > 8 else "HDR"
        detail = ", ".join(v for v in (info.pix_fmt, info.color.space, info.color.transfer) if v)
        raise UserError(f"video {info.path} is {what} ({detail}); this program edits 8-bit SDR video only "
                        f"(convert it first, e.g. to 8-bit BT.709)")


def _check_length(p: Path, scan: _Scan, video_seconds: float, frame_seconds: float) -> None:
    """Refuse a video that ends before its header says it does.

    Cut exactly between two packets (or inside an index at the end) a file reads to its end
    without an error, but its header still gives the length it had. The header's length is
    that of the longest stream, which `scan.reached` follows (video decoded, others copied);
    with no other stream it is the video's own, so the frame count is checked against it too, which
    catches frames lost from the middle of the decoding order (B-frames).
    """
    if scan.declared is None or scan.estimated:     # no length, or a guess from the bitrate
        return
    slack = max(_END_TOLERANCE_WITH_AUDIO if scan.timed_streams else _END_TOLERANCE, 1.5 * frame_seconds)
    ends = [t for t in (scan.reached, None if scan.timed_streams else video_seconds) if t is not None]
    if ends and min(ends) < scan.declared - slack:
        raise UserError(f"video {p} is truncated or corrupt (it ends at {min(ends):.2f} s of "
                        f"the {scan.declared:.2f} s its header gives)")


class VideoReader:
    """Iterate uint8 HxWx3 RGB frames of a video: `with VideoReader(path) as r: for frame in r: ...`

    `r.info` is the VideoInfo (the file is probed, and so checked, on construction); `len(r)` is
    its frame count. Each iteration decodes from the start and yields writable arrays. If the
    stream ends early or fails mid-way, the iteration raises UserError ("... is truncated or
    corrupt ...") instead of silently yielding fewer frames. The ffmpeg process is stopped when
    the caller stops early, on exceptions, and on `close()`. The file is never modified.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.info = probe_video(path)
        self.path = self.info.path
        # Weak: an iteration the caller drops is closed (and its ffmpeg stopped) at once.
        self._iterations: weakref.WeakSet = weakref.WeakSet()
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.info.frames

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._closed:
            raise ValueError(f"VideoReader for {self.path} is closed")
        frames = self._frames()
        self._iterations.add(frames)
        return frames

    def close(self) -> None:
        """Stop any iteration in progress (and its ffmpeg process)."""
        self._closed = True
        for frames in list(self._iterations):
            frames.close()

    def iter_yuv(self) -> Iterator:
        """The frames as `exprengine.video.yuv.YUVFrame` (yuv420p, as decoded: no RGB conversion
        of the whole frame, range and matrix as the file says); the frame size must be even.
        Other pixel formats are converted to 8-bit 4:2:0 (see `check_editable`)."""
        if self.info.width % 2 or self.info.height % 2:
            raise ValueError(f"{self.path}: yuv420p frames need an even size, not {self.info.width}x{self.info.height}")
        if self._closed:
            raise ValueError(f"VideoReader for {self.path} is closed")
        # Asked for in its own range (yuvj420p is yuv420p in full range), so nothing is converted.
        frames = self._frames("yuvj420p" if self.info.pix_fmt == "yuvj420p" else "yuv420p")
        self._iterations.add(frames)
        return frames

    def _frames(self, pix_fmt: str = "rgb24") -> Iterator[np.ndarray]:
        """Decode with the bundled ffmpeg straight into one new buffer per frame (`readinto`:
        one copy from the pipe, no more; 2.4x the frame rate of imageio-ffmpeg's reader at 1080p
        on the lent H100's machine, bench/ffmpeg_probe.py)."""
        from exprengine.video.yuv import YUVFrame
        info, p = self.info, self.path
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-xerror", *_whitelists(_VIDEO_DEMUXERS),
               "-i", _ffmpeg_path(p), "-map", "0:V:0", "-fps_mode", "passthrough",
               "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
        shape = (info.height, info.width, 3)
        size = info.height * info.width * 3 if pix_fmt == "rgb24" else info.height * info.width * 3 // 2
        if pix_fmt != "rgb24":
            cmd[-5:-5] = ["-color_range", "pc" if info.color.full_range else "tv"]
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, bufsize=0,
                                    start_new_session=True)     # Ctrl-C reaches us, not ffmpeg
            try:
                count = 0
                while True:
                    buf = bytearray(size)
                    view, got = memoryview(buf), 0
                    while got < size:
                        k = proc.stdout.readinto(view[got:])
                        if not k:
                            break
                        got += k
                    if got < size:
                        break                               # the end, or ffmpeg stopped mid-frame
                    count += 1
                    if count > info.frames:
                        raise UserError(f"video {p} changed while it was being read")
                    a = np.frombuffer(buf, np.uint8)                # writable: it owns `buf`
                    yield (a.reshape(shape) if pix_fmt == "rgb24" else
                           YUVFrame(a, info.height, info.width, info.color.space, info.color.full_range))
                code = proc.wait()
                if code != 0 or count < info.frames:
                    log.seek(0)
                    last = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()][-1:]
                    detail = f" ({_short(last[0])})" if last else ""
                    raise UserError(f"video {p} is truncated or corrupt: only {count} of its "
                                    f"{info.frames} frames could be decoded{detail}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.stdout.close()
                proc.wait()


class VideoWriter:
    """Write uint8 HxWx3 RGB frames (or `YUVFrame`s) to a video file atomically:

        with VideoWriter(out_path, width, height, fps_rational="30000/1001", audio_from=input_path) as w:
            w.write(frame)

    The file appears at out_path only if the `with` block completes and the new file decodes to
    every frame written (at the times given); on any exception (KeyboardInterrupt included, which
    is what SIGTERM and SIGHUP become in the CLI) the ffmpeg processes are killed and the temporary
    files removed, and an existing out_path is left untouched. ffmpeg's own messages never reach
    the terminal: a failure (a full disk, say) is one UserError sentence.

    Video: H.264 (libx264) at constant quality `crf` (17: near-lossless for these purposes; lower
    is better and bigger) and speed `preset`, at exactly width x height: 4:2:0 chroma (yuv420p,
    what every player takes) when both are even, else 4:4:4 (yuv444p: the exact odd size, but
    some players, browsers and QuickTime among them, cannot play it).

    Timing: at exactly `fps_rational` ("30000/1001", a Fraction or a number), or, with `pts`
    (seconds, one per frame, increasing) and `end` (where the last frame ends), at those times:
    variable frame rates and a late first frame are kept.

    Colour: RGB frames are sRGB, converted with the BT.709 matrix and tagged so. YUV frames
    (pix_fmt_in="yuv420p") go to the encoder as they are, and the file is tagged with `color`
    (range, matrix, primaries, transfer; None: BT.709 from 720 lines up, else untagged), so that
    full-range input stays full range with the same values.

    audio_from: a file whose audio tracks, all of them, are carried over. By default they are
    re-encoded to AAC and padded with silence or cut to the video's length (an audio file laid
    under new frames). With keep_audio_timing=True (audio_from is the video the frames came from,
    `pts` its frame times) they are kept as they are in it: copied when the container takes
    their codec (else AAC), and at the same times relative to the frames.
    The output must not be audio_from or any of `inputs` (files it must never overwrite).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int,
                 fps_rational: str | Fraction | float,
                 audio_from: str | os.PathLike | None = None, *, crf: int = 17, preset: str = "veryfast",
                 inputs: Iterable[str | os.PathLike] = (), pix_fmt_in: str = "rgb24",
                 color: ColorTags | None = None, pts: Sequence[float] | None = None, end: float | None = None,
                 keep_audio_timing: bool = False, sar: str = "") -> None:
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if pix_fmt_in not in ("rgb24", "yuv420p") or (pix_fmt_in == "yuv420p" and (width % 2 or height % 2)):
            raise ValueError(f"pix_fmt_in must be rgb24, or yuv420p for an even size; got {pix_fmt_in} at {width}x{height}")
        self._pix_fmt_in = pix_fmt_in
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer from 0 to 51, got {crf!r}")
        self.width, self.height = int(width), int(height)
        if sar and not re.fullmatch(r"[1-9]\d{0,5}:[1-9]\d{0,5}", sar):
            raise ValueError(f"sar must be 'N:D' (positive integers), got {sar!r}")
        self.sar = sar                     # the pixels' aspect ratio to tag ("" leaves it unstated)
        self.fps = _parse_rate(fps_rational)
        if preset not in X264_PRESETS:
            raise UserError(f"`preset` {preset!r} is not an x264 preset; use one of {', '.join(X264_PRESETS)}")
        self.crf, self.preset = int(crf), preset
        self.pts = None if pts is None else [float(t) for t in pts]
        if self.pts is not None:
            if not self.pts or any(not math.isfinite(t) for t in self.pts) or \
                    any(b <= a for a, b in zip(self.pts, self.pts[1:])):
                raise ValueError("pts must be increasing finite times, one per frame")
            last = self.pts[-1] + 1 / float(self.fps)
            self.end = float(end) if end is not None and math.isfinite(end) and end > self.pts[-1] else last
        if color is None and pix_fmt_in == "yuv420p":
            from exprengine.video.yuv import matrix_for
            color = SRGB_TAGS if matrix_for(self.height) == "bt709" else ColorTags()
        self.color = color
        sources = [Path(s) for s in inputs if s is not None]
        self.audio_from = Path(audio_from) if audio_from is not None else None
        if self.audio_from is not None:
            sources.append(self.audio_from)
        self.path = _check_output(path, sources)
        if self.width * self.height > MAX_VIDEO_PIXELS:
            raise UserError(f"cannot write {self.path}: {self.width}x{self.height} frames are larger "
                            f"than the limit of {MAX_VIDEO_PIXELS:,} pixels")
        self._audio = False
        self._keep_audio_timing = bool(keep_audio_timing)
        self._audio_start = 0.0
        self.audio_tracks = 0
        if self.audio_from is not None:
            check_input_file(self.audio_from, "audio source")
            scan = _scan(self.audio_from, _AUDIO_DEMUXERS, decode=False)
            if not scan.opened:
                raise UserError(f"audio source {self.audio_from} is not a file this program can read "
                                f"({_READ_HINT}, or WAV, MP3 or FLAC)")
            self._audio, self.audio_tracks, self._audio_start = scan.has_audio, scan.audio_tracks, scan.start
        self._stack: ExitStack | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._video_tmp: Path | None = None
        self._final_tmp: Path | None = None
        self._count = 0
        self._state = "new"

    def _encoder_command(self) -> list[str]:
        even = self.width % 2 == 0 and self.height % 2 == 0
        muxer = _MUXERS[self.path.suffix.lower()]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
        if self.pts is not None:
            # Matroska on the pipe: it carries each frame's time (rawvideo carries none).
            cmd += ["-copyts", "-f", "matroska", "-i", "pipe:0", "-fps_mode", "passthrough",
                    "-enc_time_base:v", "demux"]
        else:
            cmd += ["-f", "rawvideo", "-pix_fmt", self._pix_fmt_in, "-s", f"{self.width}x{self.height}",
                    "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
                    "-r", f"{self.fps.numerator}/{self.fps.denominator}"]
        if self._pix_fmt_in == "rgb24":
            filters, tags = ["setparams=color_primaries=bt709:color_trc=bt709"], ["-colorspace", "bt709"]
        else:
            label = self.color.setparams()
            filters, tags = ([label] if label else []), self.color.encoder_options()
        if self.sar:                       # the input's pixel shape, kept (anamorphic video stays so)
            filters.append("setsar=" + self.sar.replace(":", "/"))
        if filters:
            tags = ["-vf", ",".join(filters)] + tags
        cmd += ["-map", "0:v:0", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
                "-pix_fmt", "yuv420p" if even else "yuv444p", *tags, "-f", muxer]
        if muxer in ("mp4", "mov") and not self._audio:
            cmd += ["-movflags", "+faststart"]
        return cmd + [_ffmpeg_path(self._video_tmp)]

    def __enter__(self) -> Self:
        if self._state != "new":
            raise ValueError(f"VideoWriter for {self.path} can be opened only once")
        self._state = "open"
        stack = ExitStack()
        try:
            # Signals wait until the stack holds every clean-up (a SIGTERM between creating a
            # temporary and registering its removal would leave it behind).
            with signals_deferred():
                self._final_tmp = stack.enter_context(atomic_output(self.path))
                # With audio the frames go to a second temporary first; the audio is added once
                # their number, and so the video's length, is known.
                self._video_tmp = (stack.enter_context(temp_beside(self.path, ".video" + self.path.suffix))
                                   if self._audio else self._final_tmp)
                self._log = stack.enter_context(tempfile.TemporaryFile())
                stack.callback(self._stop)              # first out: ffmpeg is gone before its files are
                self._proc = subprocess.Popen(self._encoder_command(), stdin=subprocess.PIPE,
                                              stdout=subprocess.DEVNULL, stderr=self._log,
                                              start_new_session=True)   # signals reach us, not ffmpeg
                if self.pts is not None:
                    fourcc = b"I420" if self._pix_fmt_in == "yuv420p" else b"RGB\x18"
                    self._pipe(_mkv_header(self.width, self.height, fourcc))
        except BaseException as e:
            self._state = "closed"
            stack.__exit__(type(e), e, e.__traceback__)     # kills ffmpeg, removes the temporaries
            raise
        self._stack = stack
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 HxWx3 RGB frame of the writer's size (or a `YUVFrame`, which goes to
        the encoder as it is: no colour conversion)."""
        if self._state != "open":
            raise ValueError(f"VideoWriter for {self.path} is not open; write inside its `with` block")
        from exprengine.video.yuv import YUVFrame
        if isinstance(frame, YUVFrame):
            if (frame.height, frame.width) != (self.height, self.width) or self._pix_fmt_in != "yuv420p":
                raise UserError(f"frame {self._count} for {self.path} is a {frame.width}x{frame.height} YUV frame; "
                                f"the writer takes {self._pix_fmt_in} at {self.width}x{self.height}")
            self._send(frame.data)
            return
        if self._pix_fmt_in != "rgb24":
            raise UserError(f"frame {self._count} for {self.path}: this writer takes YUV frames")
        a = frame if isinstance(frame, np.ndarray) else None
        want = (self.height, self.width, 3)
        if a is None or a.dtype != np.uint8 or a.shape != want:
            got = f"{a.dtype} array of shape {a.shape}" if a is not None else type(frame).__name__
            raise UserError(f"frame {self._count} for {self.path} is a {got}, not a uint8 array "
                            f"of shape {want}")
        self._send(np.ascontiguousarray(a))

    def _send(self, buffer: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(buffer)).cast("B")
        if self.pts is not None:
            if self._count >= len(self.pts):
                raise UserError(f"cannot write {self.path}: more frames than the {len(self.pts)} times given")
            t = self.pts[self._count]
            nxt = self.pts[self._count + 1] if self._count + 1 < len(self.pts) else self.end
            self._pipe(_mkv_frame(round(t * 1e6), max(1, round(nxt * 1e6) - round(t * 1e6)), data))
        else:
            self._pipe(data)
        self._count += 1

    def _pipe(self, data) -> None:
        try:
            self._proc.stdin.write(data)
        except (OSError, ValueError):
            self._proc.wait()
            raise UserError(f"cannot write {self.path}: ffmpeg stopped while encoding ({self._ffmpeg_said()})") from None

    def _ffmpeg_said(self, code: int | None = None) -> str:
        """ffmpeg's log, summarised in a few words."""
        self._log.seek(0)
        return _ffmpeg_summary(self._log.read(), code if code is not None else self._proc.returncode)

    def _stop(self) -> None:
        """Kill the encoder (if it still runs) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        with suppress(OSError, ValueError):
            proc.stdin.close()
        proc.wait()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._state != "open":
            return False
        self._state = "closed"
        stack, self._stack = self._stack, None
        if exc_type is not None:
            return bool(stack.__exit__(exc_type, exc, tb))      # kills ffmpeg at once, removes the temporaries
        try:
            self._finish()
        except BaseException as e:
            stack.__exit__(type(e), e, e.__traceback__)
            raise
        stack.close()                               # the temporary takes out_path's place
        return False

    def _finish(self) -> None:
        if self._count == 0:
            raise UserError(f"cannot write {self.path}: no frames were given")
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        code = self._proc.wait()                    # ffmpeg finishes the file
        if code != 0:
            raise UserError(f"cannot write {self.path}: ffmpeg failed ({self._ffmpeg_said(code)})")
        if self._audio:
            self._add_audio()
        try:
            scan = _scan(self._final_tmp, _VIDEO_DEMUXERS, decode=True)
        except UserError:
            scan = None
        ok = (scan is not None and scan.opened and not scan.decode_errors and scan.returncode == 0
              and scan.frames == self._count and (scan.size or scan.coded_size) == (self.width, self.height)
              and scan.has_audio == self._audio)
        if ok and self.pts is not None:
            # Each frame at its time (to 1 ms: the times go in as microseconds), measured from
            # the first frame: the file's start may be the audio's.
            got = [t * scan.time_base for t in scan.pts] if scan.time_base is not None else []
            ok = len(got) == self._count and all(
                abs(float(g - got[0]) - (w - self.pts[0])) <= 0.001 for g, w in zip(got, self.pts))
        if not ok:
            raise UserError(f"cannot write {self.path}: ffmpeg did not produce a complete video "
                            f"(is the disk full?)")

    def _add_audio(self) -> None:
        muxer = _MUXERS[self.path.suffix.lower()]
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y"]
        if self._keep_audio_timing:
            # Both at their own times: the frames' as written (relative to the source's start),
            # the audio's moved by the source's start, as ffmpeg moved the frames when reading.
            cmd += ["-copyts", *_whitelists(_VIDEO_DEMUXERS), "-i", _ffmpeg_path(self._video_tmp),
                    "-itsoffset", f"{-self._audio_start:.6f}", *_whitelists(_AUDIO_DEMUXERS),
                    "-i", _ffmpeg_path(self.audio_from), "-map", "0:v:0", "-map", "1:a", "-c:v", "copy"]
            attempts = [["-c:a", "copy"], _AUDIO_CODEC]
        else:
            seconds = f"{float(self._count / self.fps):.6f}"
            cmd += [*_whitelists(_VIDEO_DEMUXERS), "-i", _ffmpeg_path(self._video_tmp),
                    *_whitelists(_AUDIO_DEMUXERS), "-i", _ffmpeg_path(self.audio_from),
                    "-map", "0:v:0", "-map", "1:a", "-c:v", "copy"]
            attempts = [[*_AUDIO_CODEC, "-af", f"apad=whole_dur={seconds},atrim=duration={seconds}"]]
        tail = ["-f", muxer] + (["-movflags", "+faststart"] if muxer in ("mp4", "mov") else [])
        tail.append(_ffmpeg_path(self._final_tmp))
        detail = ""
        for audio in attempts:               # copy the audio when the container takes its codec, else AAC
            done = subprocess.run(cmd + audio + tail, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, check=False, start_new_session=True)
            if done.returncode == 0:
                return
            detail = _ffmpeg_summary(done.stderr, done.returncode)
        raise UserError(f"cannot write {self.path}: adding the audio of {self.audio_from} failed ({detail})")


def _ffmpeg_summary(log: bytes, code: int | None) -> str:
    """What ffmpeg's stderr `log` says went wrong, in a few words: a full disk plainly, else its
    last line without its [component] tag, else its exit status."""
    lines = [line.strip() for line in log.decode("utf-8", "replace").splitlines() if line.strip()]
    if any("No space left" in line for line in lines):
        return "no space left on the device"
    if lines:
        return _short(re.sub(r"^\[[^\]]*\] ", "", lines[-1]))
    return f"ffmpeg exit status {code}"


# --- Matroska on a pipe --------------------------------------------------------------------------
# The least of Matroska (EBML) that ffmpeg's demuxer reads: one uncompressed video track, and a
# cluster per frame with its time (in microseconds: TimestampScale 1000 ns) and duration.
def _ebml_size(n: int) -> bytes:
    for k in range(1, 9):
        if n < (1 << (7 * k)) - 1:
            return (n | (1 << (7 * k))).to_bytes(k, "big")
    raise ValueError(f"element too large: {n} bytes")


def _ebml(element: int, payload: bytes | memoryview) -> bytes:
    return element.to_bytes((element.bit_length() + 7) // 8, "big") + _ebml_size(len(payload)) + bytes(payload)


def _ebml_uint(element: int, value: int) -> bytes:
    return _ebml(element, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _mkv_header(width: int, height: int, fourcc: bytes) -> bytes:
    ebml = _ebml(0x1A45DFA3, _ebml_uint(0x4286, 1) + _ebml_uint(0x42F7, 1) + _ebml_uint(0x42F2, 4)
                 + _ebml_uint(0x42F3, 8) + _ebml(0x4282, b"matroska") + _ebml_uint(0x4287, 4) + _ebml_uint(0x4285, 2))
    info = _ebml(0x1549A966, _ebml_uint(0x2AD7B1, 1000) + _ebml(0x4D80, b"exprengine") + _ebml(0x5741, b"exprengine"))
    video = _ebml(0xE0, _ebml_uint(0xB0, width) + _ebml_uint(0xBA, height) + _ebml(0x2EB524, fourcc))
    track = _ebml(0xAE, _ebml_uint(0xD7, 1) + _ebml_uint(0x73C5, 1) + _ebml_uint(0x83, 1)
                  + _ebml(0x86, b"V_UNCOMPRESSED") + video)
    segment = bytes.fromhex("18538067") + bytes.fromhex("01FFFFFFFFFFFFFF")      # size unknown: a stream
    return ebml + segment + info + _ebml(0x1654AE6B, track)


def _mkv_frame(time_us: int, duration_us: int, data: memoryview) -> bytes:
    block = b"\x81\x00\x00\x00"                 # track 1, at the cluster's time, no flags
    group = _ebml(0xA0, _ebml(0xA1, block + bytes(data)) + _ebml_uint(0x9B, duration_us))
    return _ebml(0x1F43B675, _ebml_uint(0xE7, time_us) + group)


# --- checks ----------------------------------------------------------------------------------
def check_input_file(p: Path, what: str) -> None:
    """Refuse, in one UserError sentence naming `what` ("video", "audio source") and the path, an
    input that is missing, a directory, not a regular file, unreadable or empty. Reads nothing."""
    if not p.exists():
        raise UserError(f"{what} {p} does not exist")
    if p.is_dir():
        raise UserError(f"{what} {p} is a directory, not a file")
    if not p.is_file():
        raise UserError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{what} {p} is not readable (permission denied)")
    if p.stat().st_size == 0:
        raise UserError(f"{what} {p} is empty (0 bytes)")


def check_video_output(path: str | os.PathLike) -> Path:
    """The output path as a Path if it can name a video file: not empty, not a directory, a
    .mp4, .mov or .mkv suffix, not something other than a file. One-sentence UserError if not
    (the directory and the inputs are `exprengine.files.check_writable_place`'s)."""
    raw = os.fspath(path)
    if not raw.strip():
        raise UserError("the output path is empty")
    p = Path(raw)
    if p.is_dir() or raw.endswith(("/", os.sep)):
        raise UserError(f"output {raw} is a directory; give a video file name such as {p / 'out.mp4'}")
    if p.suffix.lower() not in _MUXERS:
        raise UserError(f"output {p} must end in .mp4, .mov or .mkv")
    if p.exists() and not p.is_file():
        raise UserError(f"output {p} exists and is not a regular file")
    return p


def _check_output(path: str | os.PathLike, sources: list[Path]) -> Path:
    p = check_video_output(path)
    check_writable_place(p, sources)
    return p


def _parse_rate(value: str | Fraction | float) -> Fraction:
    try:
        if isinstance(value, float):
            rate = Fraction(value).limit_denominator(1_000_000)
        else:
            rate = Fraction(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        rate = None
    if rate is None or not rate > 0:
        raise UserError(f"the frame rate must be a positive number such as 25 or 30000/1001, not {value!r}")
    return rate


# --- ffmpeg ----------------------------------------------------------------------------------
def _ffmpeg_path(p: Path) -> str:
    # "file:" so that ffmpeg never reads a name as another protocol ("concat:...") or an option.
    return "file:" + os.path.abspath(p)


def _whitelists(demuxers: str) -> list[str]:
    return ["-format_whitelist", demuxers, "-protocol_whitelist", "file"]


@dataclass
class _Scan:
    """What ffmpeg's log said about one input."""

    opened: bool = False                    # the container was recognised and its header read
    video: bool = False                     # it has a video stream (cover pictures do not count)
    has_audio: bool = False
    coded_size: tuple[int, int] | None = None   # as stored
    size: tuple[int, int] | None = None         # as decoded: rotation applied
    oversized: bool = False
    rate: Fraction | None = None            # the decoder's frame rate, exact
    avg_rate: Fraction | None = None        # the header's average frame rate, to 2 decimals
    tbr: Fraction | None = None
    frames: int | None = None
    packets: int | None = None
    declared: float | None = None           # the container's duration, seconds
    estimated: bool = False                 # ... guessed from the bitrate (no index)
    guessed: bool = False                   # the container was only guessed (from the suffix)
    reached: float | None = None            # where decoding (video) and copying (audio) ended
    # (logged before the header?, the log line's contexts such as "h264", message)
    errors: list[tuple[bool, tuple[str, ...], str]] = field(default_factory=list)
    other_codecs: set[str] = field(default_factory=set)   # decoders of the streams not decoded
    timed_streams: int = 0                  # audio, subtitle and data streams: they have a length
    audio_tracks: int = 0
    pix_fmt: str = ""                       # the video stream's, as stored
    color: ColorTags = field(default_factory=ColorTags)
    sar: str = ""                           # its sample (pixel) aspect ratio, e.g. "16:15"; "" if unstated
    start: float = 0.0                      # the container's start time, seconds
    pts: list[int] = field(default_factory=list)     # (decode) each frame's time, in time_base units
    last_duration: int = 0
    time_base: Fraction | None = None
    returncode: int = 0

    @property
    def open_errors(self) -> list[str]:
        """Why ffmpeg could not open the file."""
        return [msg for early, _, msg in self.errors if early]

    @property
    def decode_errors(self) -> list[str]:
        """Errors about an opened file's container or video stream, from the whole run.

        Reading the header already demuxes and decodes a little (all of a small file), so
        errors logged before it count too, except those of other streams' decoders (a broken
        audio track does not make the video unreadable)."""
        if not self.opened:
            return []
        return [msg for _, contexts, msg in self.errors if not self.other_codecs.intersection(contexts)]


def _scan(p: Path, demuxers: str, decode: bool) -> _Scan:
    """Run ffmpeg on `p` and read its log: the header only, or (decode) every video frame.

    Decoding goes to ffmpeg's null output, each decoded frame passed through once (as
    VideoReader gets them); log lines carry their level, so that any error while decoding,
    which ffmpeg logs but often survives (exit status 0), is seen.
    """
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats",
           "-loglevel", "repeat+level+verbose", *_whitelists(demuxers), "-i", _ffmpeg_path(p)]
    if decode:
        # The other streams' packets are copied along (not decoded) so that `reached` covers
        # every stream, as the header's duration does. The frames go to framecrc (as wrapped
        # frames: nothing is copied or hashed but a small struct), which lists each decoded
        # frame's time in the demuxer's own time base.
        cmd += ["-map", "0:V:0", "-map", "0:a?", "-map", "0:s?", "-map", "0:d?", "-c:a", "copy", "-c:s", "copy",
                "-c:d", "copy", "-fps_mode", "passthrough", "-c:v", "wrapped_avframe", "-enc_time_base:v", "demux",
                "-f", "framecrc", "-"]
    scan = _Scan()
    state = {"section": None}
    with tempfile.TemporaryFile() as times:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=times, stderr=subprocess.PIPE)
        try:
            for raw in proc.stderr:
                for line in raw.decode("utf-8", "replace").replace("\r", "\n").split("\n"):
                    _read_log_line(scan, state, line)
                if scan.oversized:                      # refuse from the header, before decoding
                    proc.kill()
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
            scan.returncode = proc.wait()
        if decode:
            times.seek(0)
            _read_frame_times(scan, times.read().decode("ascii", "replace"))
    if not decode:
        scan.returncode = 0                         # without an output ffmpeg always "fails"
    return scan


def _read_frame_times(scan: _Scan, text: str) -> None:
    """framecrc's lines for stream 0 (the video): `0, dts, pts, duration, size, crc`."""
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            with suppress(ValueError, ZeroDivisionError):
                scan.time_base = Fraction(line.split(":", 1)[1].strip())
        elif line.startswith("0,"):
            fields = [f.strip() for f in line.split(",")]
            with suppress(ValueError, IndexError):
                scan.pts.append(int(fields[2]))
                scan.last_duration = int(fields[3])


def _read_log_line(scan: _Scan, state: dict, line: str) -> None:
    m = _LOG_LINE.match(line)
    if not m:
        return
    level, msg = m.group(2), m.group(3)
    if level in ("panic", "fatal", "error") or (level == "warning" and "corrupt" in msg.lower()):
        # Corrupt packets are only warned about, then decoded anyway or dropped.
        contexts = tuple(_CONTEXT.findall(m.group(1)))
        scan.errors.append((state["section"] is None, contexts, msg))
        return
    text = msg.strip()
    if level == "warning":
        scan.estimated = scan.estimated or "duration from bitrate" in text
        scan.guessed = scan.guessed or "misdetection possible" in text
    elif text.startswith("Input #0,"):
        state["section"] = "input"
        scan.opened = True
    elif text.startswith("Stream mapping:"):
        state["section"] = "mapping"
    elif text.startswith("Output #0,"):
        state["section"] = "output"
    elif (s := _STREAM.match(msg)) is not None:
        kind, rest = s.groups()
        main_video = kind == "Video" and "(attached pic)" not in rest and not scan.video
        if state["section"] == "input" and not main_video:
            scan.has_audio = scan.has_audio or kind == "Audio"
            scan.audio_tracks += kind == "Audio"
            scan.timed_streams += kind in ("Audio", "Subtitle", "Data")
            scan.other_codecs.add(rest.split(" ", 1)[0].rstrip(","))
        elif state["section"] == "input":
            scan.video = True
            scan.other_codecs.discard(rest.split(" ", 1)[0].rstrip(","))
            scan.coded_size = _size(rest)
            scan.pix_fmt, scan.color = _pixel_format(rest)
            if (a := re.search(r"\[SAR (\d+):(\d+) DAR", rest)) is not None and int(a.group(1)) and int(a.group(2)):
                scan.sar = f"{a.group(1)}:{a.group(2)}"
            scan.avg_rate = _header_rate(rest, "fps")
            scan.tbr = _header_rate(rest, "tbr")
            if scan.coded_size and scan.coded_size[0] * scan.coded_size[1] > MAX_VIDEO_PIXELS:
                scan.oversized = True
        elif state["section"] == "output" and kind == "Video" and scan.size is None:
            scan.size = _size(rest)
    elif scan.rate is None and (g := _GRAPH_INPUT.search(msg)) is not None:
        num, den = int(g.group(3)), int(g.group(4))
        scan.rate = Fraction(num, den) if num > 0 and den > 0 else None
    elif (f := re.search(r"Output stream #0:0 \(video\): (\d+) frames encoded", msg)) is not None:
        scan.frames = int(f.group(1))
    elif (f := re.match(r"frame=\s*(\d+)", text)) is not None:
        scan.frames = int(f.group(1)) if scan.frames is None else scan.frames
        scan.reached = _seconds(text, "time=")
    elif text.startswith("Duration:") and state["section"] == "input" and scan.declared is None:
        scan.declared = _seconds(text, "Duration: ")
        if (st := re.search(r"start: (-?\d+(?:\.\d+)?)", text)) is not None:
            scan.start = float(st.group(1))
    elif (f := re.search(r"Input stream #0:\d+ \(video\): (\d+) packets read", msg)) is not None:
        scan.packets = int(f.group(1))


_PIX_FMT = re.compile(r"(?:^|, )([a-z][a-z0-9_]*)(?:\(([^)]*)\))?, \d+x\d+")


def _pixel_format(stream_line: str) -> tuple[str, ColorTags]:
    """ "yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67, progressive), 1920x1080" -> the pixel
    format and its colour tags (one name for all three when they agree; "unknown" is None)."""
    m = _PIX_FMT.search(stream_line)
    if not m:
        return "", ColorTags()
    pix_fmt, inside = m.group(1), m.group(2) or ""
    rng = "pc" if pix_fmt.startswith("yuvj") else None
    space = primaries = transfer = None
    for item in (i.strip() for i in inside.split(",")):
        if item in ("tv", "pc"):
            rng = item
        elif "/" in item:
            names = [None if n == "unknown" else n for n in item.split("/")]
            if len(names) == 3:
                space, primaries, transfer = names
        elif item in ("bt709", "smpte170m", "smpte240m"):     # the names that serve all three
            space = primaries = transfer = item
    return pix_fmt, ColorTags(rng, space, primaries, transfer)


def _seconds(text: str, key: str) -> float | None:
    m = re.search(re.escape(key) + r"\s*(\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def _size(stream_line: str) -> tuple[int, int] | None:
    m = _SIZE.search(stream_line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _header_rate(stream_line: str, unit: str) -> Fraction | None:
    m = re.search(rf"(?:^|, )(\d+(?:\.\d+)?)(k?) {unit}\b", stream_line)
    if not m:
        return None
    rate = Fraction(m.group(1)) * (1000 if m.group(2) else 1)
    return rate if rate > 0 else None


def _choose_rate(exact: Fraction | None, avg: Fraction | None, tbr: Fraction | None) -> Fraction | None:
    """The frame rate to report and to write back at.

    The decoder's rate is exact ("30000/1001") but is the nominal rate; the header's average
    (printed to 2 decimals) differs from it for variable-frame-rate video, such as phones
    record, and writing those frames at the nominal rate would shift the audio. So: the exact
    rate when the two agree, else the average, read as an NTSC rate (N*1000/1001) when it is one.
    """
    if exact is not None and (avg is None or abs(avg - exact) <= Fraction(6, 1000)):
        return exact
    for rate in (avg, tbr):
        if rate is not None:
            ntsc = rate * Fraction(1001, 1000)             # 29.97 -> 30.00
            n = round(ntsc)
            return Fraction(n * 1000, 1001) if n > 0 and abs(ntsc - n) <= Fraction(6, 1000) else rate
    return None


def _says_truncated(errors: list[str]) -> bool:
    return any(w in e.lower() for e in errors for w in ("partial file", "ended prematurely", "truncat"))


def _short(text: str, limit: int = 120) -> str:
    lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
    first = lines[0].rstrip(".") if lines else "unknown error"
    return first if len(first) <= limit else first[:limit - 3] + "..."
