"""The bar: contrastkit eval equals CLIP_benchmark on the same model and the same image files.

Model: a tiny open_clip ViT (tests/helpers.py) with seeded random weights,
saved to safetensors and loaded through ``open_clip:<name> --pretrained FILE``.
Data: PNG files on disk. CLIP_benchmark's own functions
(``clip_benchmark.metrics.zeroshot_classification.evaluate``,
``zeroshot_retrieval.evaluate``, ``image_caption_selection.evaluate`` with its
``SugarCrepe`` dataset) run on a DataLoader of the same files with the model's
preprocessing, ``amp=False`` (on CPU its amp is bfloat16). Labels and captions
are chosen from the model's own scores so that the metrics are away from 0 and 1
(a random model would otherwise sit at chance, where equality says little).
Their zero-shot ``accuracy`` calls ``float()`` on a 1-element array, which
numpy 2 refuses; the test swaps in the same formula with ``.item()``.
"""

from __future__ import annotations

import json
import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from clip_benchmark.datasets.sugar_crepe import SugarCrepe
from clip_benchmark.metrics import image_caption_selection, zeroshot_classification, zeroshot_retrieval
from PIL import Image

from contrastkit.data.records import Record, ZeroShotTask
from contrastkit.evaluate.suite import EvalRequest, run_suite
from contrastkit.models.load import load_model
from helpers import save_tiny_open_clip

N_IMAGES = 24


def image_captions_collate_fn(batch):
    """clip_benchmark.datasets.builder.image_captions_collate_fn (that module needs ``requests`` to import)."""
    images, texts = list(zip(*batch))
    return torch.utils.data.default_collate(images), texts


class Files(torch.utils.data.Dataset):
    """(preprocessed image, target) from files, CLIP_benchmark's dataset shape (``classes`` attribute)."""

    def __init__(self, paths, targets, transform, classes):
        self.paths, self.targets, self.transform, self.classes = paths, targets, transform, classes

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), self.targets[i]


class RecordsData:
    """A contrastkit Dataset over the same files."""

    name = "files"

    def __init__(self, records, tasks=()):
        self.records, self.tasks = records, list(tasks)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def zeroshot_tasks(self):
        return self.tasks


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cb")
    name, weights = save_tiny_open_clip(root)
    g = torch.Generator().manual_seed(1)
    paths = []
    for i in range(N_IMAGES):  # blocky random images, some structure for the ViT patches
        arr = (torch.rand(4, 4, 3, generator=g) * 255).to(torch.uint8).numpy()
        path = root / f"img{i:03d}.png"
        Image.fromarray(arr).resize((40, 40), Image.NEAREST).save(path)
        paths.append(path)
    loaded = load_model(f"open_clip:{name}", weights, device="cpu")
    reference = open_clip.create_model(name, pretrained=str(weights))
    reference.eval()
    return {
        "name": name,
        "weights": weights,
        "paths": paths,
        "model": loaded,
        "reference": reference,
        "tokenizer": open_clip.get_tokenizer(name),
        "preprocess": loaded.embedder.preprocess,
        "root": root,
    }


def _reference_logits(s, classnames, templates):
    clf = zeroshot_classification.zero_shot_classifier(
        s["reference"], s["tokenizer"], classnames, templates, "cpu", amp=False
    )
    loader = torch.utils.data.DataLoader(Files(s["paths"], [0] * N_IMAGES, s["preprocess"], classnames), batch_size=8)
    logits, _ = zeroshot_classification.run_classification(s["reference"], clf, loader, "cpu", amp=False)
    return logits


def _accuracy_numpy2(output, target, topk=(1,)):
    """CLIP_benchmark's ``accuracy`` with ``.item()``: its ``float(<1-element array>)`` fails under numpy 2."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).item() / n for k in topk]


@pytest.mark.parametrize("n_classes", [3, 7])
def test_zeroshot_equals_clip_benchmark(setup, n_classes, monkeypatch):
    s = setup
    monkeypatch.setattr(zeroshot_classification, "accuracy", _accuracy_numpy2)
    classnames = [f"thing number {c}" for c in range(n_classes)]
    templates = ["a photo of a {c}.", "a drawing of the {c}.", "{c}!"]
    # Labels: the reference's top-1 for 60% of the images, a seeded other class for the rest,
    # and the classes imbalanced, so acc1, acc5 and mean_per_class_recall are all informative.
    pred = _reference_logits(s, classnames, templates).argmax(1)
    g = torch.Generator().manual_seed(n_classes)
    noisy = torch.rand(N_IMAGES, generator=g) < 0.4
    other = (pred + torch.randint(1, n_classes, (N_IMAGES,), generator=g)) % n_classes
    targets = torch.where(noisy, other, pred)

    loader = torch.utils.data.DataLoader(Files(s["paths"], targets.tolist(), s["preprocess"], classnames), batch_size=8)
    ref = zeroshot_classification.evaluate(
        s["reference"], loader, s["tokenizer"], classnames, templates, "cpu", amp=False
    )

    records = [Record(image=p, captions=[], key=p.name) for p in s["paths"]]
    task = ZeroShotTask("files", classnames, templates, list(range(N_IMAGES)), targets.tolist())
    out = run_suite(
        s["model"], EvalRequest(tasks=["zeroshot"], dataset=RecordsData(records, [task]), batch_size=5, progress=False)
    )
    got = out.results["zeroshot"]["files"]
    assert 0.3 < ref["acc1"] < 0.9 and abs(ref["mean_per_class_recall"] - ref["acc1"]) > 1e-3
    for key in ("acc1", "acc5", "mean_per_class_recall"):
        if math.isnan(ref[key]):
            assert n_classes < 5 and math.isnan(got[key])
        else:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    (dump,) = out.task_results
    assert dump["task"] == "zeroshot_classification" and dump["model"] == f"open_clip:{s['name']}"
    assert dump["pretrained"] == str(s["weights"]) and dump["dataset"] == "files"


def test_retrieval_equals_clip_benchmark_with_several_captions_per_image(setup):
    s = setup
    pool = [f"caption {w} {i}" for i, w in enumerate(["red", "blue", "grid", "noise", "tile", "dots"] * 12)]
    with torch.no_grad():
        text = F.normalize(s["reference"].encode_text(s["tokenizer"](pool)), dim=-1)
        pixels = torch.stack([s["preprocess"](Image.open(p).convert("RGB")) for p in s["paths"]])
        image = F.normalize(s["reference"].encode_image(pixels), dim=-1)
    scores = image @ text.T
    # Every caption string is used once (identical strings would tie exactly, where any top-k order is
    # as good as another); every other image gets its favourite unused caption, so recall is not at chance.
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(len(pool), generator=g).tolist()
    used: set[int] = set()
    captions = []
    for i in range(N_IMAGES):
        idx = []
        if i % 2 == 0:
            fav = max((j for j in range(len(pool)) if j not in used), key=lambda j: float(scores[i, j]))
            idx.append(fav)
            used.add(fav)
        while len(idx) < 1 + i % 3:  # 1 to 3 captions per image
            j = order.pop()
            if j not in used:
                idx.append(j)
                used.add(j)
        captions.append([pool[j] for j in idx])

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return N_IMAGES

        def __getitem__(self, i):
            with Image.open(s["paths"][i]) as im:
                return s["preprocess"](im.convert("RGB")), captions[i]

    loader = torch.utils.data.DataLoader(Pairs(), batch_size=8, collate_fn=image_captions_collate_fn)
    ks = [1, 5, 10]
    ref = zeroshot_retrieval.evaluate(s["reference"], loader, s["tokenizer"], "cpu", amp=False, recall_k_list=ks)

    records = [Record(image=p, captions=c, key=p.name) for p, c in zip(s["paths"], captions)]
    out = run_suite(
        s["model"],
        EvalRequest(tasks=["retrieval"], dataset=RecordsData(records), recall_ks=ks, batch_size=7, progress=False),
    )
    got = out.results["retrieval"]
    for direction in ("image", "text"):  # informative: not all 0, not all 1, rising with k
        r = [ref[f"{direction}_retrieval_recall@{k}"] for k in ks]
        assert 0 < r[0] < r[1] < r[2] < 1, direction
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key  # theirs: float32 means
    assert got["n_texts"] == sum(len(c) for c in captions)
    assert out.task_results[0]["task"] == "zeroshot_retrieval"


def test_sugarcrepe_equals_clip_benchmark_caption_selection(setup):
    s = setup
    ann = {
        str(i * 3): {
            "filename": p.name,
            "caption": f"a picture number {i}",
            "negative_caption": f"a picture number {(i * 7) % N_IMAGES} here",
        }
        for i, p in enumerate(s["paths"])
    }
    path = s["root"] / "replace_att.json"
    path.write_text(json.dumps(ann))
    ds = SugarCrepe(str(s["root"]), str(path), transform=s["preprocess"])
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=image_captions_collate_fn)
    ref = image_caption_selection.evaluate(s["reference"], loader, s["tokenizer"], "cpu", amp=False)

    out = run_suite(
        s["model"],
        EvalRequest(tasks=["compositional"], sugarcrepe=[path], images=s["root"], batch_size=6, progress=False),
    )
    got = out.results["compositional_benchmarks"]["sugarcrepe"]
    assert 0.1 < ref["text_acc"] < 0.9
    assert got["accuracy"] == {"replace_att": pytest.approx(ref["text_acc"], abs=1e-6)}  # theirs: a float32 mean
    assert got["n_pairs_total"] == N_IMAGES
