"""Content hashes of image files: equal when the images are, whatever the metadata.

An exact duplicate is an image with the same pixels as another, not the same file bytes:
copies that differ only in EXIF, XMP, comments or PNG compression are the same image.

- JPEG: SHA-256 of the compressed image data (every segment but APP0-APP13, APP15 and COM;
  APP14 is kept, it sets the colour transform) and the EXIF orientation the decoder applies.
  No decode is needed, so the device decoder and PIL, full size or draft, agree. A JPEG
  re-compressed (even losslessly, with other Huffman tables) does not match.
- Other formats: SHA-256 of the 8-bit RGB pixels as decoded for the model (after the EXIF
  orientation, before any intensity change), from the decode the embedding does anyway.

Hashes carry a prefix (``jpeg:``, ``rgb:``); a cache written before kept SHA-256 of the file
bytes, without one (:func:`is_content_hash`).
"""

from __future__ import annotations

import hashlib
import io
import logging

logger = logging.getLogger(__name__)

_PREFIXES = ("jpeg:", "rgb:")
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length
_METADATA = {*range(0xE0, 0xEE), 0xEF, 0xFE}  # APP0-APP13, APP15, COM (APP14 is kept)
_EXIF_ORIENTATION = 0x0112


def is_jpeg(data: bytes) -> bool:
    """True when ``data`` starts with a JPEG start-of-image marker."""
    return data[:3] == b"\xff\xd8\xff"


def is_content_hash(digest: str) -> bool:
    """True for a hash made here (an older cache entry holds a hash of the file bytes)."""
    return str(digest).startswith(_PREFIXES)


def hash_jpeg(data: bytes, orientation: int = 1) -> str:
    """``"jpeg:"`` + hex SHA-256 of the JPEG ``data`` without its metadata segments, and of
    ``orientation`` (EXIF, 1-8) where it turns the decoded image. Malformed segment lengths
    end the parse; the rest is hashed as it is."""
    digest = hashlib.sha256(f"jpeg\0{orientation if orientation in range(2, 9) else 1}\0"
                            .encode())
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            digest.update(data[pos:pos + 2])
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data and all after it
            break
        stop = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker not in _METADATA:
            digest.update(data[pos:stop])
        pos = stop
    digest.update(data[pos:])
    return "jpeg:" + digest.hexdigest()


def hash_pixels(image) -> str:
    """``"rgb:"`` + hex SHA-256 of a PIL RGB ``image``'s size and pixels."""
    width, height = image.size
    digest = hashlib.sha256(f"rgb\0{width}x{height}\0".encode())
    digest.update(image.tobytes())
    return "rgb:" + digest.hexdigest()


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) in a JPEG's header; 1 when there is none."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as header:
        return int(header.getexif().get(_EXIF_ORIENTATION, 1))


def hash_image_data(data: bytes, image) -> str:
    """The content hash of a file's ``data``, ``image`` being its decode (RGB, full size
    for any format but JPEG): :func:`hash_jpeg` or :func:`hash_pixels`."""
    return hash_jpeg(data, jpeg_orientation(data)) if is_jpeg(data) else hash_pixels(image)


def hash_image_file(path) -> str:
    """The content hash of the image file at ``path``, decoding it only when it is not a
    JPEG (for cache entries written with a hash of the bytes)."""
    from .data import decode_image_bytes

    with open(path, "rb") as handle:
        data = handle.read()
    return hash_image_data(data, None if is_jpeg(data) else decode_image_bytes(data))


def update_old_hashes(paths, hashes, rows) -> None:
    """Replace, in place, ``hashes[row]`` for the ``rows`` of ``paths`` whose hash is not
    a content hash (a cache entry written before, with a hash of the file bytes or none) by
    :func:`hash_image_file`; "" (matches nothing) where the file cannot be read now."""
    from .data import ImageDecodeError

    old = [int(row) for row in rows if not is_content_hash(hashes[row])]
    for row in old:
        try:
            hashes[row] = hash_image_file(paths[row])
        except (OSError, ImageDecodeError):
            hashes[row] = ""
    if old:
        logger.info("%d cached images hashed again (their cache entries hold a hash of the "
                    "file bytes)", len(old))
