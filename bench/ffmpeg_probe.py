"""How fast can the bundled ffmpeg move 1080p frames through a pipe? (decode and encode variants)

    IMAGEIO_FFMPEG_EXE=... python bench/ffmpeg_probe.py clip.mp4

Prints one line per variant: decoding to rgb24 into Python, decoding in ffmpeg alone (with and
without the RGB conversion, more threads, NVDEC), and encoding rgb24 from Python with libx264
presets and NVENC. Used to find what limits the video pipeline on a GPU machine.
"""
from __future__ import annotations

import subprocess
import sys
import time

import imageio_ffmpeg

FF = imageio_ffmpeg.get_ffmpeg_exe()


def run(args, stdin=None):
    t = time.perf_counter()
    p = subprocess.run([FF, "-v", "error", "-nostdin", *args], input=stdin, capture_output=True)
    return time.perf_counter() - t, p.returncode, p.stderr.decode(errors="replace").strip().splitlines()[-1:] if p.returncode else ""


def piped_decode(clip, extra_in=(), extra_out=(), w=1920, h=1080, keep=None):
    cmd = [FF, "-v", "error", "-nostdin", *extra_in, "-i", clip, *extra_out, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    n, size = 0, w * h * 3
    buf = bytearray(size)
    view = memoryview(buf)
    while True:
        got = 0
        while got < size:
            k = p.stdout.readinto(view[got:])
            if not k:
                break
            got += k
        if got < size:
            break
        n += 1
        if keep is not None:
            keep.append(bytes(buf))
    p.wait()
    return time.perf_counter() - t, n


def main(clip: str) -> None:
    out = []
    print(subprocess.run([FF, "-version"], capture_output=True, text=True).stdout.splitlines()[0])
    enc = subprocess.run([FF, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    print("nvenc:", [l.split()[1] for l in enc.splitlines() if "nvenc" in l])
    print("hwaccels:", subprocess.run([FF, "-hide_banner", "-hwaccels"], capture_output=True, text=True).stdout.split()[2:])
    n = 240
    for name, args in [
        ("decode only (ffmpeg, no RGB)", ["-i", clip, "-f", "null", "-"]),
        ("decode + rgb24 (ffmpeg alone)", ["-i", clip, "-pix_fmt", "rgb24", "-f", "null", "-"]),
        ("decode + rgb24, -threads 16 -filter_threads 16", ["-threads", "16", "-i", clip, "-filter_threads", "16",
                                                              "-pix_fmt", "rgb24", "-f", "null", "-"]),
        ("decode + rgb24, sws fast_bilinear", ["-i", clip, "-sws_flags", "fast_bilinear", "-pix_fmt", "rgb24", "-f", "null", "-"]),
        ("NVDEC decode (h264_cuvid) + rgb24", ["-c:v", "h264_cuvid", "-i", clip, "-pix_fmt", "rgb24", "-f", "null", "-"]),
        ("hwaccel cuda decode + rgb24", ["-hwaccel", "cuda", "-i", clip, "-pix_fmt", "rgb24", "-f", "null", "-"]),
    ]:
        s, rc, err = run(args)
        out.append((name, s, rc, err))
    for extra_in, extra_out, name in [((), (), "piped rgb24 into Python (readinto)"),
                                      ((), ("-filter_threads", "16"), "piped, -filter_threads 16"),
                                      ((), ("-sws_flags", "fast_bilinear"), "piped, fast_bilinear")]:
        s, k = piped_decode(clip, extra_in, extra_out)
        out.append((name + f" [{k} frames]", s, 0, ""))
    from exprengine.video.io import VideoReader
    t = time.perf_counter()
    with VideoReader(clip) as r:
        k = sum(1 for _ in r)
    out.append((f"exprengine VideoReader (probe + decode) [{k} frames]", time.perf_counter() - t, 0, ""))
    kept: list[bytes] = []
    piped_decode(clip, keep=kept)                 # the clip's own frames: what the pipeline encodes
    raw = b"".join(kept)
    for name, codec in [("encode libx264 veryfast", ["-c:v", "libx264", "-preset", "veryfast", "-crf", "17"]),
                        ("encode libx264 ultrafast", ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "17"]),
                        ("encode h264_nvenc p1", ["-c:v", "h264_nvenc", "-preset", "p1", "-cq", "19"])]:
        s, rc, err = run(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1920x1080", "-r", "30", "-i", "-",
                          *codec, "-pix_fmt", "yuv420p", "-y", "/tmp/enc.mp4"], stdin=raw)
        out.append((name, s, rc, err))
    print("| variant | s | frames/s | status |\n|---|---|---|---|")
    for name, s, rc, err in out:
        print(f"| {name} | {s:.2f} | {n / s:.0f} | {'ok' if rc == 0 else f'failed: {err}'} |")


if __name__ == "__main__":
    main(sys.argv[1])
