"""WebDataset tar shards in the img2dataset layout, read as a stream.

A shard is a tar file whose members are grouped into samples by their name
before the first dot: ``000123.jpg`` (or ``.jpeg``/``.png``/``.webp``) is the
image, ``000123.txt`` its caption, ``000123.json`` optional metadata. The
captions are the ``.json``'s ``captions`` list when it has one (shards written
by ``contrastkit data convert`` keep every caption there), else the ``.txt``,
else the ``.json`` fields named by ``data.caption_columns``. From the ``.json`` also:
``neg_captions`` (category -> list; or the ``data.neg_caption_columns``
fields), ``tags`` / ``neg_tags`` / ``rewrites`` (or the configured columns),
``label`` (or ``data.label_column``). Shards are opened and parsed with the
``webdataset`` library (``gopen`` and its tar iterator), so local paths,
``file:``, ``pipe:`` and http(s) URLs all work.

Shard lists: ``wds:data/{00000..00099}.tar`` (brace expansion), several
patterns joined by ``::``, or a directory: its ``dataset.json`` (written by
``contrastkit data convert``: shards and counts per split, class names) or
else every ``*.tar`` in it, sorted.

Streaming (training): shards are dealt to the ``ranks x workers`` readers,
reader ``r * workers + w`` taking shards ``slot, slot + R*W, ...`` of the
epoch's seeded shard order, so each sample is read exactly once per epoch
in all. Each reader shuffles its samples in a seeded buffer
(``data.shuffle_buffer``) that is flushed at the end of the epoch.
``data.resample: true`` draws shards with replacement instead (an endless
stream; each reader its own seeded draw). See
:func:`contrastkit.data.pipeline.make_train_loader`.

Random access (``len`` / ``[i]``) covers a window: the first 2000 records of
the train split (enough for the start-up checks over records) and the first
``data.eval_size`` records of val / test, which evaluation reads.

Bad input: a sample without an image member (``missing_image``), without a
caption (``empty_caption``), with a caption that is not UTF-8
(``invalid_utf8``) or a ``.json`` that does not parse (``invalid_row``) is a
bad record; a shard that ends in the middle of a member, or (local files)
without the tar end-of-archive blocks, counts once as ``truncated_shard``;
the samples read before the cut are used, the one being read is dropped.
"""

from __future__ import annotations

import json
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import DataConfig, column_list
from .problems import (
    IMAGE_EXTENSIONS,
    TEXT_ERRORS,
    DataError,
    Problem,
    SourceRecord,
    check_captions,
    text_items,
)
from .records import ZeroShotTask
from .splits import split_of

TRAIN_WINDOW = 2000
INFO_FILE = "dataset.json"


def expand_shards(target: str, split: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Shard URLs of ``target`` and the directory info (empty unless ``target`` is a converted directory)."""
    import braceexpand

    path = Path(target)
    if "://" not in target and not target.startswith("pipe:") and path.is_dir():
        info_path = path / INFO_FILE
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            splits = info.get("splits", {})
            name = split if split in splits else ("train" if "train" in splits else next(iter(splits), None))
            if name is None:
                raise ValueError(f"wds:{target}: {INFO_FILE} lists no splits")
            info = {**info, "split_used": name}
            return [str(path / s) for s in splits[name]["shards"]], info
        shards = sorted(str(p) for p in path.glob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"wds:{target}: no .tar shards in this directory")
        return shards, {}
    shards = []
    for pattern in target.split("::"):
        shards.extend(braceexpand.braceexpand(pattern))
    if not shards:
        raise ValueError(f"wds:{target}: the pattern expands to no shards")
    missing = [s for s in shards if _is_local(s) and not Path(_local(s)).is_file()]
    if missing:
        raise FileNotFoundError(
            f"wds:{target}: {len(missing)} of {len(shards)} shards do not exist, e.g. {', '.join(missing[:3])}"
        )
    return shards, {}


def _is_local(url: str) -> bool:
    return "://" not in url.replace("file://", "") and not url.startswith("pipe:")


def _local(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _tail_ok(url: str) -> bool:
    """A local tar file ends with the end-of-archive zero blocks (a cut at a member boundary does not)."""
    path = _local(url)
    size = os.path.getsize(path)
    if size < 1024 or size % 512:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1024)
        return not any(f.read(1024))


def shard_name(url: str) -> str:
    return url.rsplit("/", 1)[-1] if "/" in url else url


class WebDatasetSource:
    """One split of a webdataset shard set; see the module docstring."""

    streaming = True

    def __init__(self, target: str, split: str, cfg: DataConfig, split_by_hash: bool) -> None:
        self.target, self.split, self.cfg, self.on_error = target, split, cfg, cfg.on_error
        self.shards, self.info = expand_shards(target, split)
        self.name = f"wds:{target}"
        self.split_by_hash = split_by_hash and "split_used" not in self.info
        self.classnames: list[str] = list(self.info.get("classnames", []))
        self.templates: list[str] = list(self.info.get("templates", [])) or [cfg.class_template]
        self.label_name: str = self.info.get("label_name", cfg.label_column or "label")
        self.window_size = TRAIN_WINDOW if split == "train" else cfg.eval_size
        self._window: list[SourceRecord] | None = None
        self.caption_columns = column_list(cfg.caption_columns)
        self.neg_columns = column_list(cfg.neg_caption_columns)

    # -- reading
    def iter_shard(self, url: str) -> Iterator[SourceRecord | Problem]:
        """The records of one shard in order (this split's only), problems as :class:`Problem`."""
        for item in self._samples(url):
            if isinstance(item, Problem):
                yield item
                continue
            key, group = item
            if (
                self.split_by_hash
                and split_of(key, self.cfg.seed, self.cfg.val_fraction, self.cfg.test_fraction) != self.split
            ):
                continue
            where = f"{shard_name(url)} sample {key}"
            try:
                yield self._record(key, group, where)
            except DataError as err:
                yield Problem.of(err)

    def iter_records(self, shards: Sequence[str] | None = None) -> Iterator[SourceRecord | Problem]:
        for url in self.shards if shards is None else shards:
            yield from self.iter_shard(url)

    def _samples(self, url: str) -> Iterator[tuple[str, dict[str, bytes]] | Problem]:
        from webdataset import gopen
        from webdataset.tariterators import base_plus_ext, tar_file_iterator

        errors: list[BaseException] = []
        reading: list[str] = [""]  # the member being read (named before its data is read)

        def stop(exn: BaseException) -> bool:
            errors.append(exn)
            return False

        def note(fname: str) -> bool:
            reading[0] = fname
            return True

        count, key, last = 0, None, None
        group: dict[str, bytes] = {}
        try:
            stream = gopen(url)
        except Exception as err:
            raise DataError("truncated_shard", f"shard {url}", f"cannot open: {err}") from None
        try:
            for member in tar_file_iterator(stream, handler=stop, select_files=note):
                prefix, suffix = base_plus_ext(member["fname"])
                if prefix is None:
                    continue
                if prefix != key:
                    if key is not None:
                        yield key, group
                        count, last = count + 1, key
                    key, group = prefix, {}
                group[suffix.lower()] = member["data"]
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            errors.append(err)
        finally:
            stream.close()
        if not errors and _is_local(url) and not _tail_ok(url):
            errors.append(EOFError("the file ends without the tar end-of-archive blocks"))
            if key is not None and _complete(group):  # cut after a whole sample: keep it
                yield key, group
                count, last = count + 1, key
            key = None
        if errors and key is not None and base_plus_ext(reading[0])[0] != key and _complete(group):
            yield key, group  # the cut is in the next sample: this one is whole
            count, last = count + 1, key
        if errors:
            where = f"shard {url}" + (f" after sample {last}" if last is not None else "")
            yield Problem(
                "truncated_shard",
                where,
                f"tar data ends early ({errors[0]}); read {count} samples, the rest of the shard is lost",
            )
        elif key is not None:
            yield key, group

    def _record(self, key: str, group: dict[str, bytes], where: str) -> SourceRecord:
        ext = next((e for e in IMAGE_EXTENSIONS if e in group), None)
        if ext is None:
            raise DataError(
                "missing_image",
                where,
                f"no image member (.{', .'.join(IMAGE_EXTENSIONS)}); members: {', '.join(sorted(group)) or '(none)'}",
            )
        meta: dict[str, Any] = {}
        if "json" in group:
            try:
                meta = json.loads(group["json"].decode("utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeError) as err:
                raise DataError("invalid_row", where, f"the .json member does not parse: {err}") from None
        if isinstance(meta.get("captions"), list) and meta["captions"]:
            raw: list[Any] = meta["captions"]
        elif "txt" in group:
            raw = [group["txt"]]
        else:
            raw = [meta[c] for c in self.caption_columns if c in meta]
        captions = check_captions(raw, where)
        record = SourceRecord(image=f"{where}.{ext}", captions=captions, key=where, blob=group[ext])
        try:
            negs = meta.get("neg_captions")
            if isinstance(negs, dict):
                for cat, items in negs.items():
                    if text_items(items):
                        record.neg_captions[str(cat)] = text_items(items)
            for column in self.neg_columns:
                if text_items(meta.get(column)):
                    record.neg_captions[column] = text_items(meta.get(column))
            cfg = self.cfg
            record.tags = text_items(meta.get(cfg.tag_column or "tags"))
            record.neg_tags = text_items(meta.get(cfg.neg_tag_column or "neg_tags"))
            record.rewrites = text_items(meta.get(cfg.rewrite_column or "rewrites"))
        except TEXT_ERRORS as err:
            raise DataError("invalid_utf8", where, f"a text field is not valid UTF-8 ({err.reason})") from None
        label = meta.get(self.cfg.label_column or "label")
        if isinstance(label, str) and label in self.classnames:
            label = self.classnames.index(label)
        if isinstance(label, int) and not isinstance(label, bool):
            record.label = label
        record.meta["url"] = meta.get("url")
        return record

    # -- random access to the window
    def _fill(self) -> list[SourceRecord]:
        if self._window is None:
            validate = self.split != "train" and self.on_error == "skip"
            window: list[SourceRecord] = []
            for item in self.iter_records():
                if len(window) >= self.window_size:
                    break
                if isinstance(item, Problem):
                    if self.on_error == "raise":
                        raise item.error()
                    continue
                if validate:
                    try:
                        item.load_image()
                    except DataError:
                        continue
                window.append(item)
            self._window = window
        return self._window

    def __len__(self) -> int:
        return len(self._fill())

    def __getitem__(self, index: int) -> SourceRecord:
        window = self._fill()
        if not -len(window) <= index < len(window):
            raise IndexError(
                f"{self.name} [{self.split}]: index {index} out of range for the {len(window)} records "
                "of the random-access window"
            )
        return window[index]

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        if not self.classnames:
            return []
        pairs = [
            (i, r.label)
            for i, r in enumerate(self._fill())
            if r.label is not None and 0 <= r.label < len(self.classnames)
        ]
        if not pairs:
            return []
        return [
            ZeroShotTask(
                self.label_name,
                list(self.classnames),
                list(self.templates),
                [i for i, _ in pairs],
                [lab for _, lab in pairs],
            )
        ]

    # -- streaming
    def stream(
        self, epoch_seed: int, slot: int, slots: int, resample: bool, shuffle_buffer: int
    ) -> Iterator[tuple[int, SourceRecord | Problem]]:
        """Endless ``(epoch, record | problem)`` for reader ``slot`` of ``slots``; see the module docstring."""
        if resample:
            rng = random.Random(f"{epoch_seed}/resample/{slot}")
            draw = 0
            while True:
                url = rng.choice(self.shards)
                empty = True
                for item in self.iter_shard(url):
                    empty = False
                    yield draw, item
                draw += 1
                if empty and draw > 100 * len(self.shards):
                    return
        epoch = 0
        while True:
            order = list(self.shards)
            random.Random(f"{epoch_seed}/shards/{epoch}").shuffle(order)
            mine = order[slot::slots]
            if not mine:
                return
            rng = random.Random(f"{epoch_seed}/buffer/{epoch}/{slot}")
            buffer: list[SourceRecord] = []
            seen = False
            for item in self.iter_records(mine):
                seen = True
                if isinstance(item, Problem) or shuffle_buffer <= 1:
                    yield epoch, item
                    continue
                if len(buffer) < shuffle_buffer:
                    buffer.append(item)
                    continue
                j = rng.randrange(len(buffer))
                out, buffer[j] = buffer[j], item
                yield epoch, out
            rng.shuffle(buffer)
            for item in buffer:
                yield epoch, item
            if not seen:
                return
            epoch += 1


def _complete(group: dict[str, bytes]) -> bool:
    return any(e in group for e in IMAGE_EXTENSIONS) and ("txt" in group or "json" in group)
