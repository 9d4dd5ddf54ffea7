"""evaluate_dataset on a tiny shapes-and-colours world, and the report it feeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from contrastkit.data.records import Dataset, Record, ZeroShotTask
from contrastkit.evaluate import (
    Embedder,
    TextEmbeddingCache,
    evaluate_dataset,
    evaluate_dataset_with_embeddings,
    modality_gap,
    write_report,
)

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
SHAPES = {"circle": (255, 255, 255), "square": (0, 0, 0)}
VOCAB = ["red", "green", "blue", "circle", "square"]


class WorldEmbedder:
    """Image: colour one-hot (left pixel) + shape one-hot (right pixel); text: bag of VOCAB words.

    Texts get an extra constant dimension, so the two modalities have a gap.
    Records every call to check chunking, caching and inference mode.
    """

    def __init__(self):
        self.image_batches: list[int] = []
        self.text_batches: list[list[str]] = []

    def embed_images(self, images):
        assert torch.is_inference_mode_enabled()
        self.image_batches.append(len(images))
        rows = torch.zeros(len(images), 6)
        for i, im in enumerate(images):
            colour = next(c for c, rgb in COLOURS.items() if rgb == im.getpixel((0, 0)))
            shape = next(s for s, rgb in SHAPES.items() if rgb == im.getpixel((im.width - 1, 0)))
            rows[i, VOCAB.index(colour)] = 1.0
            rows[i, VOCAB.index(shape)] = 1.0
        return rows / rows.norm(dim=1, keepdim=True)

    def embed_texts(self, texts):
        assert torch.is_inference_mode_enabled()
        self.text_batches.append(list(texts))
        rows = torch.zeros(len(texts), 6)
        rows[:, 5] = 0.5
        for i, t in enumerate(texts):
            for w in t.replace(".", " ").split():
                if w in VOCAB:
                    rows[i, VOCAB.index(w)] += 1.0
        return rows / rows.norm(dim=1, keepdim=True)


def _image(colour, shape):
    im = Image.new("RGB", (8, 8), COLOURS[colour])
    im.paste(SHAPES[shape], (4, 0, 8, 8))
    return im


class WorldDataset:
    """12 records: every colour x shape, twice; captions, negatives, two zero-shot tasks."""

    name = "world"

    def __init__(self, tmp_path=None):
        self.records = []
        combos = [(c, s) for c in COLOURS for s in SHAPES] * 2
        for i, (c, s) in enumerate(combos):
            other_c = "green" if c != "green" else "blue"
            other_s = "square" if s == "circle" else "circle"
            image = _image(c, s)
            if tmp_path is not None and i % 3 == 0:  # some images on disk, loaded lazily
                image.save(tmp_path / f"{i}.png")
                image = tmp_path / f"{i}.png"
            self.records.append(
                Record(
                    image=image,
                    captions=[f"a {c} {s}", f"{s} that is {c}"],
                    neg_captions={
                        "colour": [f"a {other_c} {s}"],
                        "shape": [f"a {c} {other_s}"],
                        "word_order": [f"{s} a {c}"],
                    },
                    key=f"r{i}",
                )
            )
        self.combos = combos

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return self.records[i]

    def zeroshot_tasks(self):
        n = len(self.records)
        return [
            ZeroShotTask(
                "colour",
                list(COLOURS),
                ["a photo of a {} thing.", "something {c}"],
                list(range(n)),
                [list(COLOURS).index(c) for c, _ in self.combos],
            ),
            ZeroShotTask(
                "shape", list(SHAPES), ["a {}"], list(range(n)), [list(SHAPES).index(s) for _, s in self.combos]
            ),
            ZeroShotTask("tail", list(SHAPES), ["a {}"], [10, 11], [0, 1]),
        ]


def test_world_fixtures_satisfy_the_protocols():
    assert isinstance(WorldDataset(), Dataset)
    assert isinstance(WorldEmbedder(), Embedder)


def test_evaluate_dataset_known_answers_chunking_and_caching(tmp_path):
    ds, emb = WorldDataset(tmp_path), WorldEmbedder()
    out = evaluate_dataset_with_embeddings(emb, ds, batch_size=5, progress=False)
    r = out.results
    assert r["n_images"] == 12 and r["n_captions"] == 24 and r["dataset"] == "world"
    # chunking: no call above batch_size, every image embedded exactly once
    assert max(emb.image_batches) <= 5 and sum(emb.image_batches) == 12
    assert all(len(b) <= 5 for b in emb.text_batches)
    sent = [t for b in emb.text_batches for t in b]
    assert len(sent) == len(set(sent)) == r["n_unique_texts"]  # each distinct string embedded once
    assert "a red circle" in sent

    assert r["zeroshot"]["colour"]["acc1"] == 1.0 and r["zeroshot"]["shape"]["acc1"] == 1.0
    assert math.isnan(r["zeroshot"]["colour"]["acc5"])  # 3 classes
    assert r["zeroshot"]["tail"]["n_samples"] == 2

    # Every image has an identical twin and captions repeat: each text query ties its image with the twin
    # (hit@1 = 1/2); each image ties its 2 captions with the twin's 2 (hit@1 = 1 - C(2,1)/C(4,1) = 1/2).
    rt = r["retrieval"]
    assert rt["image_retrieval_recall@1"] == pytest.approx(0.5)
    assert rt["text_retrieval_recall@1"] == pytest.approx(0.5)
    assert rt["image_retrieval_recall@5"] == rt["text_retrieval_recall@5"] == 1.0

    comp = r["compositional"]
    assert comp["accuracy"] == {"colour": 1.0, "shape": 1.0, "word_order": 0.0}  # bag of words: swap is a tie
    assert comp["n_pairs"] == {"colour": 12, "shape": 12, "word_order": 12}
    assert comp["macro_accuracy"] == pytest.approx(2 / 3)

    assert out.image_emb.shape == out.text_emb.shape == (12, 6)
    assert r["geometry"]["modality_gap"] == pytest.approx(modality_gap(out.image_emb, out.text_emb))
    assert r["geometry"]["modality_gap"] > 0.1
    assert r["geometry"]["linear_separability"] == 1.0  # the text-only dimension separates them


def test_max_records_restricts_records_and_tasks():
    emb = WorldEmbedder()
    r = evaluate_dataset(emb, WorldDataset(), max_records=6, progress=False)
    assert r["n_images"] == 6 and sum(emb.image_batches) == 6
    assert r["zeroshot"]["colour"]["n_samples"] == 6
    assert "tail" not in r["zeroshot"]  # its records (10, 11) were not evaluated
    assert r["retrieval"]["image_retrieval_recall@1"] == 1.0  # no twins among the first 6


def test_text_cache_embeds_each_string_once_and_validates_output():
    emb = WorldEmbedder()
    cache = TextEmbeddingCache(emb, batch_size=2, progress=False)
    a = cache(["a red circle", "a blue square", "a red circle"])
    b = cache(["a blue square", "green"])
    assert torch.equal(a[0], a[2]) and torch.equal(a[1], b[0])
    assert cache.n_embedded == 3 and [len(x) for x in emb.text_batches] == [2, 1]

    class Unnormalised(WorldEmbedder):
        def embed_texts(self, texts):
            return 3.0 * super().embed_texts(texts)

    with pytest.raises(ValueError, match="L2-normalised"):
        TextEmbeddingCache(Unnormalised(), progress=False)(["red"])


def test_missing_image_file_names_the_record(tmp_path):
    ds = WorldDataset()
    ds.records[2] = Record(image=tmp_path / "nope.png", captions=["a red circle"], key="broken-one")
    with pytest.raises(FileNotFoundError, match="broken-one"):
        evaluate_dataset(WorldEmbedder(), ds, progress=False)


# ---------------------------------------------------------------------------------------------- report


def _log(path):
    lines = [json.dumps({"step": s, "loss": 2.5 * 0.97**s + 0.05 * (s % 3), "lr": 1e-3}) for s in range(60)]
    lines += [
        json.dumps({"step": s, "eval/zeroshot_acc1": 0.3 + s / 200, "eval/modality_gap": 1.0 - s / 100})
        for s in (0, 20, 40, 59)
    ]
    lines.append('{"step": 60, "loss": 0.')  # truncated last line of a killed run
    path.write_text("\n".join(lines) + "\n")
    return path


def _colour_fraction(png, rgb, tol=40):
    px = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).int()
    return ((px - torch.tensor(rgb)).abs() <= tol).all(dim=-1).float().mean().item()


@pytest.mark.slow
def test_write_report_files_keys_and_plots(tmp_path):
    out = evaluate_dataset_with_embeddings(WorldEmbedder(), WorldDataset(), progress=False)
    run = tmp_path / "run"
    rep = write_report(
        run,
        out.results,
        config={"model": {"dim": 6}, "lr": 1e-3},
        timing={"train_seconds": 12.5},
        metrics_log=_log(tmp_path / "metrics.jsonl"),
        image_emb=out.image_emb,
        text_emb=out.text_emb,
    )

    data = json.loads((run / "report.json").read_text())  # strict JSON: NaN written as null
    for key in ("zeroshot", "retrieval", "compositional", "geometry", "config", "timing", "n_images", "plots"):
        assert key in data, key
    assert data == rep
    assert data["zeroshot"]["colour"]["acc5"] is None
    assert data["config"]["model"]["dim"] == 6 and data["timing"]["train_seconds"] == 12.5
    assert data["metrics_log_skipped_lines"] == 1
    assert set(data["plots"]) >= {"loss_curve", "embedding_gap", "similarity_hist", "confusion/colour"}

    for name in ("loss_curve.png", "embedding_gap.png", "similarity_hist.png", "confusion_colour.png"):
        path = run / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 400 and im.height > 300
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20)) > 50, name  # not a blank canvas
    # both modality colours are drawn (blue image points, orange text points)
    assert _colour_fraction(run / "embedding_gap.png", (31, 119, 180)) > 0.0005
    assert _colour_fraction(run / "embedding_gap.png", (255, 127, 14)) > 0.0005

    md = (run / "report.md").read_text()
    for link in ("](loss_curve.png)", "](embedding_gap.png)", "](similarity_hist.png)", "](confusion_colour.png)"):
        assert link in md
    for heading in ("## Zero-shot classification", "## Retrieval", "## Compositional", "## Embedding geometry"):
        assert heading in md
    assert "| colour | 12 | 3 | 100.00 | — | 100.00 |" in md
    assert "| word_order | 12 | 0.00 |" in md
    assert "| 1 | 50.00 | 50.00 |" in md  # retrieval recall@1 both ways


def test_write_report_without_embeddings_or_log(tmp_path):
    rep = write_report(tmp_path, {"retrieval": {"image_retrieval_recall@1": 0.25, "text_retrieval_recall@1": 0.5}})
    assert rep["plots"] == {} and rep["config"] == {} and rep["zeroshot"] == {}
    assert (tmp_path / "report.md").read_text().count("| 1 | 25.00 | 50.00 |") == 1
    assert not list(tmp_path.glob("*.png"))


def test_geometry_gets_temperature_and_first_task_labels_and_retrieval_a_curve():
    out = evaluate_dataset_with_embeddings(
        WorldEmbedder(), WorldDataset(), progress=False, temperature=0.5, curve_ks=(1, 2, 50)
    )
    geo = out.results["geometry"]
    assert geo["temperature"] == 0.5 and geo["tolerance_labels"] == "colour" and geo["n_labelled"] == 12
    # records of one colour share the colour one-hot; their shape pixel differs -> tolerance in (0, 1)
    assert 0.0 < geo["tolerance_image"] < 1.0
    assert 0.0 < geo["hardness_top1"] <= 1.0 and 1.0 <= geo["effective_negatives"] <= 11.0
    curve = out.results["retrieval"]["recall_curve"]
    assert curve["k"] == [1, 2] and curve["image_retrieval"][0] == out.results["retrieval"]["image_retrieval_recall@1"]
