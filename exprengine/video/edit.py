"""One video file's faces edited into a new file: the `video` command's pipeline as one call.

    result = edit_video("in.mp4", "out.mp4", engine, expression_plan("happiness@1.5"))
    print(result.summary())      # wrote out.mp4: 240 frames at 30 fps, 1280x720, 1 audio track kept; ...

`edit_video` checks its arguments, then decodes the clip once to check it (`probe_video`:
truncated, corrupt, 10-bit and HDR video refused up front), and runs the frames through
`StreamEditor` into `VideoWriter`: frame count, each frame's time (variable frame rates
included), size, pixel aspect ratio (SAR), colours (8-bit 4:2:0 frames stay in YUV: pixels
outside the faces keep their values) and every audio track are kept; the output appears only
when complete. `open_video_edit` gives the same pieces, wired the same way, to a caller that
drives the frames itself (the stage-timing benchmarks).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from exprengine.errors import UserError
from exprengine.faces.paste import MASKS
from exprengine.files import check_writable_place
from exprengine.video import X264_PRESETS
from exprengine.video import io as vio
from exprengine.video.stream import StreamEditor, StreamStats
from exprengine.video.timeline import ExpressionPlan, Keyframes, expression_plan

#: Frames handed to the editor: "auto" (yuv420p, the codec's own 4:2:0, when the frame size is
#: even; else RGB), "yuv420p" or "rgb24" (decoded to RGB and encoded from it, as for odd sizes).
PIXEL_FORMATS = ("auto", "yuv420p", "rgb24")

Progress = Callable[[int, int], object]


@dataclass(frozen=True)
class VideoEditResult:
    """What `edit_video` wrote: `path`, its `frames` at `fps` (frames per second; exact as
    `fps_rational`, e.g. "30000/1001"; with `constant_rate` False the frames keep the input's
    own uneven times and `fps` is their average), `width` x `height` pixels, `audio_tracks`
    carried over (0: none), and the pipeline's timings (`stats`: per-stage seconds, detector
    runs; `stats.summary()` in milliseconds)."""

    path: Path
    frames: int
    fps: float
    fps_rational: str
    constant_rate: bool
    width: int
    height: int
    audio_tracks: int
    stats: StreamStats

    @property
    def detections(self) -> int:
        """How many times the face detector ran."""
        return self.stats.detections

    def summary(self) -> str:
        """One line: "wrote PATH: N frames at R fps, WxH, K audio tracks kept; F frames/s, D detector runs;
        a face in M of N frames" (or "no face found in any frame, so none is edited"; and, when faces
        were aged, how many, how many upscaled and how many too small)."""
        st = self.stats.summary()
        tracks = self.audio_tracks
        audio = "no audio" if not tracks else "1 audio track kept" if tracks == 1 else f"{tracks} audio tracks kept"
        rate = f"{self.fps:g} fps" if self.constant_rate else f"variable rate (average {self.fps:g} fps), times kept"
        aging = ""
        if self.stats.aged or self.stats.too_small:
            s = self.stats
            aging = (f"; {s.aged} faces aged over all frames ({s.upscaled} upscaled to the age engine's size, "
                     f"{s.too_small} too small to age)")
        found = (f"a face in {st['face_frames']} of {st['frames']} frames" if st["face_frames"]
                 else "no face found in any frame, so none is edited")
        return (f"wrote {self.path}: {st['frames']} frames at {rate}, {self.width}x{self.height}, {audio}; "
                f"{st['fps']} frames/s, {st['detections']} detector runs; {found}{aging}")


@dataclass
class VideoEdit:
    """The pieces of one video edit, opened by `open_video_edit`: the input's `info`
    (`io.VideoInfo`), the decoded `frames` (an iterator of `yuv.YUVFrame`s, or uint8 HxWx3 RGB
    arrays, writable: the editor pastes into them), the `editor` (StreamEditor) and the open
    `writer` (VideoWriter: the output appears when the `with` block ends without an error)."""

    info: vio.VideoInfo
    frames: Iterator
    editor: StreamEditor
    writer: vio.VideoWriter

    def result(self) -> VideoEditResult:
        """The result, once the `with` block has ended (the file written)."""
        w, info = self.writer, self.info
        return VideoEditResult(path=w.path, frames=self.editor.stats.frames, fps=info.fps,
                               fps_rational=info.fps_rational, constant_rate=info.constant_rate, width=info.width,
                               height=info.height, audio_tracks=w.audio_tracks if w.audio_from is not None else 0,
                               stats=self.editor.stats)


def _check_arguments(source, out, engine, plan, select, detect_every, detect_scale, encoder_preset, mask,
                     pixel_format, age_engine=None, age=None) -> tuple[Path, ExpressionPlan | Callable | None]:
    """Every argument of `open_video_edit`, checked before any decoding: (the output path, the plan)."""
    aging = age_engine is not None or age is not None
    if aging:
        from exprengine.faces.age import parse_age, require_age_engine
        if age_engine is None or age is None:
            raise UserError("aging a video needs both `age_engine` and `age`")
        require_age_engine(age_engine, "age_engine")
        if not callable(age):
            parse_age(age)
    if engine is None and not (aging and plan is None):
        raise UserError("`engine` is required (an exprengine Engine)")
    if plan is None and not aging:
        raise UserError("`plan` (the expression) is required unless the video is aged (`age`)")
    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise UserError(f"`detect_every` must be a whole number of frames, at least 1, got {detect_every!r}")
    if isinstance(detect_scale, bool) or not isinstance(detect_scale, (int, float)) or not 0 < detect_scale <= 1:
        raise UserError(f"`detect_scale` must be a number in (0, 1], got {detect_scale!r}")
    if encoder_preset not in X264_PRESETS:
        raise UserError(f"`encoder_preset` {encoder_preset!r} is not an x264 preset; use one of {', '.join(X264_PRESETS)}")
    if mask not in MASKS:
        raise UserError(f"`mask` must be one of {', '.join(MASKS)}, not {mask!r}")
    if pixel_format not in PIXEL_FORMATS:
        raise UserError(f"`pixel_format` must be one of {', '.join(PIXEL_FORMATS)}, not {pixel_format!r}")
    if not (select in ("all", "largest") or (isinstance(select, int) and not isinstance(select, bool) and select >= 0)
            or (isinstance(select, str) and select.isdigit())):
        raise UserError(f"`select` (the faces to edit) must be all, largest or a face number (0 = most confident), "
                        f"not {select!r}")
    if plan is None:
        pass                                                    # aging only
    elif isinstance(plan, Keyframes):
        plan = expression_plan(keyframes=plan, policy=engine.policy)
    elif not isinstance(plan, ExpressionPlan) and not callable(plan):
        plan = expression_plan(plan, policy=engine.policy)
    out_path = vio.check_video_output(out)
    source = Path(source)
    vio.check_input_file(source, "video")
    check_writable_place(out_path, [source])
    return out_path, plan


@contextmanager
def open_video_edit(source: str | os.PathLike, out: str | os.PathLike, engine, plan, detector=None, *,
                    select: str | int = "all", detect_every: int = 10, detect_scale: float = 0.5,
                    reproducible: bool = False, audio: bool = True, encoder_preset: str = "veryfast",
                    align: bool = False, mask: str = "attention", pixel_format: str = "auto", age_engine=None,
                    age=None) -> Iterator[VideoEdit]:
    """`with open_video_edit(...) as edit:` the pieces of `edit_video` (same arguments, see
    there), wired as it wires them, for a caller that drives the frames itself:

        for frame in edit.editor.process(edit.frames):
            edit.writer.write(frame)

    The arguments are checked and the input decoded once (checked, described) on entry; the
    output appears when the block ends without an error, and nothing of it otherwise. Leaving
    the block stops the decoder and the editor's threads."""
    out_path, plan = _check_arguments(source, out, engine, plan, select, detect_every, detect_scale,
                                      encoder_preset, mask, pixel_format, age_engine, age)
    with ExitStack() as stack:
        reader = stack.enter_context(vio.VideoReader(source))      # decodes it once: checked and counted
        info = reader.info
        vio.check_editable(info)                                    # 10-bit and HDR: refused, not shifted
        even = info.width % 2 == 0 and info.height % 2 == 0
        if pixel_format == "yuv420p" and not even:
            raise UserError(f"`pixel_format` yuv420p needs an even frame size; video {info.path} is "
                            f"{info.width}x{info.height} (use auto or rgb24)")
        yuv = even if pixel_format == "auto" else pixel_format == "yuv420p"   # stay in the codec's 4:2:0
        timeline = plan.timeline(info.frames, info.duration) if isinstance(plan, ExpressionPlan) else plan
        editor = stack.enter_context(StreamEditor(
            engine, timeline, detector, select, detect_every=detect_every, detect_scale=detect_scale,
            detect_async=not reproducible, fps=info.fps, align=align, mask=mask, in_place=True,
            times=info.pts or None, age_engine=age_engine, age=age))
        # Frames at the input's own times when they are not evenly spaced (variable frame rate).
        timing = {} if info.constant_rate else {"pts": info.pts, "end": info.end}
        writer = stack.enter_context(vio.VideoWriter(
            out_path, info.width, info.height, fps_rational=info.fps_rational, audio_from=source if audio else None,
            preset=encoder_preset, pix_fmt_in="yuv420p" if yuv else "rgb24", color=info.color if yuv else None,
            inputs=[source], keep_audio_timing=True, sar=info.sar, **timing))
        yield VideoEdit(info, reader.iter_yuv() if yuv else iter(reader), editor, writer)


def edit_video(source: str | os.PathLike, out: str | os.PathLike, engine, plan, detector=None, *,
               select: str | int = "all", detect_every: int = 10, detect_scale: float = 0.5,
               reproducible: bool = False, audio: bool = True, encoder_preset: str = "veryfast",
               align: bool = False, mask: str = "attention", pixel_format: str = "auto",
               progress: bool | Progress = True, age_engine=None, age=None) -> VideoEditResult:
    """Edit every face of every frame of the video `source` into the new video `out`.

    engine: an `exprengine.engine.Engine` (a generator's, or the rig's). plan: the expression
    over time: an `ExpressionPlan` (`video.timeline.expression_plan`: held, morphed across the
    clip, or keyframed), Keyframes, a function (frame index, seconds) -> 17 intensities, or one
    expression (AUs, a spec string such as "happiness@1.5", 17 intensities on OpenFace's 0..5
    scale) held on every frame; expressions given here are checked by `engine.policy`.
    detector: the face detector (`faces.landmarks.make_detector`; None: dlib's HOG detector).

    select: the faces edited ("all", "largest", or face number N, 0 the most confident);
    detect_every: frames between detector runs (every frame while a face is lost);
    detect_scale: the detector sees the frame scaled by this factor, in (0, 1];
    reproducible: detect inline on the frames due instead of in the background (slower; the
    output depends only on the input); audio: carry every audio track of `source` over, in
    sync; encoder_preset: x264's speed preset (`video.X264_PRESETS`); align: turn each face
    level; mask: the paste-back mask, "attention" or "shape"; pixel_format: what the frames are
    edited as (`PIXEL_FORMATS`: "auto" keeps 8-bit 4:2:0 video in YUV); progress: a tqdm bar on
    stderr when it is a terminal (True), none (False), or a function called with (frames done,
    frames in all) after each frame. age_engine, age: an age engine and the age (years 0..70, an
    age class such as "30-39", or a function (frame index, seconds) -> years): each face is aged
    first (`StreamEditor`), then edited to `plan`; with `plan` None it is only aged (and
    `engine` may be None).

    `out` (.mp4, .mov or .mkv) keeps the input's frame count, frame times, size, SAR, colour
    range and tags; it appears only when complete (an error or KeyboardInterrupt leaves none,
    and an older file there as it was). The input is only read.

    Returns a VideoEditResult. UserError, before any decoding, for a bad argument (an output that
    is not a new video path beside a writable directory, or is the input; a missing source; an
    unknown preset, mask or pixel format; detect_every < 1; detect_scale outside (0, 1]; a bad
    expression or age; an expression engine as `age_engine`), then for a video this program
    cannot edit exactly (unreadable, truncated, corrupt, 10-bit or HDR).
    """
    if not (isinstance(progress, bool) or callable(progress)):
        raise UserError(f"`progress` must be True, False or a function (done, total), not {progress!r}")
    with open_video_edit(source, out, engine, plan, detector, select=select, detect_every=detect_every,
                         detect_scale=detect_scale, reproducible=reproducible, audio=audio,
                         encoder_preset=encoder_preset, align=align, mask=mask, pixel_format=pixel_format,
                         age_engine=age_engine, age=age) as edit:
        from tqdm import tqdm
        total = edit.info.frames
        with tqdm(total=total, desc="editing", unit="frame", disable=None if progress is True else True) as bar:
            for done, frame in enumerate(edit.editor.process(edit.frames), 1):
                edit.writer.write(frame)
                bar.update()
                if callable(progress):
                    progress(done, total)
    return edit.result()
