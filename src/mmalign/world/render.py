"""Render a scene graph to an RGB image with PIL.

Shapes are drawn at SUPERSAMPLE times the target size and downsampled with a box filter, which
gives anti-aliased edges at a fraction of the cost of a smoother filter. Rendering is a pure
function of the scene, so images are reproducible byte for byte (PNG encoding included).
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from mmalign.world import vocab
from mmalign.world.scene import Obj, Scene

SUPERSAMPLE = 4


def render(scene: Scene, size: int = 64) -> Image.Image:
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), vocab.THEMES[scene.theme]["background"])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o, big)
    return img.resize((size, size), Image.Resampling.BOX)


def render_png(scene: Scene, size: int = 64) -> bytes:
    buf = io.BytesIO()
    render(scene, size).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _draw(draw: ImageDraw.ImageDraw, o: Obj, side: int) -> None:
    cx, cy = o.x * side, o.y * side
    r = vocab.SIZE_RADIUS[o.size] * side
    fill = vocab.COLORS[o.color]
    if o.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif o.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r * 0.38)))
    elif o.shape == "square":
        s = r * 0.86
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif o.shape == "diamond":
        w = r * 0.8
        draw.polygon([(cx, cy - r), (cx + w, cy), (cx, cy + r), (cx - w, cy)], fill=fill)
    elif o.shape == "triangle":
        draw.polygon(_regular(cx, cy + r * 0.15, r * 1.05, 3, -90), fill=fill)
    elif o.shape == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, 0), fill=fill)
    elif o.shape == "star":
        pts = []
        for k in range(10):
            rad = r * (1.0 if k % 2 == 0 else 0.42)
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    elif o.shape == "cross":
        t = r * 0.34
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:  # pragma: no cover - vocab and renderer are kept in step by a test
        raise ValueError(f"no renderer for shape {o.shape!r}")


def _regular(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(math.radians(start_deg + 360 * k / n)),
             cy + r * math.sin(math.radians(start_deg + 360 * k / n))) for k in range(n)]
