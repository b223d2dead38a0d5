"""`exprengine edit` keeps what a photo was: its ICC colour profile, its EXIF (orientation reset,
since the pixels come back upright) and the 16-bit samples of 16-bit PNGs, both when faces are
edited and when a photo without faces passes through."""
from __future__ import annotations

import struct
import warnings

import numpy as np
import png
import pytest
from PIL import ExifTags, Image, ImageCms
from helpers import rig_face_region
from test_cli import run_cli
from test_faces import astronaut

from exprengine.media import read_photo, write_photo

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")



def p3_profile() -> bytes:
    """A Display-P3-like RGB ICC profile: LittleCMS's sRGB with P3's (D50-adapted) primaries."""
    b = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {}
    for i in range(struct.unpack(">I", b[128:132])[0]):
        sig, offset, _ = struct.unpack(">4sII", b[132 + 12 * i:144 + 12 * i])
        tags[sig] = offset
    for sig, xyz in ((b"rXYZ", (0.5151, 0.2412, -0.0011)), (b"gXYZ", (0.2920, 0.6922, 0.0419)),
                     (b"bXYZ", (0.1571, 0.0666, 0.7841))):
        assert b[tags[sig]:tags[sig] + 4] == b"XYZ "
        b[tags[sig] + 8:tags[sig] + 20] = b"".join(struct.pack(">i", round(v * 65536)) for v in xyz)
    name = "sRGB built-in".encode("utf-16-be")
    at = b.index(name)
    b[at:at + len(name)] = "Display P3 v4".encode("utf-16-be")
    b[84:100] = bytes(16)                        # profile ID: not computed
    return bytes(b)


def camera_exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.DateTime] = "2024:05:01 10:20:30"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
    return exif.tobytes()


def assert_camera_exif(img: Image.Image) -> None:
    exif = img.getexif()
    assert exif.get(ExifTags.Base.Make) == "PhoneCo"
    assert exif.get(ExifTags.Base.DateTime) == "2024:05:01 10:20:30"
    assert exif.get(ExifTags.Base.Orientation, 1) == 1
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (52.0, 31.0, 12.5)


def read_png16(path) -> np.ndarray:
    """A 16-bit PNG's exact samples, HxW or HxWxC uint16 (fails for any other bit depth)."""
    width, height, rows, info = png.Reader(filename=str(path)).read()
    assert info["bitdepth"] == 16, info
    a = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    return a if info["planes"] == 1 else a.reshape(height, width, info["planes"])


def write_png16(path, a: np.ndarray) -> None:
    h, w = a.shape[:2]
    planes = 1 if a.ndim == 2 else a.shape[2]
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=planes == 1, bitdepth=16).write(f, a.reshape(h, w * planes))


def noise16(a8: np.ndarray, seed: int = 0) -> np.ndarray:
    """8-bit samples as 16-bit ones (x 257) with low-bit noise that rounds back to the same 8 bits."""
    n = np.random.default_rng(seed).integers(-128, 129, a8.shape)
    return np.clip(a8.astype(np.int64) * 257 + n, 0, 65535).astype(np.uint16)


def test_a_phone_photo_keeps_its_profile_and_exif_and_comes_back_upright(tmp_path, capsys):
    profile = p3_profile()
    phone = tmp_path / "phone.jpg"                # stored sideways, EXIF says turn it upright
    Image.fromarray(astronaut()).transpose(Image.Transpose.ROTATE_90).save(
        phone, quality=95, icc_profile=profile, exif=camera_exif(orientation=6))
    for out in (tmp_path / "out.jpg", tmp_path / "out.png"):
        code, stdout, err = run_cli(["edit", phone, "--preset", "surprise@2", "--out", out], capsys)
        assert code == 0 and "found 1 face, edited 1" in stdout, (stdout, err)
        assert "note:" not in err
        result = Image.open(out)
        assert result.size == (512, 512) and result.info["icc_profile"] == profile
        assert_camera_exif(result)               # orientation reset: the pixels are upright
        upright = np.asarray(result.convert("RGB"), dtype=np.int16)
        outside = np.ones((512, 512), bool)
        outside[rig_face_region(astronaut())] = False    # upright: the face where the astronaut's is
        assert np.abs(upright - astronaut())[outside].mean() < 3, out


def test_a_photo_without_faces_keeps_profile_and_exif_when_reencoded(tmp_path, capsys):
    profile = p3_profile()
    wall = tmp_path / "wall.jpg"
    pixels = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(wall, quality=95, icc_profile=profile, exif=camera_exif(orientation=8))
    for name in ("wall.png", "wall.webp"):
        out = tmp_path / name
        code, stdout, err = run_cli(["edit", wall, "--preset", "happiness", "--out", out], capsys)
        assert code == 0 and "no face found" in stdout and "note:" not in err, (stdout, err)
        result = Image.open(out)
        assert result.size == (90, 120)          # orientation 8 applied, then reset
        assert result.info["icc_profile"] == profile
        assert_camera_exif(result)
    # BMP holds neither: one note line, and the photo is still written
    out = tmp_path / "wall.bmp"
    code, stdout, err = run_cli(["edit", wall, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and out.exists()
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: BMP cannot hold the photo's colour profile and EXIF data: {out} is written without them"]
    assert "Traceback" not in err


def test_write_photo_keeps_the_profile_in_each_format(tmp_path):
    profile = p3_profile()
    src = tmp_path / "src.png"
    Image.fromarray(astronaut()[:64, :64]).save(src, icc_profile=profile, exif=camera_exif())
    photo = read_photo(src)
    assert photo.icc_profile == profile and photo.format == "PNG"
    for name in ("a.png", "a.jpg", "a.webp"):
        write_photo(tmp_path / name, photo.pixels, photo)
        result = Image.open(tmp_path / name)
        assert result.info["icc_profile"] == profile, name
        assert_camera_exif(result)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), photo.pixels)


def test_a_cmyk_profile_is_not_put_on_rgb_pixels(tmp_path):
    cmyk = tmp_path / "print.jpg"
    fake = bytearray(p3_profile())
    fake[16:20] = b"CMYK"                        # a CMYK profile: read_photo's pixels are RGB
    Image.new("CMYK", (8, 8), (0, 50, 100, 0)).save(cmyk, icc_profile=bytes(fake))
    photo = read_photo(cmyk)
    assert photo.pixels.shape == (8, 8, 3) and photo.icc_profile is None


def test_a_misnamed_file_passes_through_in_the_format_its_name_says(tmp_path, capsys):
    fake = tmp_path / "wall.jpg"                 # a PNG file named .jpg
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(fake, format="PNG")
    out = tmp_path / "out.jpg"
    code, stdout, err = run_cli(["edit", fake, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and "no face found" in stdout, err
    assert Image.open(out).format == "JPEG"


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_pngs_without_faces_stay_exact(tmp_path, capsys, channels):
    rng = np.random.default_rng(3)
    shape = (60, 80) if channels == 1 else (60, 80, 3)
    samples = rng.integers(0, 65536, shape).astype(np.uint16)
    src = tmp_path / "wall16.png"
    write_png16(src, samples)
    photo = read_photo(src)
    assert photo.high is not None and np.array_equal(photo.high, samples)
    assert np.array_equal(photo.pixels, np.rint(samples / 257).astype(np.uint8))
    out = tmp_path / "out.png"                   # same format: the file's own bytes
    code, stdout, err = run_cli(["edit", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and "no face found" in stdout, err
    assert np.array_equal(read_png16(out), samples)
    # re-encoded (the writer the edited path uses): still 16-bit and exact
    write_photo(tmp_path / "again.png", photo.pixels, photo)
    assert np.array_equal(read_png16(tmp_path / "again.png"), samples)
    # a format without 16-bit samples: 8-bit, rounded, and one note saying so
    out = tmp_path / "out.jpg"
    code, stdout, err = run_cli(["edit", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and f"note: JPEG cannot hold the photo's 16-bit samples: {out} is written without it" in err
    assert Image.open(out).mode == ("L" if channels == 1 else "RGB")


def test_a_16_bit_tiff_reencoded_as_png_stays_exact(tmp_path, capsys):
    samples = np.random.default_rng(4).integers(0, 65536, (30, 40)).astype(np.uint16)
    src = tmp_path / "scan.tif"
    Image.fromarray(samples).save(src)
    out = tmp_path / "scan.png"
    code, stdout, err = run_cli(["edit", src, "--preset", "happiness", "--out", out], capsys)
    assert code == 0 and "no face found" in stdout, err
    assert np.array_equal(read_png16(out), samples)


def test_a_16_bit_png_turned_upright_keeps_its_samples(tmp_path):
    samples = np.random.default_rng(5).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    plain = tmp_path / "plain.png"
    write_png16(plain, samples)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6          # turn 90 degrees clockwise to view
    turned = tmp_path / "turned.png"             # the same file with an eXIf chunk after IHDR
    chunks = list(png.Reader(filename=str(plain)).chunks())
    chunks.insert(1, (b"eXIf", exif.tobytes()[6:]))
    with open(turned, "wb") as f:
        png.write_chunks(f, chunks)
    photo = read_photo(turned)
    assert np.array_equal(photo.high, np.rot90(samples, k=-1))
    write_photo(tmp_path / "out.png", photo.pixels, photo)
    assert np.array_equal(read_png16(tmp_path / "out.png"), np.rot90(samples, k=-1))
    assert Image.open(tmp_path / "out.png").getexif().get(ExifTags.Base.Orientation, 1) == 1


@pytest.mark.parametrize("gray", [True, False])
def test_16_bit_png_with_a_face_keeps_every_sample_outside_it(tmp_path, capsys, gray):
    a8 = np.asarray(Image.fromarray(astronaut()).convert("L")) if gray else astronaut()
    samples = noise16(a8)
    src16, src8 = tmp_path / "astro16.png", tmp_path / "astro8.png"
    write_png16(src16, samples)
    Image.fromarray(a8).save(src8)
    out16, out8 = tmp_path / "out16.png", tmp_path / "out8.png"
    for src, out in ((src16, out16), (src8, out8)):
        code, stdout, err = run_cli(["edit", src, "--preset", "surprise@2", "--mask", "shape", "--out", out], capsys)
        assert code == 0 and "found 1 face, edited 1" in stdout, (stdout, err)
    result, edited8 = read_png16(out16), np.asarray(Image.open(out8))
    assert result.shape == samples.shape
    changed = result != samples
    assert changed.sum() > 100                   # the face changed...
    outside = np.ones(a8.shape[:2], bool)
    outside[rig_face_region(a8)] = False
    assert not changed[outside].any()            # ...and every 16-bit sample outside it is exact
    # inside, the 8-bit edit is applied to the 16-bit samples: the low-bit detail is kept
    residual = samples.astype(np.int64) - a8.astype(np.int64) * 257
    expected = np.clip(edited8.astype(np.int64) * 257 + residual, 0, 65535)
    assert np.array_equal(result, expected)


@pytest.mark.parametrize("planes", [2, 4])
def test_16_bit_pngs_with_alpha_stay_exact(tmp_path, planes):
    samples = np.random.default_rng(6).integers(0, 65536, (12, 16, planes)).astype(np.uint16)
    src = tmp_path / "alpha16.png"
    with open(src, "wb") as f:
        png.Writer(16, 12, greyscale=planes == 2, alpha=True, bitdepth=16).write(f, samples.reshape(12, -1))
    photo = read_photo(src)
    rgba = samples[:, :, [0, 0, 0, 1]] if planes == 2 else samples      # gray + alpha reads as RGBA
    assert photo.pixels.shape == (12, 16, 4) and np.array_equal(photo.high, rgba)
    edited = photo.pixels.copy()
    edited[0, 0, 0] = edited[0, 0, 0] // 2 + 1                          # one changed sample
    write_photo(tmp_path / "out.png", edited, photo)
    result = read_png16(tmp_path / "out.png")
    expected = rgba.astype(np.int64)
    expected[0, 0, 0] += (int(edited[0, 0, 0]) - int(photo.pixels[0, 0, 0])) * 257
    assert np.array_equal(result, np.clip(expected, 0, 65535))


def test_a_crop_edit_keeps_the_colour_profile_and_exif(tmp_path, capsys):
    profile = p3_profile()
    src = tmp_path / "face.jpg"
    Image.fromarray(astronaut()[60:190, 160:290]).save(src, quality=95, icc_profile=profile, exif=camera_exif())
    before = src.read_bytes()
    out = tmp_path / "smile.jpg"
    code, _, err = run_cli(["edit", src, "--crop", "--preset", "happiness", "--out", out], capsys)
    assert code == 0, err
    with Image.open(out) as result:
        assert result.size == (128, 128) and result.info["icc_profile"] == profile
        assert_camera_exif(result)
    assert src.read_bytes() == before
