"""Bad input: the reasons a record can be unusable, the error that names it, and the checks.

Every source reports a bad record the same way: a :class:`DataError` with a
``reason`` (one of :data:`REASONS`) and ``where`` (the file, row or shard and
key), so ``data.on_error: raise`` stops with a message naming the record and
``data.on_error: skip`` counts it under ``reason``.

Where each problem is found:

- text problems (no caption, caption not UTF-8, a missing column in a row, a
  row that is not valid JSON) when the source builds the record: in ``raise``
  mode ``source[i]`` raises, in ``skip`` mode the record comes back with
  ``problem`` set (so start-up scans over records never stop) and the training
  set skips it;
- image problems (missing file, zero bytes, unreadable, truncated) when the
  image is loaded (:meth:`SourceRecord.load_image`), in the worker processes;
- a truncated tar shard when the stream reaches its end.

Over-long captions are not dropped: the tokenizer truncates them (the
built-in one counts them in ``HashedWordTokenizer.truncated``) and
``contrastkit data check`` lists them under ``caption_too_long``.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from .records import Record

REASONS: dict[str, str] = {
    "missing_file": "the image file does not exist",
    "empty_image": "zero-byte file or zero-size image",
    "unreadable_image": "not an image the decoder can read",
    "truncated_image": "the image data ends early",
    "empty_caption": "no caption, or only whitespace",
    "invalid_utf8": "caption is not valid UTF-8",
    "missing_column": "the row lacks a configured column",
    "invalid_row": "the row cannot be parsed",
    "missing_image": "a shard sample has no .jpg/.jpeg/.png/.webp member",
    "truncated_shard": "a tar shard ends early (records after the cut are lost)",
    "caption_too_long": "caption longer than the text context (kept, truncated by the tokenizer)",
}
_MESSAGE = re.compile(r"bad data \[(\w+)\] at (.*?): (.*?)\. Set data\.on_error", re.S)
SPLIT_SEPARATOR = " || "  # lists inside one text cell (as written by `contrastkit data export`)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: What :func:`text_of` raises for a cell that is not valid UTF-8 (both carry the codec's ``reason``).
TEXT_ERRORS = (UnicodeDecodeError, UnicodeEncodeError)


class DataError(ValueError):
    """A record (or shard) that cannot be used; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str, where: str | None = None, detail: str | None = None) -> None:
        if where is None:  # rebuilt from its message (a DataLoader worker re-raises it that way)
            message = reason
            found = _MESSAGE.search(message)
            reason, where, detail = found.groups() if found else ("unknown", "?", message)
        else:
            message = (
                f"bad data [{reason}] at {where}: {detail}. Set data.on_error=skip to skip and count "
                "bad records, or run `contrastkit data check` to list them all"
            )
        self.reason, self.where, self.detail = reason, where, detail
        super().__init__(message)

    def __reduce__(self):  # survive the trip back from a DataLoader worker
        return (DataError, (self.reason, self.where, self.detail))


@dataclass
class Problem:
    """A record that was skipped, as counted and shown by ``data check``."""

    reason: str
    where: str
    detail: str | None  # None when the error was raised without one

    @classmethod
    def of(cls, err: DataError) -> Problem:
        return cls(err.reason, err.where, err.detail)

    def error(self) -> DataError:
        return DataError(self.reason, self.where, self.detail)


@dataclass
class SourceRecord(Record):
    """A record of a file-backed source: the image is a path or encoded bytes, checked when loaded.

    ``blob`` holds the encoded image of a shard sample (``image`` then names it
    for messages). ``problem`` marks a record whose text was unusable, built in
    ``skip`` mode so that a scan of the records never stops.
    """

    blob: bytes | None = None
    problem: Problem | None = None

    def load_image(self) -> Image.Image:
        if isinstance(self.image, Image.Image):
            return self.image
        return decode_image(
            self.blob, self.key, path=None if self.blob is not None else Path(self.image), name=str(self.image)
        )

    def image_bytes(self) -> tuple[bytes, str]:
        """The encoded image and its extension (for writing shards without re-encoding)."""
        if isinstance(self.image, Image.Image):
            buf = io.BytesIO()
            self.image.save(buf, "PNG")
            return buf.getvalue(), "png"
        if self.blob is not None:
            data = self.blob
            ext = Path(str(self.image)).suffix.lower().lstrip(".")
        else:
            data = read_image_file(Path(self.image), self.key)
            ext = Path(self.image).suffix.lower().lstrip(".")
        if ext not in IMAGE_EXTENSIONS:
            img = self.load_image()
            buf = io.BytesIO()
            img.save(buf, "PNG")
            return buf.getvalue(), "png"
        return data, ("jpg" if ext == "jpeg" else ext)


class StreamingSource(Protocol):
    """A source read as a stream rather than by index (``streaming = True``: webdataset shards)."""

    def iter_records(self, shards: Sequence[str] | None = None) -> Iterator[SourceRecord | Problem]:
        """Every record of the source (of ``shards`` when given) in order, problems as :class:`Problem`."""
        ...

    def stream(
        self, epoch_seed: int, slot: int, slots: int, resample: bool, shuffle_buffer: int
    ) -> Iterator[tuple[int, SourceRecord | Problem]]:
        """Endless ``(epoch, record | problem)`` for reader ``slot`` of ``slots``."""
        ...


def read_image_file(path: Path, where: str) -> bytes:
    if not path.is_file():
        raise DataError("missing_file", where, f"image file {path} does not exist")
    data = path.read_bytes()
    if not data:
        raise DataError("empty_image", where, f"image file {path} is empty (0 bytes)")
    return data


def decode_image(data: bytes | None, where: str, *, path: Path | None = None, name: str = "") -> Image.Image:
    """Decode an image fully (so truncation shows now, not in the middle of a transform) as RGB."""
    if data is None:
        assert path is not None
        data = read_image_file(path, where)
        name = str(path)
    if not data:
        raise DataError("empty_image", where, f"image {name} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                raise DataError("empty_image", where, f"image {name} has size {img.width}x{img.height}")
            return img.convert("RGB")
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError("unreadable_image", where, f"image {name} is not in a format the decoder knows") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated_image" if "truncat" in str(err).lower() else "unreadable_image"
        raise DataError(reason, where, f"cannot decode image {name}: {err}") from None


def text_of(value: Any) -> str | None:
    """A cell as text; raises UnicodeError for bytes or escaped surrogates that are not UTF-8."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas / arrow
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    text = str(value)
    text.encode("utf-8")  # lone surrogates (csv read with surrogateescape) raise UnicodeEncodeError
    return text


def text_items(value: Any, split: bool = True) -> list[str]:
    """A cell holding one text, a list of texts, or texts joined by " || " -> non-empty stripped texts."""
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for v in values:
        text = text_of(v)
        if text is None:
            continue
        parts = text.split(SPLIT_SEPARATOR) if split else [text]
        out.extend(p.strip() for p in parts if p.strip())
    return out


def check_captions(captions: Iterable[Any], where: str) -> list[str]:
    """Non-empty captions, or DataError (invalid_utf8 / empty_caption)."""
    out: list[str] = []
    for value in captions:
        try:
            out.extend(text_items(value))
        except TEXT_ERRORS as err:
            raise DataError("invalid_utf8", where, f"caption is not valid UTF-8 ({err.reason})") from None
    if not out:
        raise DataError("empty_caption", where, "no caption (empty or whitespace only)")
    return out


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def caption_tokens(text: str) -> int:
    """Tokens the built-in tokenizer makes of ``text`` (words and punctuation marks, without BOS/EOS)."""
    return len(_WORD.findall(text.lower()))


def stable_id(key: str) -> int:
    """A 62-bit integer id of a record key (the batch index of a streamed record)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2
