"""Synthetic distortion corpus: pristine images and video frames, distorted with known type and level, labelled by VMAF.

Why: no subjective IQA database can be obtained offline, so the default models learn from a
teacher. VMAF (libvmaf `vmaf_v0.6.1` in the FFmpeg of `imageio-ffmpeg`) labels every
compression, scaling, blur, noise, banding and corruption item; PSNR-Y and SSIM come from the
same libvmaf pass. Contrast and brightness shifts are kept in the corpus with their type and
level only (`teacher == "level"`): VMAF is a poor judge of them (../shared/TRAINING-NOTES.md),
so they feed the distortion-type tasks, not the quality regression. Pan clips are labelled
`teacher == "vmaf_ref"`: VMAF against the clip's own lossy master, a true full-reference label,
but their master is not pristine, so no-reference models learn only their order within a source.
Their packet-loss items are the exception (`teacher == "vmaf"`, see `run_loss_job`): there the damage,
not the master, decides the label.

Still images: each image is cropped to even width and height (4:2:0 codecs need it). Images of
one size are encoded together as one all-intra video per codec and CRF, so a corpus of a few
hundred photos costs a few encoder runs, not thousands. For VMAF every item is shown twice in a
row, so its motion term is 0 (a photo has no motion) instead of measuring the cut to the next
photo. Video clips are encoded as real video (P/B frames) and labelled frame by frame with the
motion term as VMAF measures it in use; 24 evenly spaced frames per encode become items.
The training split gets video the same way from pan clips: a camera pan over each large
training still, captured and mastered like real footage (`pan_frames`). Clips and pan clips also
lose packets for real (`run_loss_job`): a live TS stream, lost datagrams, the decoder's concealment.
Training stills also get the capture faults of real camera photos (`CAPTURE`: shake, a dim room, backlight).

Scale: VMAF is already 0–100, higher is better. Models with a [0, 1] native range train on
VMAF/100, LIQE's 1–5 levels on 1 + 4·VMAF/100 (see `label_scale` in pipelines/train/train.py), so a shipped
model's 0–100 score reads like VMAF.

Layout of DIR: `corpus.parquet` (one row per item, schema `ITEM_SCHEMA`), `images/...` PNG
files, `jobs/` (finished jobs) and `labels.json` (teacher labels measured so far), so an
interrupted build resumes. Everything is deterministic
from the seed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from scipy import ndimage, signal

from monitor.errors import InputError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MAX_SIDE = 1024  # larger pristine images are downscaled (area) to this long side: cost stays bounded
VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".webm", ".ts", ".y4m"}

# Codec → (FFmpeg arguments, CRF sweep). All-intra for stills; the video path drops the intra flags.
CODECS: dict[str, tuple[list[str], list[int], list[str]]] = {
    "h264": (["-c:v", "libx264", "-preset", "fast"], [22, 30, 38, 46], ["-g", "1"]),
    "hevc": (["-c:v", "libx265", "-preset", "fast", "-x265-params", "log-level=error:pools=1"], [24, 32, 40, 48],
             ["-g", "1"]),
    "vp9": (["-c:v", "libvpx-vp9", "-b:v", "0", "-deadline", "realtime", "-cpu-used", "8"], [30, 44, 54, 63],
            ["-g", "1"]),
    "av1": (["-c:v", "libsvtav1", "-preset", "10"], [30, 44, 54, 63], ["-svtav1-params", "keyint=1"]),
}

# Pixel-domain distortions: name → (levels, LIQE coarse class, teacher). "level": VMAF cannot judge it
# (exposure, colour, chroma noise, sharpening): it is supervised by rank within its source, not by value.
PIXEL: dict[str, tuple[list, str, str]] = {
    "jpeg": ([40, 20, 10, 5], "jpeg compression", "vmaf"),
    "jpeg2000": ([40, 100, 200, 400], "jpeg2000 compression", "vmaf"),
    "downup": ([2, 3, 4], "blur", "vmaf"),
    "gaussian_blur": ([1.0, 2.0, 3.5], "blur", "vmaf"),
    "defocus": ([2, 4, 7], "blur", "vmaf"),
    "motion_blur": ([7, 13, 21], "blur", "vmaf"),
    "noise": ([5.0, 12.0, 25.0], "noise", "vmaf"),
    "banding": ([48, 24, 12], "quantization", "vmaf"),
    "block_loss": ([0.02, 0.06, 0.15], "spatial", "vmaf"),
    "blur_noise_jpeg": ([1, 2, 3], "other", "vmaf"),
    "sensor_noise": ([1, 2, 3], "noise", "level"),
    "contrast": ([0.7, 0.5], "contrast", "level"),
    "brighten": ([40, 80], "overexposure", "level"),
    "darken": ([40, 80], "underexposure", "level"),
    "overexpose": ([1.8, 3.0, 5.0], "overexposure", "level"),
    "underexpose": ([0.5, 0.3, 0.15], "underexposure", "level"),
    "white_balance": ([1, 2, 3], "color", "level"),
    "oversharpen": ([2.0, 4.0, 8.0], "other", "level"),
    "camera_chain": ([1, 2, 3], "other", "level"),
}
# Capture faults of real camera photos, one job per training still (last in the plan): camera shake (a hand's
# curved path, not a straight streak), dim rooms (few photons, the camera's gain and noise reduction, the picture
# left dark) and backlit subjects (the subject in shadow, the bright background clipped). Why: on real camera
# photos with human scores the learned scores rated exactly these too high.
CAPTURE: dict[str, tuple[list, str, str]] = {
    "shake": ([1, 2, 3], "blur", "vmaf"),
    "low_light": ([1, 2, 3], "underexposure", "level"),
    "backlight": ([1, 2, 3], "underexposure", "level"),
}
SHAKE_LENGTH = [0.012, 0.024, 0.045]  # extent of the shake path per level, as a share of the picture's long side
# Adaptive-bitrate ladder of the clips: (encoded height, codec, CRF), rungs below the clip's own height only.
VIDEO_LADDER: list[tuple[int, str, int]] = [(720, "h264", 23), (540, "h264", 26), (540, "hevc", 30), (360, "h264", 28),
                                            (360, "h264", 36), (270, "h264", 34)]
# soft_noise levels (noise σ on a ×1.5 bicubic down-up picture; 0: the soft picture alone): ranked only
SOFT_NOISE = [0.0, 3.0, 8.0]
# Adaptive-bitrate ladder rungs for stills: (downscale factor, codec, CRF). Encoded small, upscaled back
# for display as a player does; VMAF judges the result at the display size.
LADDER: list[tuple[float, str, int]] = [(1.5, "h264", 26), (2.0, "h264", 32), (2.0, "hevc", 36), (3.0, "h264", 38)]
CODEC_COARSE = "jpeg compression"  # LIQE has no video-codec class; block-transform compression is the nearest
PIXEL_FAMILIES = 6  # pixel-domain distortion types drawn per pristine image, each at all its levels (rank pairs)
VAL_IMAGES_PER_SUBSET = 50  # validation images kept per folder (evenly spaced): validation cost stays bounded
VIDEO_PIXELS = 300 * 1280 * 720  # frames of a clip that are encoded: up to 300 at 720p (about the whole clips
# here), fewer for larger frames, so a worker's frame lists stay within a few GB
FRAMES_PER_ENCODE = 24  # evenly spaced frames of each encode that become items: VMAF's per-frame label moves with
# the clip's motion, so a few frames measure a model on a few motion states (6 frames gave CIs of ±.04 on a clip)
# Pan clips (training video): a camera pan over a large training still, rendered at a streaming size and
# captured like real footage (lens softness, temporal sensor noise, a lossy mezzanine encode whose decode is
# the clip's reference), then put through the clips' codec sweep and ladder. Why: the training stills hold
# no 720p video frames, and the held-out clips (soft, already-compressed footage) are where every learned
# score lost to PSNR-Y.
CLIP_RATE = 20  # frames per second the clips' and pan clips' encodes are made at
PAN_SIZE = (1280, 720)
PAN_FRAMES = 30
PAN_PICKS = 3  # evenly spaced frames of each encode that become items
PAN_MIN_SIDE = 900  # stills with a shorter long side would be upscaled more than about 1.7x
PAN_EVERY = 2  # every 2nd large training still gets a pan clip: corpus build time stays bounded
PAN_MEZZANINE_CRF = (12, 28)  # x264 CRF range of the clip's own master encode
RELATIVE = "vmaf_ref"  # teacher of pan items: VMAF against a lossy master (see the module docstring)
# Real packet loss (clips and pan clips): the clip as a live stream sends it, H.264 in MPEG-TS, loses whole
# UDP datagrams (7 TS packets each, as IP carries TS) and FFmpeg's decoder conceals what is missing; errors
# spread through the predicted frames until the next keyframe, as they do on a screen.
PACKET_LOSS = [0.001, 0.004, 0.015]  # share of the video datagrams lost, per level (nested; at least one more)
LOSS_CRF = 26  # x264 CRF of the stream before loss: a good live encode, so the loss is what the label measures
LOSS_GOP = 50  # keyframe interval (2.5 s at CLIP_RATE): damage lasts until the next keyframe
TS_PACKET, TS_PER_DATAGRAM = 188, 7

ITEM_SCHEMA = pa.schema([
    ("item", pa.string()), ("split", pa.string()), ("subset", pa.string()), ("source", pa.string()),
    ("distortion", pa.string()), ("coarse", pa.string()), ("level", pa.int32()), ("param", pa.float64()),
    ("path", pa.string()), ("ref_path", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("teacher", pa.string()), ("vmaf", pa.float64()), ("psnr_y", pa.float64()), ("ssim_y", pa.float64()),
    ("ref_motion", pa.float64()),  # VMAF's motion of the reference at this frame: 0 for stills (GSN-lite reads it)
])

# The project's pristine data: BSDS500 train+val, Urban100 and Sun-Hays80 to train; BSDS500 test, Kodak24 and the clips to validate.
DEFAULT_TRAIN = ("bsds500/train", "bsds500/val", "urban100", "sunhays80")
DEFAULT_VAL = ("bsds500/test", "kodak24", "video")


def ffmpeg() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def stable_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (not on job order or process)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def even_crop(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


def read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def pristine_size(w: int, h: int) -> tuple[int, int]:
    """Width and height of a pristine image as the corpus uses it: long side at most MAX_SIDE, both even."""
    scale = min(1.0, MAX_SIDE / max(w, h))
    w, h = round(w * scale), round(h * scale)
    return w - w % 2, h - h % 2


def read_pristine(path: Path) -> np.ndarray:
    """A pristine image at `pristine_size` (area downscaling keeps it pristine)."""
    img = read_rgb(path)
    w, h = pristine_size(img.shape[1], img.shape[0])
    if (w, h) != (img.shape[1] - img.shape[1] % 2, img.shape[0] - img.shape[0] % 2):
        img = np.asarray(Image.fromarray(img).resize((w, h), Image.BOX if max(img.shape[:2]) > 2 * MAX_SIDE
                                                     else Image.LANCZOS))
    return even_crop(img)


def save_png(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)
    Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


# --- pixel-domain distortions ------------------------------------------------------------------
def _pil_roundtrip(img: np.ndarray, **save) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **save)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def distort(img: np.ndarray, name: str, param, rng: np.random.Generator) -> np.ndarray:
    """Apply one pixel-domain distortion at `param` (its meaning is per type, see PIXEL)."""
    f = img.astype(np.float32)
    h, w = img.shape[:2]
    if name == "jpeg":
        return _pil_roundtrip(img, format="JPEG", quality=int(param))
    if name == "jpeg2000":
        return _pil_roundtrip(img, format="JPEG2000", quality_mode="rates", quality_layers=[float(param)])
    if name == "downup":
        small = Image.fromarray(img).resize((max(8, w // param), max(8, h // param)), Image.BICUBIC)
        return np.asarray(small.resize((w, h), Image.BICUBIC))
    if name == "gaussian_blur":
        return _clip(ndimage.gaussian_filter(f, sigma=(param, param, 0)))
    if name == "motion_blur":
        axis = int(rng.integers(2))
        return _clip(ndimage.uniform_filter1d(f, size=int(param), axis=axis))
    if name == "noise":
        return _clip(f + rng.normal(0.0, param, f.shape))
    if name == "banding":
        step = 256.0 / param
        return _clip(np.floor(f / step) * step + step / 2)
    if name == "block_loss":
        return _block_loss(img, param, rng)
    if name == "blur_noise_jpeg":  # a camera-like chain, three strengths
        sigma, noise, quality = {1: (0.8, 4.0, 50), 2: (1.5, 8.0, 25), 3: (2.5, 14.0, 12)}[int(param)]
        x = _clip(ndimage.gaussian_filter(f, sigma=(sigma, sigma, 0)))
        x = _clip(x.astype(np.float32) + rng.normal(0.0, noise, f.shape))
        return _pil_roundtrip(x, format="JPEG", quality=quality)
    if name == "defocus":  # a lens out of focus: a disk, not a Gaussian
        return _clip(_disc_blur(f, param))
    if name == "sensor_noise":  # shot + read noise in linear light, independent per channel (chroma noise)
        shot, read = {1: (0.003, 0.0002), 2: (0.01, 0.0008), 3: (0.03, 0.003)}[int(param)]
        lin = _linear(f)
        return _display(lin + rng.normal(0.0, 1.0, f.shape) * np.sqrt(shot * lin + read))
    if name in ("overexpose", "underexpose"):  # exposure is a gain in linear light; highlights clip
        return _display(_linear(f) * param)
    if name == "white_balance":  # a wrong illuminant: red and blue gains, warm or cool
        g = {1: 1.15, 2: 1.35, 3: 1.6}[int(param)] ** (1 if rng.integers(2) else -1)
        return _display(_linear(f) * np.array([g, 1.0, 1.0 / g], np.float32))
    if name == "oversharpen":  # an unsharp mask turned up: halos and amplified noise
        return _clip(f + param * (f - ndimage.gaussian_filter(f, sigma=(1.5, 1.5, 0))))
    if name == "camera_chain":  # two or three capture faults at once, all at one strength
        k = int(param)
        x = img
        for step in sorted(rng.choice(["underexpose", "defocus", "motion_blur", "sensor_noise", "jpeg"],
                                      size=int(rng.integers(2, 4)), replace=False), key=CHAIN_ORDER.index):
            x = distort(x, step, CHAIN_LEVELS[step][k - 1], rng)
        return x
    if name == "shake":
        k = _shake_kernel(max(3.0, SHAKE_LENGTH[int(param) - 1] * max(h, w)), rng)
        return _clip(np.stack([signal.fftconvolve(f[..., c], k, mode="same") for c in range(3)], -1))
    if name == "low_light":  # fewer photons: shot and read noise grow against the signal, the camera's gain
        # brings the picture only part way back, its noise reduction smears detail, its JPEG finishes it
        light, denoise = {1: (0.25, 0.6), 2: (0.1, 0.9), 3: (0.04, 1.2)}[int(param)]
        lin = _linear(f) * light
        lin = lin + rng.normal(0.0, 1.0, f.shape) * np.sqrt(0.001 * lin + 1e-5)
        shown = _display(lin * light ** -0.5)
        smooth = ndimage.gaussian_filter(shown.astype(np.float32), sigma=(denoise, denoise, 0))
        return _pil_roundtrip(_clip(smooth), format="JPEG", quality=75)
    if name == "backlight":  # the subject (a soft ellipse near the centre) in shadow, the background clipped,
        # and the lens's veiling glare lifting the shadows into a grey haze
        subject, background, glare = {1: (0.45, 1.6, 0.01), 2: (0.22, 2.4, 0.03), 3: (0.1, 3.5, 0.06)}[int(param)]
        m = _subject_mask(h, w, rng)[..., None]
        lin = _linear(f) * (m * subject + (1 - m) * background)
        return _display(lin + glare * float(np.clip(lin, 0, 1).mean()))
    if name == "contrast":
        mean = f.mean(axis=(0, 1), keepdims=True)
        return _clip(mean + (f - mean) * param)
    if name == "brighten":
        return _clip(f + param)
    if name == "darken":
        return _clip(f - param)
    raise ValueError(f"unknown distortion {name!r}")


# camera_chain: the order a camera applies its faults in, and each fault's strength per chain level
CHAIN_ORDER = ["underexpose", "defocus", "motion_blur", "sensor_noise", "jpeg"]
CHAIN_LEVELS = {"underexpose": [0.6, 0.4, 0.25], "defocus": [1, 2, 4], "motion_blur": [5, 9, 15],
                "sensor_noise": [1, 2, 3], "jpeg": [60, 35, 15]}


def _shake_kernel(extent: float, rng: np.random.Generator) -> np.ndarray:
    """A camera-shake blur kernel: a hand's path (a random walk whose direction turns smoothly) of about `extent`
    pixels across, drawn as sub-pixel points with time spent evenly along it."""
    steps = 200
    turn = np.cumsum(rng.normal(0.0, 0.15, steps)) + rng.uniform(0, 2 * np.pi)
    path = np.cumsum(np.stack([np.cos(turn), np.sin(turn)], 1), 0)
    path -= path.mean(0)
    path *= extent / max(1e-6, float(np.ptp(path, 0).max()))
    r = int(np.ceil(np.abs(path).max())) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for (x, y) in path + r:  # bilinear splat of each point
        x0, y0 = int(x), int(y)
        fx, fy = x - x0, y - y0
        k[y0:y0 + 2, x0:x0 + 2] += np.array([[(1 - fx) * (1 - fy), fx * (1 - fy)], [(1 - fx) * fy, fx * fy]])
    return k / k.sum()


def _subject_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """1 on a subject (a soft-edged ellipse near the picture's centre), 0 on the background."""
    cy, cx = h * rng.uniform(0.4, 0.65), w * rng.uniform(0.35, 0.65)
    ry, rx = h * rng.uniform(0.25, 0.45), w * rng.uniform(0.15, 0.35)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32)
    return ndimage.gaussian_filter(inside, 0.04 * min(h, w))


def _disc_blur(f: np.ndarray, r: float) -> np.ndarray:
    """A lens's defocus of radius `r` px (a disc kernel; reflected edges), float in, float out."""
    k = int(np.ceil(r))
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    disc = (xx ** 2 + yy ** 2 <= r * r).astype(np.float32)
    padded = np.pad(f, ((k, k), (k, k), (0, 0)), mode="symmetric")
    return np.stack([signal.fftconvolve(padded[..., c], disc / disc.sum(), mode="valid") for c in range(3)], -1)


def _linear(f: np.ndarray) -> np.ndarray:
    """8-bit sRGB-like values → linear light (gamma 2.2)."""
    return (f / 255.0) ** 2.2


def _display(lin: np.ndarray) -> np.ndarray:
    return _clip(255.0 * np.clip(lin, 0.0, 1.0) ** (1 / 2.2))


def _block_loss(img: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Packet-loss-like damage: runs of 16×16 macroblocks (raster order, like lost slices) replaced
    by the content 8–32 px away, as a decoder's concealment would paste a wrong motion vector."""
    out = img.copy()
    h, w = img.shape[:2]
    rows, cols = h // 16, w // 16
    lost = 0
    target = max(1, round(fraction * rows * cols))
    while lost < target:
        start = int(rng.integers(rows * cols))
        run = int(rng.integers(3, 12))
        dy, dx = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(8, 33, size=2))
        for mb in range(start, min(start + run, rows * cols)):
            y, x = 16 * (mb // cols), 16 * (mb % cols)
            sy, sx = np.clip(y + dy, 0, h - 16), np.clip(x + dx, 0, w - 16)
            out[y:y + 16, x:x + 16] = img[sy:sy + 16, sx:sx + 16]
            lost += 1
    return out


def pixel_choices(seed: int, source: str) -> list[tuple[str, int, object]]:
    """The (type, level index, param) triples of one source: PIXEL_FAMILIES types drawn, each at every level,
    so a source carries rank pairs within each type (pristine > level 1 > level 2 …)."""
    rng = stable_rng(seed, "pixel", source)
    names = sorted(str(n) for n in rng.choice(list(PIXEL), size=min(PIXEL_FAMILIES, len(PIXEL)), replace=False))
    return [(name, i, p) for name in names for i, p in enumerate(PIXEL[name][0])]


# --- jobs ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """One pristine image (or, for clips, one video file) and where it goes."""

    path: Path
    split: str
    subset: str
    key: str  # unique id, used in file names and as the item group


@dataclass
class Job:
    kind: str  # "pixel", "soft", "codec", "ladder", "video", "pan", "loss", "capture"
    key: str
    args: dict = field(default_factory=dict)


def _row(src_split: str, subset: str, source: str, distortion: str, coarse: str, level: int, param, path: str,
         ref_path: str, shape: tuple[int, ...], teacher: str) -> dict:
    return {"item": f"{source}/{distortion}{level}" if level else f"{source}/pristine", "split": src_split,
            "subset": subset, "source": source, "distortion": distortion, "coarse": coarse, "level": level,
            "param": float(param), "path": path, "ref_path": ref_path, "width": shape[1], "height": shape[0],
            "teacher": teacher, "vmaf": None, "psnr_y": None, "ssim_y": None, "ref_motion": 0.0}


def _distorted_rows(out: Path, seed: int, source: dict, img: np.ndarray,
                    choices: list[tuple[str, int, object]], table: dict) -> list[dict]:
    """Each (type, level index, param) of `choices` applied to the source's pristine `img`, saved, as rows;
    `table` (PIXEL or CAPTURE) gives each type's coarse class and teacher."""
    key = source["key"]
    rows = []
    for name, i, param in choices:
        rel = f"images/{key}/{name}{i + 1}.png"
        save_png(distort(img, name, param, stable_rng(seed, key, name, str(i))), out / rel)
        _, coarse, teacher = table[name]
        rows.append(_row(source["split"], source["subset"], key, name, coarse, i + 1, param, rel,
                         f"images/{key}/pristine.png", img.shape, teacher))
    return rows


def run_pixel_job(out: Path, seed: int, source: dict) -> list[dict]:
    """Pristine copy + this source's drawn pixel-domain distortions."""
    key, img = source["key"], read_pristine(Path(source["path"]))
    ref_rel = f"images/{key}/pristine.png"
    save_png(img, out / ref_rel)
    return [_row(source["split"], source["subset"], key, "pristine", "", 0, 0, ref_rel, ref_rel, img.shape, "vmaf"),
            *_distorted_rows(out, seed, source, img, pixel_choices(seed, key), PIXEL)]


def run_capture_job(out: Path, seed: int, source: dict) -> list[dict]:
    """Every capture fault of CAPTURE at every level, for one training still (pristine copy from its pixel job)."""
    choices = [(name, i, p) for name, (levels, _, _) in CAPTURE.items() for i, p in enumerate(levels)]
    return _distorted_rows(out, seed, source, read_pristine(Path(source["path"])), choices, CAPTURE)


def run_soft_job(out: Path, seed: int, source: dict) -> list[dict]:
    """Noise on soft content, for every source: a mildly upscaled picture (level 1), then with light and with
    clear noise on top (levels 2, 3). Noise must never read as detail: on soft content it looks like
    sharpness, and models trained on sharp photos alone score it above the clean picture."""
    key, img = source["key"], read_pristine(Path(source["path"]))
    h, w = img.shape[:2]
    soft = np.asarray(Image.fromarray(img).resize((round(w / 1.5), round(h / 1.5)), Image.BICUBIC).resize((w, h), Image.BICUBIC))
    rows = []
    for level, sigma in enumerate(SOFT_NOISE, start=1):
        rel = f"images/{key}/soft_noise{level}.png"
        x = soft if not sigma else distort(soft, "noise", sigma, stable_rng(seed, key, "soft_noise", str(level)))
        save_png(x, out / rel)
        rows.append(_row(source["split"], source["subset"], key, "soft_noise", "noise", level, sigma, rel,
                         f"images/{key}/pristine.png", img.shape, "level"))
    return rows


def _raw_input(frames: list[np.ndarray], rate: int) -> list[str]:
    """FFmpeg's command up to its input: RGB frames of one size on stdin."""
    h, w = frames[0].shape[:2]
    return [ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", str(rate), "-i", "-"]


def _encode_decode(frames: list[np.ndarray], codec_args: list[str], rate: int = 25) -> list[np.ndarray]:
    """Encode RGB frames (one size) with FFmpeg, decode them back with PyAV, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "encoded.mkv"
        cmd = [*_raw_input(frames, rate), *codec_args, "-pix_fmt", "yuv420p", "-threads", "1", "-y", str(dst)]
        proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True,
                              env={**os.environ, "SVT_LOG": "1"})
        if proc.returncode:
            raise RuntimeError(f"ffmpeg {' '.join(codec_args)} failed: {proc.stderr.decode(errors='replace')[-400:]}")
        with av.open(str(dst)) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"{' '.join(codec_args)}: decoded {len(decoded)} of {len(frames)} frames")
    return decoded


def run_codec_job(out: Path, codec: str, crf: int, level: int, sources: list[dict]) -> list[dict]:
    """One all-intra encode of every image of one size at one CRF."""
    base, _, intra = CODECS[codec]
    imgs = [read_pristine(Path(s["path"])) for s in sources]
    decoded = _encode_decode(imgs, [*base, "-crf", str(crf), *intra])
    rows = []
    for s, img in zip(sources, decoded):
        rel = f"images/{s['key']}/{codec}{level}.png"
        save_png(img, out / rel)
        rows.append(_row(s["split"], s["subset"], s["key"], codec, CODEC_COARSE, level, crf, rel,
                         f"images/{s['key']}/pristine.png", img.shape, "vmaf"))
    return rows


def run_ladder_job(out: Path, rung: int, sources: list[dict]) -> list[dict]:
    """One adaptive-bitrate rung for every image of one size: downscale, all-intra encode, upscale back."""
    factor, codec, crf = LADDER[rung - 1]
    base, _, intra = CODECS[codec]
    imgs = [read_pristine(Path(s["path"])) for s in sources]
    h, w = imgs[0].shape[:2]
    sw, sh = round(w / factor), round(h / factor)
    small = [np.asarray(Image.fromarray(img).resize((sw - sw % 2, sh - sh % 2), Image.BICUBIC)) for img in imgs]
    decoded = _encode_decode(small, [*base, "-crf", str(crf), *intra])
    rows = []
    for s, img in zip(sources, decoded):
        rel = f"images/{s['key']}/ladder{rung}.png"
        save_png(np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC)), out / rel)
        rows.append(_row(s["split"], s["subset"], s["key"], "ladder", "blur", rung, factor, rel,
                         f"images/{s['key']}/pristine.png", (h, w), "vmaf"))
    return rows


def clip_frames(path: Path) -> list[np.ndarray]:
    """The clip's first VIDEO_PIXELS worth of frames, RGB, cropped to even sizes."""
    try:
        with av.open(str(path)) as c:
            frames = []
            for f in c.decode(video=0):
                frames.append(even_crop(f.to_ndarray(format="rgb24")))
                if len(frames) * frames[0].shape[0] * frames[0].shape[1] >= VIDEO_PIXELS:
                    break
    except av.FFmpegError as e:
        raise InputError(f"{path}: cannot decode ({e})") from None
    return frames


def run_video_job(out: Path, source: dict) -> list[dict]:
    """Encode the clip's first VIDEO_PIXELS worth of frames as real video (see `_video_rows`)."""
    frames = clip_frames(Path(source["path"]))
    return _video_rows(out, source["split"], source["subset"], source["key"], frames, FRAMES_PER_ENCODE, "vmaf")


def pan_frames(img: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], dict]:
    """A PAN_FRAMES camera pan over a still at PAN_SIZE, captured and mastered as a real clip: the still is
    magnified to cover the frame with room to move, softened (σ 0–1.2 px), panned along a random straight
    path with sub-pixel steps, given temporal sensor noise (σ 0–4, in half the clips), and encoded with x264
    at a random CRF as its master. The decoded master is the clip's reference. Returns the frames and the
    capture settings drawn."""
    W, H = PAN_SIZE
    h, w = img.shape[:2]
    scale = max(W / w, H / h) * float(rng.uniform(1.1, 1.3))
    blur = float(rng.uniform(0.0, 1.2))
    noise = float(rng.uniform(1.0, 4.0)) if rng.random() < 0.5 else 0.0
    crf = int(rng.integers(PAN_MEZZANINE_CRF[0], PAN_MEZZANINE_CRF[1] + 1))
    soft = Image.fromarray(_clip(ndimage.gaussian_filter(img.astype(np.float32), sigma=(blur, blur, 0))) if blur else img)
    room_x, room_y = w - W / scale, h - H / scale  # how far the view can move, in still pixels
    (x0, x1), (y0, y1) = rng.uniform(0, room_x, 2), rng.uniform(0, room_y, 2)
    frames = []
    for t in np.linspace(0.0, 1.0, PAN_FRAMES):
        ox, oy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        f = np.asarray(soft.transform((W, H), Image.AFFINE, (1 / scale, 0, ox, 0, 1 / scale, oy), Image.BICUBIC))
        frames.append(_clip(f + rng.normal(0.0, noise, f.shape)) if noise else f)
    master = _encode_decode(frames, [*CODECS["h264"][0], "-crf", str(crf)])
    return master, {"scale": scale, "blur": blur, "noise": noise, "crf": crf}


def run_pan_job(out: Path, seed: int, source: dict) -> list[dict]:
    """A pan clip over one training still (see `pan_frames`), through the clips' codec sweep and ladder."""
    key = source["key"]
    frames, _ = pan_frames(read_pristine(Path(source["path"])), stable_rng(seed, "pan", key))
    return _video_rows(out, source["split"], f"pan:{source['subset']}", f"pan:{key}", frames, PAN_PICKS, RELATIVE)


def _video_rows(out: Path, split: str, subset: str, key: str, frames: list[np.ndarray], picks: int,
                teacher: str) -> list[dict]:
    """Encode frames as real video (P/B frames): every codec × CRF at its own size, and the VIDEO_LADDER
    rungs (downscaled, encoded, upscaled back for display); VMAF per frame with motion; `picks` evenly
    spaced frames per encode become items, each frame its own source."""
    picks = np.linspace(0, len(frames) - 1, picks).round().astype(int).tolist()
    h, w = frames[0].shape[:2]
    rows = []
    for i in picks:
        rel = f"images/{key}/f{i:04d}/pristine.png"
        save_png(frames[i], out / rel)
        rows.append(_row(split, subset, f"{key}/f{i:04d}", "pristine", "", 0, 0, rel, rel, frames[i].shape, teacher))
    encodes = [(codec, level, crf, [*base, "-crf", str(crf)], None)
               for codec, (base, crfs, _) in CODECS.items()
               for level, crf in enumerate(crfs[1:], start=2)]  # the clips are small; the gentlest CRF adds little
    encodes += [("ladder", rung, height, CODECS[codec][0] + ["-crf", str(crf), "-vf", f"scale=-2:{height}"], height)
                for rung, (height, codec, crf) in enumerate(VIDEO_LADDER, start=1) if height < h]
    for name, level, param, args, height in encodes:
        decoded = _encode_decode(frames, args, rate=CLIP_RATE)
        if height:  # a player shows the rung at the display size
            decoded = [np.asarray(Image.fromarray(d).resize((w, h), Image.BICUBIC)) for d in decoded]
        scores = vmaf_scores(frames, decoded, duplicate=False)
        for i in picks:
            rel = f"images/{key}/f{i:04d}/{name}{level}.png"
            save_png(decoded[i], out / rel)
            row = _row(split, subset, f"{key}/f{i:04d}", name, "blur" if height else CODEC_COARSE,
                       level, param, rel, f"images/{key}/f{i:04d}/pristine.png", decoded[i].shape, teacher)
            rows.append({**row, **scores[i]})
    ident = vmaf_scores(frames, frames, duplicate=False)
    for row in rows:
        if row["level"] == 0:
            row.update(ident[int(row["source"].rsplit("/f", 1)[1])])
    return rows


def _ts_stream(frames: list[np.ndarray]) -> bytes:
    """The frames as a live H.264 stream: x264 at LOSS_CRF, a keyframe every LOSS_GOP frames, in MPEG-TS."""
    cmd = [*_raw_input(frames, CLIP_RATE), *CODECS["h264"][0], "-crf", str(LOSS_CRF), "-g", str(LOSS_GOP),
           "-pix_fmt", "yuv420p", "-threads", "1", "-f", "mpegts", "-"]
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if proc.returncode:
        raise RuntimeError(f"ffmpeg mpegts encode failed: {proc.stderr.decode(errors='replace')[-400:]}")
    return proc.stdout


def lossy_streams(ts: bytes, shares: list[float], rng: np.random.Generator,
                  spare_first_picture: bool = False) -> list[tuple[bytes, int]]:
    """The stream once per share in `shares` (ascending), with that share of its video-only datagrams lost, and
    the count lost. Losses are nested: each level loses the datagrams of the one before and more (at least one
    more), as the same link getting worse would. Datagrams holding tables (PAT, PMT, SDT) are spared, so the
    loss lands in the picture data, which is most of the stream (the video PID is the most common one).
    `spare_first_picture`: the datagrams of the first picture (the keyframe; its PES is the first of the video
    PID) are spared too, so the loss lands in predicted pictures and the decoder conceals it with smears."""
    pids = [((ts[i + 1] & 0x1F) << 8) | ts[i + 2] for i in range(0, len(ts), TS_PACKET)]
    video_pid = max(set(pids), key=pids.count)
    size = TS_PACKET * TS_PER_DATAGRAM
    grams = [ts[i:i + size] for i in range(0, len(ts), size)]
    video = [k for k in range(len(grams)) if all(p == video_pid for p in pids[k * TS_PER_DATAGRAM:(k + 1) * TS_PER_DATAGRAM])]
    if spare_first_picture:
        starts = [n for n, p in enumerate(pids) if p == video_pid and ts[n * TS_PACKET + 1] & 0x40]  # PES starts
        end = starts[1] if len(starts) > 1 else len(pids)
        video = [k for k in video if (k + 1) * TS_PER_DATAGRAM <= starts[0] or k * TS_PER_DATAGRAM >= end]
    order, out, count = rng.permutation(video), [], 0
    for share in shares:
        count = min(len(video), max(count + 1, round(share * len(video))))
        lost = set(order[:count].tolist())
        out.append((b"".join(g for k, g in enumerate(grams) if k not in lost), count))
    return out


def decode_stream(ts: bytes, order: list[int] | None = None) -> tuple[list[np.ndarray | None], list[int]]:
    """Decode a (possibly damaged) MPEG-TS stream as a player does: the decoder conceals what is missing and a
    packet it rejects is skipped. Returns the frames in presentation order (None where a frame never came out)
    and their timestamps; `order`: the undamaged stream's timestamps, which place the frames."""
    got = {}
    with av.open(io.BytesIO(ts), format="mpegts") as c:
        for packet in c.demux(video=0):
            try:
                for f in packet.decode():
                    if f.pts is not None:
                        got[f.pts] = f.to_ndarray(format="rgb24")
            except av.FFmpegError:  # concealment covers this packet's pictures in the frames that follow
                continue
    stamps = order if order is not None else sorted(got)
    return [got.get(t) for t in stamps], stamps


def run_loss_job(out: Path, seed: int, source: dict, pan: bool) -> list[dict]:
    """Real packet loss (PACKET_LOSS levels) on a held-out clip or a training pan clip: the frames as a live
    TS stream, datagrams lost, decoded with concealment; a frame that never came out shows the one before
    (a player holds the last picture), or black before the first. Labels: per-frame VMAF against the clip's
    own reference frames, which on pan clips are the lossy master's (and still taught as values, see below).
    Levels are not ordered per frame (features.UNORDERED): each loses other datagrams."""
    key = source["key"]
    if pan:
        frames, _ = pan_frames(read_pristine(Path(source["path"])), stable_rng(seed, "pan", key))
        # "vmaf", not RELATIVE: the damage, not the master, decides these labels (a concealed or green frame is
        # bad whatever the master), and without values no-reference models rated such frames above clean ones
        key, subset, picks, teacher = f"pan:{key}", f"pan:{source['subset']}", PAN_PICKS, "vmaf"
    else:
        frames = clip_frames(Path(source["path"]))
        subset, picks, teacher = source["subset"], FRAMES_PER_ENCODE, "vmaf"
    ts = _ts_stream(frames)
    clean, order = decode_stream(ts)
    if len(order) != len(frames) or any(f is None for f in clean):
        raise RuntimeError(f"{key}: the undamaged stream decoded {len(order)} of {len(frames)} frames")
    picks = np.linspace(0, len(frames) - 1, picks).round().astype(int).tolist()
    rows = []
    # A pan is one GOP whose keyframe carries much of the stream, so its losses hit the keyframe far more often
    # than a live stream's, and the whole clip decodes green (PSNR-Y < 18 in 44-66 % of the pan loss frames of
    # corpus v2, 12-21 % in the long held-out clips). Half the pans spare the keyframe: their losses leave the
    # concealment smears of a long stream, which the no-reference models read as clean.
    spare = pan and bool(stable_rng(seed, "spare", key).random() < 0.5)
    streams = lossy_streams(ts, PACKET_LOSS, stable_rng(seed, "loss", key), spare_first_picture=spare)
    for level, (share, (stream, _)) in enumerate(zip(PACKET_LOSS, streams), start=1):
        damaged, _ = decode_stream(stream, order)
        shown, last = [], np.zeros_like(frames[0])  # black until the first picture, then the last one held
        for f in damaged:
            last = f if f is not None else last
            shown.append(last)
        scores = vmaf_scores(frames, shown, duplicate=False)
        for i in picks:
            rel = f"images/{key}/f{i:04d}/packet_loss{level}.png"
            save_png(shown[i], out / rel)
            row = _row(source["split"], subset, f"{key}/f{i:04d}", "packet_loss", PIXEL["block_loss"][1], level,
                       share, rel, f"images/{key}/f{i:04d}/pristine.png", shown[i].shape, teacher)
            rows.append({**row, **scores[i]})
    return rows


# --- teacher ---------------------------------------------------------------------------------
def vmaf_scores(refs: list[np.ndarray], dists: list[np.ndarray], duplicate: bool = True) -> list[dict]:
    """libvmaf (vmaf_v0.6.1) + PSNR-Y + SSIM per pair, and the reference's motion (VMAF's motion2), frames of
    one size; `duplicate` shows each pair twice so VMAF's motion term is 0 (stills)."""
    h, w = refs[0].shape[:2]
    reps = 2 if duplicate else 1
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, seq in (("ref", refs), ("dist", dists)):
            p = Path(tmp) / f"{name}.rgb"
            with open(p, "wb") as f:
                for img in seq:
                    f.write(img.tobytes() * reps)
            files.append(p)
        log = Path(tmp) / "vmaf.json"
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i"]
        cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", *raw, str(files[1]), *raw, str(files[0]),
               "-lavfi", f"[0]format=yuv420p[d];[1]format=yuv420p[r];[d][r]libvmaf=log_fmt=json:log_path={log}"
                         ":feature=name=psnr|name=float_ssim:n_threads=2",
               "-f", "null", "-"]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"libvmaf failed: {proc.stderr.decode(errors='replace')[-400:]}")
        frames = json.loads(log.read_text())["frames"]
    out = []
    for i in range(len(refs)):
        m = frames[i * reps + reps - 1]["metrics"]  # the repeat: motion against an identical frame = 0
        out.append({"vmaf": float(np.clip(m["vmaf"], 0.0, 100.0)), "psnr_y": float(m["psnr_y"]),
                    "ssim_y": float(m["float_ssim"]), "ref_motion": float(m["integer_motion2"])})
    return out


def label_images(out: Path, rows: list[dict], chunk: int = 400, on_total=None, on_done=None) -> None:
    """Fill vmaf/psnr_y/ssim_y of still-image rows (in place), one libvmaf run per size and chunk. Labels are
    kept in out/labels.json as each chunk finishes, so an interrupted build does not measure them again."""
    store = out / "labels.json"
    known = json.loads(store.read_text()) if store.is_file() else {}
    todo = []
    for r in rows:
        if r["vmaf"] is None and r["item"] in known:
            r.update(known[r["item"]])
        elif r["vmaf"] is None:
            todo.append(r)
    by_size: dict[tuple[int, int], list[dict]] = {}
    for r in todo:
        by_size.setdefault((r["width"], r["height"]), []).append(r)
    if on_total:
        on_total(len(todo))
    for group in by_size.values():
        for start in range(0, len(group), chunk):
            part = group[start:start + chunk]
            scores = vmaf_scores([read_rgb(out / r["ref_path"]) for r in part], [read_rgb(out / r["path"]) for r in part])
            for r, sc in zip(part, scores):
                r.update(sc)
                known[r["item"]] = sc
            tmp = store.with_name(".labels.json")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, store)
            if on_done:
                on_done(len(part))
    for r in rows:
        if r["teacher"] == "level":
            r["vmaf"] = None  # measured but not used as a label; PSNR/SSIM kept for reference


# --- build -------------------------------------------------------------------------------------
def find_sources(root: Path, train: tuple[str, ...], val: tuple[str, ...]) -> list[Source]:
    sources = []
    for split, subdirs in (("train", train), ("val", val)):
        for sub in subdirs:
            d = root / sub
            if not d.is_dir():
                raise InputError(f"{d}: pristine folder not found")
            files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not files:
                raise InputError(f"{d}: no images or videos in it")
            subset = sub.split("/")[0]
            images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
            if split == "val" and len(images) > VAL_IMAGES_PER_SUBSET:
                keep = set(np.linspace(0, len(images) - 1, VAL_IMAGES_PER_SUBSET).round().astype(int).tolist())
                files = [p for i, p in enumerate(images) if i in keep] + [p for p in files if p not in images]
            for p in files:
                kind = "video" if p.suffix.lower() in VIDEO_EXTS else "image"
                prefix = f"video:{p.stem}" if kind == "video" else f"{subset}/{p.stem}"
                sources.append(Source(p, split, subset if kind == "image" else f"video:{p.stem}", prefix))
    return sources


def _size(s: Source) -> tuple[int, int]:
    """The size a still is scored at (its header is read, not its pixels)."""
    with Image.open(s.path) as im:
        return pristine_size(*im.size)


def _as_dict(s: Source) -> dict:
    return {"path": str(s.path), "split": s.split, "subset": s.subset, "key": s.key}


def _still_jobs(stills: list[Source], sizes: dict[str, tuple[int, int]]) -> list[Job]:
    """The codec sweep and ladder rungs of stills, one all-intra encode per size for all stills of that size."""
    by_size: dict[tuple[int, int], list[dict]] = {}
    for s in stills:
        by_size.setdefault(sizes[s.key], []).append(_as_dict(s))
    jobs = []
    for (w, h), group in sorted(by_size.items()):
        tag = f"{w}x{h}-{zlib.crc32(''.join(g['key'] for g in group).encode()):08x}"
        for codec, (_, crfs, _) in CODECS.items():
            for level, crf in enumerate(crfs, start=1):
                jobs.append(Job("codec", f"codec-{codec}{level}-{tag}",
                                {"codec": codec, "crf": crf, "level": level, "sources": group}))
        for rung in range(1, len(LADDER) + 1):
            jobs.append(Job("ladder", f"ladder{rung}-{tag}", {"rung": rung, "sources": group}))
    return jobs


def plan(sources: list[Source], seed: int) -> list[Job]:
    """Every job of a corpus. The kinds of job added to the recipe later come after the older ones, so a corpus
    built before keeps its row order (and its feature cache) when they are added."""
    stills = [s for s in sources if s.path.suffix.lower() not in VIDEO_EXTS]
    sizes = {s.key: _size(s) for s in stills}
    jobs: list[Job] = []
    for s in sources:
        if s in stills:
            jobs.append(Job("pixel", f"pixel-{s.key}", {"seed": seed, "source": _as_dict(s)}))
            jobs.append(Job("soft", f"soft-{s.key}", {"seed": seed, "source": _as_dict(s)}))
        else:
            jobs.append(Job("video", f"video-{s.key}", {"source": _as_dict(s)}))
    jobs += _still_jobs(stills, sizes)
    pans = [s for s in stills if s.split == "train" and max(sizes[s.key]) >= PAN_MIN_SIDE][::PAN_EVERY]
    for s in pans:  # after the older jobs: a corpus built before pan clips existed keeps its row order
        jobs.append(Job("pan", f"pan-{s.key}", {"seed": seed, "source": _as_dict(s)}))
    for s in sources:  # after the pan clips, for the same reason: real packet loss on every clip and pan clip
        if s not in stills:
            jobs.append(Job("loss", f"loss-{s.key}", {"seed": seed, "source": _as_dict(s), "pan": False}))
    for s in pans:
        jobs.append(Job("loss", f"loss-pan-{s.key}", {"seed": seed, "source": _as_dict(s), "pan": True}))
    for s in stills:  # last, for the same reason
        if s.split == "train":
            jobs.append(Job("capture", f"capture-{s.key}", {"seed": seed, "source": _as_dict(s)}))
    return jobs


def _run(out: Path, job: Job) -> list[dict]:
    if job.kind == "pixel":
        return run_pixel_job(out, **job.args)
    if job.kind == "codec":
        return run_codec_job(out, **job.args)
    if job.kind == "ladder":
        return run_ladder_job(out, **job.args)
    if job.kind == "soft":
        return run_soft_job(out, **job.args)
    if job.kind == "capture":
        return run_capture_job(out, **job.args)
    if job.kind == "pan":
        return run_pan_job(out, **job.args)
    if job.kind == "loss":
        return run_loss_job(out, **job.args)
    return run_video_job(out, **job.args)


def _safe(key: str) -> str:
    return key.replace("/", "_").replace(":", "_")


def build(root: str | Path, out: str | Path, seed: int = 0, workers: int = 2,
          train: tuple[str, ...] = DEFAULT_TRAIN, val: tuple[str, ...] = DEFAULT_VAL, progress=None) -> Path:
    """Build (or resume) the corpus in `out`; returns the path of corpus.parquet.

    `progress` (rich's Progress or the CLI's log-line stand-in) is shown the jobs and the teacher's
    labels: a build takes hours, and one run under nohup must say how far it is."""
    from rich.progress import Progress

    progress = progress or Progress(disable=True)
    root, out = Path(root), Path(out)
    table = out / "corpus.parquet"
    jobs_dir = out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    sources = find_sources(root, train, val)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = plan(sources, seed)
        done = {p.stem for p in jobs_dir.glob("*.json")}
        todo = [j for j in jobs if _safe(j.key) not in done]
        task = progress.add_task(f"corpus: {len(todo)} of {len(jobs)} jobs to run", total=len(todo))
        futures = {pool.submit(_run, out, j): j for j in todo}
        for fut in as_completed(futures):
            rows = fut.result()
            tmp = jobs_dir / f".{_safe(futures[fut].key)}.json"
            tmp.write_text(json.dumps(rows))
            os.replace(tmp, jobs_dir / f"{_safe(futures[fut].key)}.json")
            progress.advance(task)
    rows = [r for j in jobs for r in json.loads((jobs_dir / f"{_safe(j.key)}.json").read_text())]
    task = progress.add_task("teacher: libvmaf on still images", total=None)
    label_images(out, rows, on_total=lambda n: progress.update(task, total=n),
                 on_done=lambda n: progress.advance(task, n))
    tmp = table.with_name(".corpus.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), tmp)
    os.replace(tmp, table)
    return table


def load(corpus: str | Path) -> pa.Table:
    path = Path(corpus) / "corpus.parquet"
    if not path.is_file():
        raise InputError(f"{corpus}: no corpus.parquet (build one with `vqmon corpus PRISTINE_DIR --out {corpus}`)")
    table = pq.read_table(path)
    missing = [n for n in ITEM_SCHEMA.names if n not in table.column_names]
    if missing:
        raise InputError(f"{path}: built by an older vqmon, it lacks {', '.join(missing)}: build it again "
                         f"(`vqmon corpus PRISTINE_DIR --out {corpus}`)")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pristine", help="folder of pristine content (subfolders as in --train/--val)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--train", nargs="+", default=list(DEFAULT_TRAIN), help="subfolders used for training")
    ap.add_argument("--val", nargs="+", default=list(DEFAULT_VAL), help="subfolders held out for validation")
    args = ap.parse_args(argv)
    path = build(args.pristine, args.out, args.seed, args.workers, tuple(args.train), tuple(args.val))
    t = pq.read_table(path)
    print(f"{path}: {t.num_rows} items, {len(set(t['source'].to_pylist()))} sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
