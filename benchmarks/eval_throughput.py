"""Zero-shot evaluation throughput: contrastkit eval vs CLIP_benchmark on the same model and image files.

    python benchmarks/eval_throughput.py                                 # ViT-B-32, 128 images, writes RESULTS.md
    python benchmarks/eval_throughput.py --model ViT-B-16 --images 512 --results ''

Model: an open_clip architecture (random weights: throughput does not depend on them; no download),
saved to safetensors and loaded by both sides from that file. Data: JPEG files in class folders
(``--classes`` classes of coloured blocks at 256 px). Task: zero-shot classification with
``--templates`` of OpenAI's ImageNet templates, fp32 (CLIP_benchmark's ``amp`` off: on CPU it would be
bfloat16), ``--batch-size`` images per forward, ``--workers`` DataLoader workers on both sides.

- peer: ``clip_benchmark.metrics.zeroshot_classification.evaluate`` (class weights, then a DataLoader of
  torchvision ``ImageFolder`` with the model's preprocessing);
- contrastkit, cold: ``run_suite`` (``contrastkit eval --task zeroshot``) with an empty feature cache;
- contrastkit, warm: the same call again, features read back from the cache (a re-evaluation, e.g.
  with other templates or after a crash).

images/s = images / wall seconds of the evaluation call (model loading excluded, one warm-up forward
per model first), best of ``--repeats`` runs alternating which side goes first; the metrics of both
sides are checked equal. The table goes to benchmarks/RESULTS.md
under "Evaluation throughput".
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from PIL import Image

from results_file import command_line, write_section

COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
]


def make_images(root: Path, n: int, n_classes: int, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    names = [f"class_{c:02d}" for c in range(n_classes)]
    for i in range(n):
        c = i % n_classes
        base = torch.tensor(COLOURS[c % len(COLOURS)]).view(1, 1, 3)
        arr = (base + torch.randint(-40, 40, (8, 8, 3), generator=g)).clamp(0, 255).to(torch.uint8).numpy()
        folder = root / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).resize((256, 256), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    return names


def _accuracy_numpy2(output, target, topk=(1,)):
    """CLIP_benchmark's accuracy with .item(): its float(<1-element array>) fails under numpy 2."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / len(target) for k in topk]


def run_peer(model, tokenizer, preprocess, root: Path, classnames, templates, args) -> tuple[float, dict]:
    from clip_benchmark.metrics import zeroshot_classification
    from torchvision.datasets import ImageFolder

    zeroshot_classification.accuracy = _accuracy_numpy2
    ds = ImageFolder(str(root), transform=preprocess)
    ds.classes = classnames
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    device = str(next(model.parameters()).device.type)
    t0 = time.perf_counter()
    metrics = zeroshot_classification.evaluate(
        model, loader, tokenizer, classnames, [t.replace("{}", "{c}") for t in templates], device, amp=False
    )
    return time.perf_counter() - t0, metrics


def run_contrastkit(loaded, spec: str, classnames, templates, cache_dir: Path, args) -> tuple[float, dict]:
    from contrastkit.config import DataConfig
    from contrastkit.evaluate.cache import FeatureCache
    from contrastkit.evaluate.suite import EvalRequest, run_suite

    req = EvalRequest(
        tasks=["zeroshot"],
        data=spec,
        data_config=DataConfig(eval_size=10**12),
        classnames=classnames,
        templates=templates,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=False,
    )
    t0 = time.perf_counter()
    out = run_suite(loaded, req, cache=FeatureCache(cache_dir))
    seconds = time.perf_counter() - t0
    (metrics,) = out.results["zeroshot"].values()
    return seconds, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--images", type=int, default=128, help="number of images")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--templates", type=int, default=8, help="first N OpenAI ImageNet templates")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (both sides)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best counts")
    parser.add_argument("--results", default="benchmarks/RESULTS.md", help="results file to update ('' to skip)")
    args = parser.parse_args(argv)

    import open_clip
    from safetensors.torch import save_file

    from contrastkit.evaluate.templates import OPENAI_IMAGENET_TEMPLATES
    from contrastkit.models.embedder import resolve_device
    from contrastkit.models.load import load_model

    load_at_start = os.getloadavg()[0]  # other jobs on the machine slow both sides alike
    device = resolve_device(args.device)
    templates = list(OPENAI_IMAGENET_TEMPLATES[: args.templates])
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        names = make_images(tmp_path / "images", args.images, args.classes)
        classnames = [n.replace("_", " ") for n in names]
        torch.manual_seed(0)
        model = open_clip.create_model(args.model)
        weights = tmp_path / "weights.safetensors"
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(weights))
        del model
        peer_model, _, preprocess = open_clip.create_model_and_transforms(
            args.model, pretrained=str(weights), device=device
        )
        peer_model.eval()
        tokenizer = open_clip.get_tokenizer(args.model)
        loaded = load_model(f"open_clip:{args.model}", weights, device=device, batch_size=args.batch_size)
        spec = f"folder:{tmp_path / 'images'}"

        with torch.inference_mode():  # warm-up: first-call allocations and thread pools, both models
            first = preprocess(Image.open(next((tmp_path / "images").rglob("*.jpg"))).convert("RGB"))
            peer_model.encode_image(first.unsqueeze(0).to(device))
            loaded.embedder.embed_pixels(first.unsqueeze(0))

        peer_s, ck_cold_s, ck_warm_s = [], [], []
        for r in range(args.repeats):

            def peer() -> dict:
                s, metrics = run_peer(
                    peer_model, tokenizer, preprocess, tmp_path / "images", classnames, templates, args
                )
                peer_s.append(s)
                return metrics

            def ours() -> tuple[dict, dict]:
                cache = tmp_path / f"cache{r}"
                s, cold = run_contrastkit(loaded, spec, classnames, templates, cache, args)
                ck_cold_s.append(s)
                s, warm = run_contrastkit(loaded, spec, classnames, templates, cache, args)
                ck_warm_s.append(s)
                return cold, warm

            if r % 2 == 0:  # alternate which side runs first
                peer_metrics = peer()
                ck_metrics, warm_metrics = ours()
            else:
                ck_metrics, warm_metrics = ours()
                peer_metrics = peer()
            print(
                f"repeat {r}: peer {peer_s[-1]:.1f}s, contrastkit cold {ck_cold_s[-1]:.1f}s, warm {ck_warm_s[-1]:.2f}s",
                file=sys.stderr,
            )
        for key in ("acc1", "acc5", "mean_per_class_recall"):
            a, b, c = peer_metrics[key], ck_metrics[key], warm_metrics[key]
            if math.isnan(a):
                assert math.isnan(b) and math.isnan(c), key
            else:
                assert abs(a - b) < 1e-9 and b == c, (key, a, b, c)

    n = args.images
    rows = [
        ("CLIP_benchmark zeroshot_classification.evaluate", peer_s),
        ("contrastkit eval, empty feature cache", ck_cold_s),
        ("contrastkit eval, features from the cache", ck_warm_s),
    ]
    best_peer = min(peer_s)
    table = ["| pipeline | images/s (best) | seconds per run | ratio to CLIP_benchmark |", "|---|---:|---|---:|"]
    for name, secs in rows:
        table.append(
            f"| {name} | {n / min(secs):.1f} | {', '.join(f'{s:.2f}' for s in secs)} | {best_peer / min(secs):.2f} |"
        )
    cmd = command_line("eval_throughput.py", argv)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}, load average {load_at_start:.1f} at the start"
    )
    body = "\n".join(
        [
            f"Command: `{cmd}` ({date.today().isoformat()}; {machine}).",
            "",
            f"Zero-shot classification of {n} JPEG images (256 px, {args.classes} classes) with open_clip "
            f"{args.model} (random weights from a local safetensors file, fp32), {len(templates)} OpenAI ImageNet "
            f"templates, batch {args.batch_size}, {args.workers} DataLoader workers on both sides. Wall time of the "
            f"evaluation call including the class-weight text forwards; best of {args.repeats} alternating runs. "
            "acc1 / acc5 / mean_per_class_recall of both sides checked equal.",
            "",
            *table,
            "",
            "The cold run does the same forwards as CLIP_benchmark (images once, prompts once) plus hashing the "
            "files for the cache key and writing the cache; the warm run is a re-evaluation of the same model on "
            "the same files (other templates, other metrics, a crashed run) and only reads the features back.",
        ]
    )
    print(body)
    if args.results:
        write_section(args.results, "Evaluation throughput", body)
        print(f"written to {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
