"""Safe image handling: paths that stay inside the image root, and size checks before decoding.

Datasets come from people we do not control, so an image path is untrusted input: it must not
reach outside the image root (`../`, absolute paths, symlinks pointing elsewhere), and an image
must not be decoded before we know its size (a small PNG can claim 100k x 100k pixels).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from mmalign.records import RecordError

# ~67 megapixels: far above any training resolution, far below what exhausts memory.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def resolve_image(root: str | os.PathLike, rel: str, *, field: str | None = None) -> Path:
    """Return the path of image `rel` under `root`, refusing anything that escapes `root`."""
    if not isinstance(rel, str) or not rel:
        raise RecordError(f"image path must be a non-empty string, got {rel!r}", field=field)
    # Check both separator conventions: a Windows-made file can carry `..\\x.png` or `C:\\x`.
    if (PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()
            or PureWindowsPath(rel).drive or rel.startswith(("/", "\\"))):
        raise RecordError(f"image path {rel!r} is absolute; it must be relative to the image root",
                          field=field)
    if ".." in rel.replace("\\", "/").split("/"):
        raise RecordError(f"image path {rel!r} escapes the image root ('..' segment)", field=field)
    root_real = Path(root).resolve()
    path = Path(root) / rel
    # resolve() follows symlinks, so a link inside the root that points outside is caught here.
    real = path.resolve()
    if not real.is_relative_to(root_real):
        raise RecordError(f"image path {rel!r} resolves outside the image root ({real})",
                          field=field)
    return real


def check_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_bytes: int = DEFAULT_MAX_BYTES, field: str | None = None) -> tuple[int, int]:
    """Check that `path` is a readable image within the limits; return its (width, height).

    The byte size and the header's width*height are checked before any pixel is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"image file not found: {path}", field=field)
    size = path.stat().st_size
    if size > max_bytes:
        raise RecordError(f"image too large: {size} bytes > limit {max_bytes} ({path})",
                          field=field)
    with warnings.catch_warnings():
        # PIL warns (or raises, past 2x its own limit) on big headers; we apply our own limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise RecordError(
                        f"image too large: {width}x{height} = {width * height} pixels > limit "
                        f"{max_pixels} ({path})", field=field)
                img.load()
        except RecordError:
            raise
        except Image.DecompressionBombError as e:
            raise RecordError(f"image too large: {e} ({path})", field=field) from None
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
            raise RecordError(f"corrupt or unreadable image: {e} ({path})", field=field) from None
    return width, height


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> Image.Image:
    """Open an image after `check_image` and return it as RGB."""
    check_image(path, max_pixels=max_pixels, max_bytes=max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            return img.convert("RGB")


def image_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, hex: a content key that survives renames."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RecordImageChecker:
    """Check every image a record names, with fields like `images[1]`/`rejected_images[0]`.

    Path containment is always checked (it is a safety rule, and cheap); opening the files is
    optional. Results are cached per path because corpora reuse images across many records.
    """

    def __init__(self, root: str | os.PathLike, *, check_files: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(root)
        self.check_files = check_files
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._seen: dict[str, str | None] = {}  # rel path -> failure reason, None if fine

    def check(self, record: object) -> None:
        for name in ("images", "rejected_images"):
            for i, rel in enumerate(getattr(record, name, None) or []):
                reason = self._reason(rel)
                if reason is not None:
                    raise RecordError(reason, field=f"{name}[{i}]")

    def _reason(self, rel: str) -> str | None:
        if rel not in self._seen:
            if len(self._seen) >= 200_000:  # bound memory on corpora of unique images
                self._seen.clear()
            try:
                path = resolve_image(self.root, rel)
                if self.check_files:
                    check_image(path, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
                self._seen[rel] = None
            except RecordError as e:
                self._seen[rel] = e.reason
        return self._seen[rel]
