"""Test pictures for the orientation demo, made on the spot: pages of text as a camera or a
scanner would see them (off-white paper, a little blur and noise, JPEG), turned clockwise, and
smooth colour fields without text."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

PARAGRAPHS = [
    "Quarterly report\n\nRevenue grew in every region this quarter, led by\n"
    "strong demand for edge inference. Operating costs\nstayed flat while the team shipped two releases.\n"
    "The board approved the budget for next year and\nasked for a review of hosting contracts.",
    "Dear Ms. Novak,\n\nThank you for your letter of 12 March. We have\nchecked the invoice you sent and found that the\n"
    "amount of 418.50 EUR was charged twice. The extra\npayment will be returned to your account within\n"
    "five working days. Kind regards, Customer Service",
    "Recipe: lentil soup\n\n1. Rinse 250 g of red lentils in cold water.\n2. Fry one onion and two carrots in olive oil.\n"
    "3. Add the lentils, a litre of stock and cumin.\n4. Simmer for twenty minutes, then blend half.\n"
    "5. Season with lemon juice, salt and pepper.",
    "Meeting notes, Tuesday\n\n- The build takes too long on the shared runners;\n  cache the Go modules between jobs.\n"
    "- Move the model files out of the repository.\n- Next demo: upload a photo and show the labels.\n"
    "- Action items are tracked in the team board.",
]


def page(index: int, *, width: int = 900, font_size: int = 30) -> Image.Image:
    """An upright page of text (RGB), different for each index."""
    rng = random.Random(index)
    text = PARAGRAPHS[index % len(PARAGRAPHS)]
    font = ImageFont.load_default(size=font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, spacing=font_size // 2)
    margin = 48
    paper = (246 - rng.randrange(12), 244 - rng.randrange(12), 236 - rng.randrange(12))
    size = (max(width, int(right) + 2 * margin), int(bottom) + 2 * margin)
    img = Image.new("RGB", size, paper)
    ImageDraw.Draw(img).multiline_text(
        (margin - left, margin - top), text, fill=(30, 30, 36), font=font, spacing=font_size // 2
    )
    # A camera's softness and sensor noise, so the picture is not a perfect render.
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    noise = Image.effect_noise(img.size, 10).convert("RGB")
    return Image.blend(img, noise, 0.04)


def turned_clockwise(img: Image.Image, degrees: int) -> Image.Image:
    """The picture turned clockwise by a multiple of 90 degrees (PIL's rotate is counter-clockwise)."""
    if degrees % 90:
        raise ValueError(f"only quarter turns, got {degrees}")
    return img.rotate(-degrees, expand=True)


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, fmt, quality=88)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def colour_field(seed: int, *, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A smooth colour picture with no text. The model is unsure about it, so its scores move
    with every preprocessing detail (channel order, mean and std, crop): a sharp differential test."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / 100.0
    fx, fy, phase = rng.uniform(0.5, 1.5, 3), rng.uniform(0.5, 1.5, 3), rng.uniform(0, np.pi, 3)
    channels = [128 + 120 * np.sin(fx[c] * x + fy[c] * y + phase[c]) for c in range(3)]
    return Image.fromarray(np.stack(channels, -1).astype(np.uint8), "RGB")
