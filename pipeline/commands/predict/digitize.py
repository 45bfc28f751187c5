"""Turn a photo or drawing of one digit into a 28x28 MNIST-style image.

As MNIST itself was made (LeCun et al.): light digit on black, cropped to the
digit, scaled with anti-aliasing to fit a 20x20 box keeping its aspect
ratio, then placed in 28x28 so that its centre of mass is at the centre.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.lib.errors import PipelineError
from pipeline.lib.mnist import IMAGE_SIDE

BOX = 20
# A pixel belongs to the digit when it is at least this share of the way from background to ink.
INK_THRESHOLD = 0.25


def read_image(path: Path) -> np.ndarray:
    """Greyscale float pixels of any image Pillow reads, in [0, 255] or the file's own range.

    With transparency, the ink is what is opaque (white ink on a transparent background is as
    much a digit as black ink); 16- and 32-bit scans keep their full range, which to_mnist
    stretches, rather than being clipped at 255.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return np.asarray(image, dtype=np.float32)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                opacity = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3]
                if opacity.max() > opacity.min():
                    return opacity
            return np.asarray(image.convert("L"), dtype=np.float32)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: check the path") from None
    except IsADirectoryError:
        raise PipelineError(f"{path} is a folder with no images in it: pass image files") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PipelineError(
            f"{path} has more than {Image.MAX_IMAGE_PIXELS:,} pixels, past Pillow's decompression-bomb limit: "
            "scale it down (a digit needs a few hundred pixels a side)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise PipelineError(f"{path} is not an image Pillow can read: pass a PNG, JPEG or BMP file") from None


def to_mnist(pixels: np.ndarray, name: str = "image") -> np.ndarray:
    """(H, W) greyscale in [0, 255] to uint8 (28, 28): light digit on black, centred like MNIST."""
    if pixels.size == 0:
        raise PipelineError(f"{name} is empty (0 pixels): pass an image of one digit")
    ink = _ink(pixels)
    if ink.max() - ink.min() < 1e-3:
        raise PipelineError(f"{name} is blank (one flat colour): pass an image that shows a digit")
    ink = (ink - ink.min()) / (ink.max() - ink.min())
    rows, columns = np.nonzero(ink >= INK_THRESHOLD)
    digit = ink[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    return _centre_by_mass(_fit_in_box(digit))


def _ink(pixels: np.ndarray) -> np.ndarray:
    """Make the digit the bright part: invert (within the image's own range, which may be 16-bit)
    when the border (the paper) is lighter than the middle."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return pixels.max() + pixels.min() - pixels if np.median(border) > pixels.mean() else pixels


def _fit_in_box(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray((digit * 255).astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0, 255)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    rows, columns = np.indices(digit.shape)
    total = digit.sum()
    centre_row, centre_column = (rows * digit).sum() / total, (columns * digit).sum() / total
    top = int(round(IMAGE_SIDE / 2 - centre_row))
    left = int(round(IMAGE_SIDE / 2 - centre_column))
    top, left = min(max(top, 0), IMAGE_SIDE - height), min(max(left, 0), IMAGE_SIDE - width)
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = digit
    return np.round(canvas * (255 / canvas.max())).astype(np.uint8)
