"""``syn-digits``: digits rendered from the fonts matplotlib ships (SynDigits-like).

Each image: one digit glyph from one of ~22 text fonts, random size, rotation, offset, random
foreground/background colours with a minimum luminance contrast, a faint gradient and noise.
Rendering goes straight through FreeType (matplotlib's FT2Font): ~30 us a glyph, deterministic.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from core.data.domain import IMAGE_SIZE, Split, sub_seed, to_uint8
from core.data.registry import register_domain

N_TRAIN, N_TEST = 4000, 1000
# Text fonts only: the STIX size/non-unicode and cmex/cmsy files map digits to symbols or nothing.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf",
    "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)  # fmt: skip
_LUMA = np.array([0.299, 0.587, 0.114])


@functools.lru_cache(maxsize=1)
def fonts() -> tuple:
    import matplotlib
    from matplotlib.ft2font import FT2Font

    d = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    found = tuple(FT2Font(os.path.join(d, f)) for f in FONT_FILES if os.path.isfile(os.path.join(d, f)))
    if not found:  # pragma: no cover - matplotlib without its bundled fonts
        raise RuntimeError(f"syn-digits: none of matplotlib's bundled fonts found under {d}")
    return found


def glyph(font, digit: int, size_px: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1], cropped to the ink."""
    font.clear()
    font.set_size(size_px, 72)  # 72 dpi: points == pixels
    font.set_text(str(digit), angle)
    font.draw_glyphs_to_bitmap(antialiased=True)
    m = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def paste(mask: np.ndarray, dy: int, dx: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Place the mask centred (plus offset) on a size x size canvas, clipping at the border."""
    canvas = np.zeros((size, size), np.float32)
    h, w = mask.shape
    top, left = (size - h) // 2 + dy, (size - w) // 2 + dx
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, size), min(left + w, size)
    canvas[t0:t1, l0:l1] = mask[t0 - top : t1 - top, l0 - left : l1 - left]
    return canvas


def colours(n: int, rng: np.random.Generator, min_contrast: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Random (fg, bg) RGB pairs whose luminances differ by at least min_contrast."""
    fg, bg = rng.random((n, 3)), rng.random((n, 3))
    bad = np.abs((fg - bg) @ _LUMA) < min_contrast
    while bad.any():  # rejection sampling: a fixed number of draws per seed -> deterministic
        fg[bad], bg[bad] = rng.random((bad.sum(), 3)), rng.random((bad.sum(), 3))
        bad = np.abs((fg - bg) @ _LUMA) < min_contrast
    return fg, bg


def render(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n images, classes balanced, as (uint8 (n, 3, 32, 32), int64 (n,))."""
    font_list = fonts()
    labels = rng.permutation(np.arange(n) % 10)
    font_idx = rng.integers(0, len(font_list), n)
    sizes = rng.uniform(20.0, 32.0, n)
    angles = rng.uniform(-15.0, 15.0, n)
    offsets = rng.integers(-3, 4, (n, 2))
    masks = np.stack(
        [paste(glyph(font_list[f], int(d), s, a), int(o[0]), int(o[1]))
         for d, f, s, a, o in zip(labels, font_idx, sizes, angles, offsets)]
    )  # fmt: skip
    fg, bg = colours(n, rng)
    # A faint horizontal/vertical shading and pixel noise so backgrounds are not flat fills.
    ramp = np.linspace(-1.0, 1.0, IMAGE_SIZE, dtype=np.float32)
    shade = rng.uniform(-0.1, 0.1, (n, 2, 1, 1)).astype(np.float32)
    bg_img = bg[:, :, None, None] + shade[:, :1] * ramp[None, None, :, None] + shade[:, 1:] * ramp[None, None, None, :]
    m = masks[:, None]
    img = fg[:, :, None, None] * m + bg_img * (1.0 - m)
    img = img + rng.normal(0.0, 0.02, img.shape)
    return to_uint8(torch.from_numpy(img.astype(np.float32))), torch.from_numpy(labels.astype(np.int64))


@register_domain("syn-digits", offline=True, description="digits rendered from matplotlib's fonts, random colours/poses")
def build_syn(root: Path, seed: int) -> Split:
    rng = np.random.default_rng(sub_seed(seed, "syn-digits"))
    tx, ty = render(N_TRAIN, rng)
    vx, vy = render(N_TEST, rng)
    return tx, ty, vx, vy
