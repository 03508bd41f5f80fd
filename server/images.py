"""Untrusted image bytes -> validated PIL images -> the zoo's input tensor.

Every rejection is an `ImageError` with an HTTP status and a message naming the file and the limit, so a bad
upload costs one 4xx answer and never the server: sizes, pixel counts and aspect ratios are checked from the
header, before any pixel is decoded, and the resize works on the region the model sees, so its cost is bounded by
the model's input size whatever the image's shape.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from zoo.schema import INTERPOLATIONS

MAX_PIXELS = 4096 * 4096
# Long side / short side. Photos are 1:1 to 16:9, phone panoramas about 4:1 (up to 8:1 or so), long screenshots
# 10:1 or more; the model sees only the central square, so a 1:20 image already shows it 5% of the picture.
MAX_ASPECT = 20
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own bomb guard (also covers Gradio's uploads): error above 2x this
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # decode_image rejects those itself
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}  # the names a zoo may use


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = MAX_PIXELS
    max_files: int = 32
    max_aspect: float = MAX_ASPECT


class ImageError(ValueError):
    """An upload we refuse; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_content_type(content_type: str | None, name: str) -> None:
    """Images, or an unlabelled upload (octet-stream) whose bytes we sniff; anything else is a client error."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        raise ImageError(415, f"{name}: content type {kind!r} is not an image; send {', '.join(FORMATS)} files")


def decode_image(data: bytes, name: str, limits: ImageLimits) -> Image.Image:
    """The decoded image, or an ImageError if it is empty, too big, not an image or corrupt."""
    if not data:
        raise ImageError(400, f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(413, f"{name}: {len(data):,} bytes is over the limit of {limits.max_bytes:,} bytes")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise ImageError(413, f"{name}: too many pixels ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(415, f"{name}: not an image this server can read ({', '.join(FORMATS)})") from None
    if image.format not in FORMATS:
        raise ImageError(415, f"{name}: {image.format} images are not accepted; send {', '.join(FORMATS)}")
    pixels = image.width * image.height
    if pixels > limits.max_pixels:
        raise ImageError(413, f"{name}: {image.width}x{image.height} = {pixels:,} pixels is over the limit of "
                              f"{limits.max_pixels:,}")
    if max(image.size) > limits.max_aspect * min(image.size):
        raise ImageError(422, f"{name}: {image.width}x{image.height} is more than {limits.max_aspect:g} times as long "
                              f"as it is wide (the limit is 1:{limits.max_aspect:g}); the model sees only the central "
                              f"square, so crop the image to the part that matters")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(422, f"{name}: the image data is truncated or corrupt ({e})") from None
    return image


def model_view(image: Image.Image, preprocessing: dict[str, Any]) -> Image.Image:
    """The image as the model sees it: its mode (gray or RGB), resized + center-cropped like timm's eval transform."""
    mode = {1: "L", 3: "RGB"}[preprocessing["in_chans"]]
    return _resize_and_crop(image.convert(mode), preprocessing["img_size"], preprocessing.get("crop_pct", 1.0),
                            RESAMPLING[preprocessing.get("interpolation", "bicubic")])


def to_input(image: Image.Image, preprocessing: dict[str, Any]) -> np.ndarray:
    """(C, H, W) float32 exactly as the zoo was evaluated: the model's view, scaled to [0, 1], normalised."""
    image = model_view(image, preprocessing)
    x = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, -1) / 255.0
    mean = np.asarray(preprocessing["mean"], dtype=np.float32)
    std = np.asarray(preprocessing["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1).copy()


def _resize_and_crop(image: Image.Image, size: int, crop_pct: float, resample: Image.Resampling) -> Image.Image:
    """Shorter side to floor(size / crop_pct), then the central size x size square (timm's eval transform), as one
    resize of the source region that square comes from: work and memory scale with the output, not with the whole
    resized image (28 x 52 million pixels for a 3 x 5.6 million one). Same sampling up to rounding: at most one
    level apart with the smooth filters; nearest and box may pick the neighbouring pixel at exact ties."""
    scale = math.floor(size / crop_pct)
    w, h = image.size
    new_w, new_h = (scale, max(scale, int(scale * h / w))) if w <= h else (max(scale, int(scale * w / h)), scale)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    box = (left * w / new_w, top * h / new_h, (left + size) * w / new_w, (top + size) * h / new_h)
    return image.resize((size, size), resample, box=box)
