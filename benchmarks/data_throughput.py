"""Images/s of the training data loader on webdataset shards: contrastkit vs open_clip's pipeline.

    python benchmarks/data_throughput.py                      # 2048 images of 256 px, batch 64, 2 workers
    python benchmarks/data_throughput.py --quick              # a smoke run
    python benchmarks/data_throughput.py --results benchmarks/RESULTS.md

The script writes a shard set (img2dataset layout: JPEG + .txt + .json; photo-like
noise-textured images so JPEG decoding costs what it costs on real data), then
times, on the same shards with the same transforms:

- contrastkit: ``open_source("wds:...")`` -> ``TrainingSet`` -> ``make_train_loader`` (streaming,
  per-worker batches, seeded shuffle buffer, bad-record checks, full decode), captions tokenized in
  the main process as the trainer does;
- open_clip: ``open_clip_train.data.get_wds_dataset`` when ``open_clip_train`` is importable (its
  training pipeline: shard shuffle, split by node/worker, tar -> samples, sample shuffle, decode
  ``pilrgb``, preprocess, tokenize in the workers, batch; webdataset >= 0.2.90's end-of-shard marker
  is turned off for it, see ``_shim_eof_marker``), else the same pipeline rebuilt here from
  ``webdataset`` stages (the script says which one ran).

Transforms: open_clip's training preprocessing (``open_clip.image_transform(size, is_train=True)``:
RandomResizedCrop scale 0.9-1, to tensor, CLIP normalisation) and its tokenizer, for both loaders.
Each loader yields ``--batches`` batches after one warm-up batch; the rate is images / wall time,
the median of ``--repeats`` runs, the loaders alternating so that both see the same machine load.
Each is also run in-process (no workers) to measure its CPU milliseconds per image.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_file import command_line, write_section

SECTION = "Data loader throughput"


def make_shards(folder: Path, n: int, size: int, per_shard: int) -> str:
    """``n`` JPEG images (``size`` px, noise texture + shapes) in shards of ``per_shard``; returns the pattern."""
    import numpy as np
    import webdataset as wds
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' generated-data helpers
    import toy_data as toy

    rng = np.random.default_rng(0)
    n_shards = -(-n // per_shard)
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for k in range(n_shards):
        with wds.TarWriter(str(folder / f"{k:05d}.tar")) as sink:
            for _ in range(min(per_shard, n - index)):
                base, fields = toy.toy_item(index, size=size)
                noise = rng.normal(0, 25, (size, size, 3))
                pixels = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(pixels).save(buf, "JPEG", quality=90)
                sink.write(
                    {
                        "__key__": f"{index:09d}",
                        "jpg": buf.getvalue(),
                        "txt": fields["caption"].encode(),
                        "json": json.dumps({"caption": fields["caption"]}).encode(),
                    }
                )
                index += 1
    return f"{folder}/{{00000..{n_shards - 1:05d}}}.tar"


def contrastkit_loader(pattern: str, preprocess, tokenizer, batch: int, workers: int, steps: int):
    from contrastkit.config import DataConfig
    from contrastkit.data.pipeline import make_train_loader
    from contrastkit.data.sources import open_source
    from contrastkit.data.training_set import TrainingSet

    source = open_source(f"wds:{pattern}", "train", DataConfig())
    tset = TrainingSet(source, preprocess, seed=0)
    for b in make_train_loader(tset, batch, steps, seed=0, workers=workers):
        yield b.pixels, tokenizer(b.captions)


def open_clip_loader(pattern: str, preprocess, tokenizer, batch: int, workers: int, n: int, steps: int):
    """open_clip_train's get_wds_dataset when installed, else its pipeline rebuilt (see module doc)."""
    args = argparse.Namespace(
        train_data=pattern,
        val_data=None,
        dataset_resampled=False,
        train_num_samples=n,
        train_data_upsampling_factors=None,
        seed=0,
        batch_size=batch,
        workers=workers,
        world_size=1,
    )
    try:
        import open_clip_train.data as oc_data
    except ImportError:
        loader = _rebuilt_open_clip(pattern, preprocess, tokenizer, batch, workers)
    else:
        _shim_eof_marker(oc_data)
        loader = oc_data.get_wds_dataset(args, preprocess, is_train=True, epoch=0, tokenizer=tokenizer).dataloader
    made = 0
    while made < steps:  # open_clip's epochs are finite: start another one when one ends
        for images, texts in loader:
            yield images, texts
            made += 1
            if made == steps:
                return


def _shim_eof_marker(oc_data) -> None:
    """webdataset >= 0.2.90 ends each shard with an empty ``{}`` marker that open_clip_train's
    ``group_by_keys_nothrow`` cannot read (KeyError 'fname'); give it the expander without the marker."""
    import functools
    import inspect

    from webdataset.tariterators import tar_file_expander

    if "eof_value" in inspect.signature(tar_file_expander).parameters:
        oc_data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def _rebuilt_open_clip(pattern, preprocess, tokenizer, batch, workers):
    import webdataset as wds

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(pattern),
        wds.shuffle(bufsize=2000, initial=500),
        wds.split_by_node,
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=wds.warn_and_continue),
        wds.shuffle(bufsize=5000, initial=1000),
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.rename(image="jpg;png;jpeg;webp", text="txt"),
        wds.map_dict(image=preprocess, text=lambda text: tokenizer(text)[0]),
        wds.to_tuple("image", "text"),
        wds.batched(batch, partial=False),
    )
    return wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=workers, persistent_workers=workers > 0)


def open_clip_kind() -> str:
    try:
        import open_clip_train.data  # noqa: F401
    except ImportError:
        return "open_clip's wds pipeline rebuilt from webdataset stages (open_clip_train not installed)"
    return (
        "open_clip_train.data.get_wds_dataset (with webdataset's end-of-shard marker turned off, which its "
        "group_by_keys_nothrow predates)"
    )


def time_loader(batches, count: int) -> tuple[float, float]:
    """Images/s over ``count`` batches after the first (warm-up: worker start, first shard), and the CPU
    milliseconds per image this process spent (all of the work when the loader has no workers)."""
    iterator = iter(batches)
    next(iterator)
    images = 0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        pixels, _ = next(iterator)
        images += pixels.shape[0]
    rate = images / (time.perf_counter() - start)
    cpu_ms = 1000 * (time.process_time() - cpu) / images
    for _ in iterator:  # let the loader finish and shut its workers down
        pass
    return rate, cpu_ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--size", type=int, default=256, help="stored image side")
    p.add_argument("--crop", type=int, default=224, help="training crop side")
    p.add_argument("--per-shard", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=24, help="timed batches per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--results", help="write the table into this RESULTS.md section")
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.size, a.crop, a.batches, a.repeats, a.per_shard = 256, 96, 64, 6, 1, 64
    import open_clip
    import torch

    torch.set_num_threads(a.threads)
    preprocess = open_clip.image_transform(a.crop, is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    steps = a.batches + 1
    with tempfile.TemporaryDirectory() as tmp:
        pattern = make_shards(Path(tmp) / "shards", a.images, a.size, a.per_shard)
        runs: dict[str, list[float]] = {"contrastkit": [], "open_clip": []}
        cpu: dict[str, list[float]] = {"contrastkit": [], "open_clip": []}
        for _ in range(a.repeats):
            for name in ("contrastkit", "open_clip"):
                for workers, out, pick in ((a.workers, runs, 0), (0, cpu, 1)):
                    if name == "contrastkit":
                        loader = contrastkit_loader(pattern, preprocess, tokenizer, a.batch, workers, steps)
                    else:
                        loader = open_clip_loader(pattern, preprocess, tokenizer, a.batch, workers, a.images, steps)
                    out[name].append(time_loader(loader, a.batches)[pick])
    ours, theirs = statistics.median(runs["contrastkit"]), statistics.median(runs["open_clip"])
    ours_cpu, theirs_cpu = statistics.median(cpu["contrastkit"]), statistics.median(cpu["open_clip"])
    command = command_line("data_throughput.py", argv)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}"
    )
    lines = [
        f"Command: `{command.strip()}` ({_dt.date.today().isoformat()}; {machine}).",
        "",
        f"{a.images} JPEG images of {a.size} px in shards of {a.per_shard}; open_clip's train preprocessing "
        f"(RandomResizedCrop {a.crop}, scale 0.9-1, CLIP normalisation) and tokenizer for both; batch {a.batch}, "
        f"{a.workers} DataLoader workers; {a.batches} timed batches after a warm-up one, median of {a.repeats} "
        "alternating runs.",
        f"Peer: {open_clip_kind()}.",
        "",
        f"| loader | images/s, {a.workers} workers (median) | runs | ratio "
        "| CPU ms / image, in-process (median) | runs |",
        "|---|---:|---|---:|---:|---|",
        f"| contrastkit `wds:` stream | {ours:.0f} | {', '.join(f'{r:.0f}' for r in runs['contrastkit'])} | "
        f"{ours / theirs:.2f} | {ours_cpu:.2f} | {', '.join(f'{r:.2f}' for r in cpu['contrastkit'])} |",
        f"| open_clip wds pipeline | {theirs:.0f} | {', '.join(f'{r:.0f}' for r in runs['open_clip'])} | 1.00 | "
        f"{theirs_cpu:.2f} | {', '.join(f'{r:.2f}' for r in cpu['open_clip'])} |",
        "",
        "images/s: the loaders as used for training (decoding and augmentation in the worker processes). CPU ms / "
        "image: the same loaders with no workers, so this process does all the work and its CPU time is the cost "
        "per image, a number that the load of a shared machine disturbs less than wall-clock rates.",
    ]
    text = "\n".join(lines)
    print(text)
    if a.results:
        write_section(a.results, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
