#!/usr/bin/env python3
"""Draw the DTL Studio application icon into resources/icons (needs Pillow).

The picture is the method itself: a column of frozen backbone blocks and a thin
side network that feeds back into the later blocks. Writes PNGs (256, 64 and 512
for Linux desktops), a multi-size .ico (Windows) and an .icns (macOS).

    python packaging/make_icons.py
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "resources" / "icons"

ACCENT = (47, 102, 214)       # the app's light-scheme accent
ACCENT_DARK = (28, 63, 140)
BLOCK = (236, 241, 250)
BLOCK_FROZEN = (176, 194, 230)
SIDE = (255, 176, 59)


def draw(size: int = 1024) -> Image.Image:
    """The icon at `size` pixels (drawn large, scaled down for the small sizes)."""
    s = size / 1024
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # Background: a rounded square with a darker lower half for depth.
    d.rounded_rectangle([40 * s, 40 * s, 984 * s, 984 * s], radius=200 * s, fill=ACCENT)
    d.rounded_rectangle([40 * s, 520 * s, 984 * s, 984 * s], radius=200 * s, fill=ACCENT_DARK)
    d.rectangle([40 * s, 520 * s, 984 * s, 700 * s], fill=ACCENT_DARK)
    d.rectangle([40 * s, 500 * s, 984 * s, 540 * s], fill=ACCENT)
    # Backbone: six stacked blocks; the lower three are frozen-only, the upper three
    # receive the side network's output (DTL injects into the later blocks).
    x0, x1 = 210 * s, 640 * s
    h, gap, top = 92 * s, 34 * s, 170 * s
    ys = [top + i * (h + gap) for i in range(6)]
    for i, y in enumerate(ys):
        fill = BLOCK if i < 3 else BLOCK_FROZEN
        d.rounded_rectangle([x0, y, x1, y + h], radius=22 * s, fill=fill)
    # Side network: a thin vertical rail with taps from every block and arrows back.
    rail = 800 * s
    w = max(2, round(26 * s))
    d.line([rail, ys[0] + h / 2, rail, ys[-1] + h / 2], fill=SIDE, width=w)
    for i, y in enumerate(ys):
        cy = y + h / 2
        d.line([x1, cy, rail, cy], fill=SIDE, width=max(1, round(14 * s)))
        r = 30 * s
        d.ellipse([rail - r, cy - r, rail + r, cy + r], fill=SIDE)
        if i < 3:  # arrow heads into the blocks that get side information back
            d.polygon([(x1 + 6 * s, cy), (x1 + 60 * s, cy - 34 * s), (x1 + 60 * s, cy + 34 * s)], fill=SIDE)
    return img


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    big = draw(1024)
    for px in (512, 256, 64):
        big.resize((px, px), Image.LANCZOS).save(OUT / f"dtl_studio_{px}.png")
    big.resize((256, 256), Image.LANCZOS).save(
        OUT / "dtl_studio.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
    )
    big.resize((512, 512), Image.LANCZOS).save(OUT / "dtl_studio.icns")
    print(f"icons written to {OUT}")


if __name__ == "__main__":
    main()
