"""Cheap structural checks of image files, run once before any decoding.

A file's header and trailer show nearly everything that makes TensorFlow's decoders fail
(truncation, text saved as ``.jpg``, variants the decoders cannot read) without decoding a
pixel, so bad files are found and named before training instead of failing, or being
silently dropped, mid-epoch. The rules mirror what ``tf.io.decode_image`` accepts: a JPEG
needs its end-of-image marker, a PNG its IEND chunk, a BMP must be exactly as long as its
header says, a GIF's blocks must be complete, and a WebP must be as long as its RIFF header
says, still and without alpha (TensorFlow refuses to decode those as RGB).
"""

import io
import struct
from dataclasses import dataclass

_TAIL = 4096  # trailing bytes searched for an end marker (some writers pad after it)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_OTHER_FORMATS = {b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\xff\x0a": "JPEG XL",
                  b"\x00\x00\x00\x0cJXL ": "JPEG XL"}
_READ = "tfvision reads JPEG, PNG, GIF, BMP and WebP"


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format and size, or the reason the file cannot be read."""

    format: str | None = None
    height: int | None = None
    width: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Bad(Exception):
    """Raised inside the format readers; its message becomes ``ImageInfo.problem``."""


def check_image(f, size: int) -> ImageInfo:
    """Check the file object ``f`` (``size`` bytes long, seekable) without decoding it."""
    f.seek(0)
    head = f.read(16)
    try:
        if size == 0:
            raise _Bad("empty file")
        if head.startswith(b"\xff\xd8\xff"):
            return ImageInfo("jpeg", *_jpeg(f, size))
        if head.startswith(_PNG_SIGNATURE):
            return ImageInfo("png", *_png(f, size))
        if head.startswith((b"GIF87a", b"GIF89a")):
            return ImageInfo("gif", *_gif(f, size))
        if head.startswith(b"BM"):
            return ImageInfo("bmp", *_bmp(f, size))
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return ImageInfo("webp", *_webp(f, size))
        raise _Bad(_unknown(head))
    except _Bad as bad:
        return ImageInfo(problem=str(bad))


def check_bytes(data: bytes) -> ImageInfo:
    """``check_image`` for encoded bytes already in memory (a TFRecord or TFDS record)."""
    return check_image(io.BytesIO(data), len(data))


def read_image_files(paths) -> list[bytes]:
    """The encoded bytes of each file, checked as training checks them, so a bad file is
    named with its reason before any work (and without TensorFlow)."""
    from tfvision import fs
    from tfvision.errors import DataError

    encoded = []
    for path in map(str, paths):
        if not fs.isfile(path):
            raise DataError(f"{path}: no such image file")
        with fs.open_file(path) as f:
            data = f.read()
        problem = check_bytes(data).problem
        if problem:
            raise DataError(f"{path} is not a readable image: {problem}")
        encoded.append(data)
    return encoded


def check_file(path) -> ImageInfo:
    from tfvision import fs

    with fs.open_file(path) as f:
        f.seek(0, io.SEEK_END)
        return check_image(f, f.tell())


def _unknown(head: bytes) -> str:
    names = [name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)]
    if names:
        return f"{names[0]} image; {_READ} (convert it)"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "not an image (text file)"
    return f"not an image (unknown format; {_READ})"


def _read(f, offset, n, what):
    f.seek(offset)
    data = f.read(n)
    if len(data) < n:
        raise _Bad(f"truncated {what}")
    return data


def _tail(f, size):
    f.seek(max(size - _TAIL, 0))
    return f.read()


def _jpeg(f, size):
    pos = 2
    while True:
        marker = _read(f, pos, 2, "JPEG (ends inside its header)")
        if marker[0] != 0xFF:
            raise _Bad(f"corrupt JPEG header (no marker at byte {pos})")
        code = marker[1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if code in _JPEG_STANDALONE:
            pos += 2
            continue
        if code in (0xD9, 0xDA):
            raise _Bad("corrupt JPEG (image data before its frame header)")
        (length,) = struct.unpack(">H", _read(f, pos + 2, 2, "JPEG (ends inside its header)"))
        if code in _JPEG_SOF:
            frame = _read(f, pos + 4, 6, "JPEG (ends inside its frame header)")
            height, width, components = *struct.unpack(">HH", frame[1:5]), frame[5]
            break
        pos += 2 + length
    if components not in (1, 3, 4):
        raise _Bad(f"JPEG with {components} colour components (decoders read 1, 3 or 4)")
    if height == 0 or width == 0:
        raise _Bad("JPEG with zero height or width in its frame header")
    if b"\xff\xd9" not in _tail(f, size):
        raise _Bad("truncated JPEG (no end-of-image marker)")
    return height, width


def _png(f, size):
    header = _read(f, 8, 25, "PNG (ends inside its header)")
    if header[4:8] != b"IHDR":
        raise _Bad("corrupt PNG (no IHDR chunk)")
    width, height = struct.unpack(">II", header[8:16])
    if _PNG_IEND not in _tail(f, size):
        raise _Bad("truncated PNG (no IEND chunk)")
    return height, width


def _gif(f, size):
    screen = _read(f, 6, 7, "GIF (ends inside its header)")
    pos = 13 + (3 << ((screen[4] & 7) + 1) if screen[4] & 0x80 else 0)
    images = 0
    while pos < size:
        block = _read(f, pos, 1, "GIF")[0]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _gif_sub_blocks(f, pos + 2, size)
        elif block == 0x2C:  # image: descriptor, optional colour table, LZW size, sub-blocks
            desc = _read(f, pos + 1, 9, "GIF (ends inside an image descriptor)")
            images += 1
            table = 3 << ((desc[8] & 7) + 1) if desc[8] & 0x80 else 0
            pos = _gif_sub_blocks(f, pos + 10 + table + 1, size)
        else:
            raise _Bad(f"corrupt GIF (unknown block 0x{block:02x} at byte {pos})")
    if not images:
        raise _Bad("GIF without any image")
    width, height = struct.unpack("<HH", screen[:4])
    return height, width


def _gif_sub_blocks(f, pos, size):
    while True:
        if pos >= size:
            raise _Bad("truncated GIF (ends inside an image)")
        length = _read(f, pos, 1, "GIF")[0]
        pos += 1 + length
        if length == 0:
            return pos


def _bmp(f, size):
    header = _read(f, 0, 26, "BMP (ends inside its header)")
    data_offset, dib_size = struct.unpack("<II", header[10:18])
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", header[18:22])
        bpp, compression, colours = struct.unpack("<H", _read(f, 24, 2, "BMP"))[0], 0, 0
    else:
        info = _read(f, 18, 36, "BMP (ends inside its header)")
        width, height, _, bpp, compression = struct.unpack("<iiHHI", info[:16])
        colours = struct.unpack("<I", info[28:32])[0]
    if bpp not in (8, 24, 32):
        raise _Bad(f"{bpp}-bit BMP (TensorFlow reads 8-bit grayscale, 24- and 32-bit BMP)")
    if compression == 3 and bpp == 32:
        masks = struct.unpack("<III", _read(f, 54, 12, "BMP (ends inside its colour masks)"))
        if masks != (0x00FF0000, 0x0000FF00, 0x000000FF):
            raise _Bad("32-bit BMP with non-standard colour masks (convert it to PNG)")
    elif compression != 0:
        raise _Bad("compressed BMP (TensorFlow reads uncompressed BMP only; convert it to PNG)")
    if bpp == 8:
        count, entry = colours or 256, 3 if dib_size == 12 else 4
        table = _read(f, 14 + dib_size, entry * count, "BMP (ends inside its colour table)")
        if any(table[entry * i: entry * i + 3] != bytes((i, i, i)) for i in range(count)):
            raise _Bad("8-bit BMP with a colour palette (TensorFlow would read it as "
                       "grayscale and lose its colours; convert it to PNG)")
    expected = data_offset + ((bpp * abs(width) + 31) // 32) * 4 * abs(height)
    if size != expected:
        kind = "truncated" if size < expected else "padded"
        raise _Bad(f"{kind} BMP ({size} bytes, its header describes {expected})")
    return abs(height), abs(width)


def _webp_chunks(f, end):
    """``(tag, data offset, length)`` of each RIFF chunk; running out before the image is
    corrupt."""
    pos = 12
    while pos + 8 <= end:
        tag, length = struct.unpack("<4sI", _read(f, pos, 8, "WebP"))
        if pos + 8 + length > end:
            raise _Bad(f"corrupt WebP (its {tag.decode('latin-1')!r} chunk runs past the end)")
        yield tag, pos + 8, length
        pos += 8 + length + (length & 1)
    raise _Bad("corrupt WebP (no VP8 or VP8L image data)")


def _webp(f, size):
    """Size and alpha as libwebp's ``WebPGetFeatures`` reads them (TF's decoder calls it)."""
    end = struct.unpack("<I", _read(f, 4, 4, "WebP"))[0] + 8
    if size < end:  # bytes after the RIFF end are ignored by the decoder
        raise _Bad(f"truncated WebP ({size} bytes, its header describes {end})")
    chunks = _webp_chunks(f, end)
    tag, pos, length = next(chunks)
    alpha, alpha_chunk, canvas = False, False, None
    if tag == b"VP8X":  # extended format: flags and canvas, then optional chunks
        if length != 10:
            raise _Bad("corrupt WebP (bad VP8X chunk)")
        header = _read(f, pos, 10, "WebP")
        if header[0] & 0x02:
            raise _Bad("animated WebP (TensorFlow cannot decode WebP animations as RGB; "
                       "convert it to GIF)")
        alpha = bool(header[0] & 0x10)
        canvas = (int.from_bytes(header[7:10], "little") + 1,
                  int.from_bytes(header[4:7], "little") + 1)
        for tag, pos, length in chunks:
            if tag in (b"VP8 ", b"VP8L"):
                break
            alpha_chunk |= tag == b"ALPH"
    if tag == b"VP8 ":  # lossy: frame tag, start code, 14-bit width and height
        frame = _read(f, pos, 10, "WebP (ends inside its VP8 header)")
        bits = int.from_bytes(frame[:3], "little")  # key frame, profile, shown, partition
        if bits & 1 or bits >> 1 & 7 > 3 or not bits >> 4 & 1 or bits >> 5 >= length \
                or frame[3:6] != b"\x9d\x01\x2a":
            raise _Bad("corrupt WebP (bad VP8 frame header)")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", frame[6:10]))
        if height == 0 or width == 0:
            raise _Bad("WebP with zero height or width")
    elif tag == b"VP8L":  # lossless: signature, 14-bit width-1 and height-1, alpha, version
        header = _read(f, pos, 5, "WebP (ends inside its VP8L header)")
        bits = int.from_bytes(header[1:], "little")
        if header[0] != 0x2F or bits >> 29:
            raise _Bad("corrupt WebP (bad VP8L header)")
        width, height = (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
        alpha = bool(bits >> 28 & 1)  # libwebp takes this bit over the VP8X flag
    else:
        raise _Bad("corrupt WebP (no VP8 or VP8L image data)")
    if canvas not in (None, (height, width)):
        raise _Bad("corrupt WebP (its canvas and image sizes differ)")
    if alpha or alpha_chunk:
        raise _Bad("WebP with an alpha channel (TensorFlow decodes it only as RGBA, not RGB; "
                   "convert it to PNG)")
    return height, width
