"""Dense probe: object maps, cell labels, segmentation metrics, the probe, the suite task and open_clip tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import jaccard_score

from contrastkit.config import DataConfig, ModelConfig
from contrastkit.data.shapes import SyntheticShapes
from contrastkit.data.shapes.grammar import Scene, SceneObject
from contrastkit.data.shapes.render import BACKGROUND, COLOUR_RGB, object_map, render_scene
from contrastkit.evaluate.dense_probe import cell_labels, fit_cell_probe, grid_side, segmentation_metrics
from contrastkit.evaluate.result_files import write_suite
from contrastkit.evaluate.suite import EvalRequest, run_suite
from contrastkit.models.build import build_model
from contrastkit.models.loaded import LoadedModel


def test_object_map_is_the_exact_segmentation_of_the_rendering():
    ds = SyntheticShapes("train", size=40, image_size=64)
    for i in range(40):
        record = ds[i]
        scene = Scene.from_meta(record.meta)
        assert scene == ds.scene(i)  # from_meta inverts to_meta
        ids = np.asarray(object_map(scene))
        pixels = np.asarray(render_scene(scene))
        assert np.array_equal(ids > 0, (pixels != BACKGROUND).any(-1))
        for k, obj in enumerate(scene.objects, start=1):  # each object's pixels have its colour
            assert {tuple(p) for p in pixels[ids == k]} <= {COLOUR_RGB[obj.colour]}


def test_a_later_object_covers_an_earlier_one():
    a = SceneObject("square", "red", "large", 16.0, 16.0, 10.0)
    b = SceneObject("square", "blue", "small", 20.0, 20.0, 4.0)
    ids = np.asarray(object_map(Scene((a, b), "single", 32)))
    assert ids[20, 20] == 2 and ids[10, 10] == 1 and ids[0, 0] == 0


def test_cell_labels_take_the_dominant_object_above_the_share():
    ids = np.zeros((8, 8), dtype=np.uint8)
    ids[0:4, 0:4] = 1  # cell (0, 0): object 1 fills it
    ids[0:1, 4:8] = 2  # cell (0, 1): object 2 covers 4 of 16 pixels (25%)
    ids[4:5, 0:2] = 1  # cell (1, 0): object 1 covers 2 of 16 (12.5%)
    ids[4:8, 4:6] = 2  # cell (1, 1): object 2 covers 8, object 1 covers 4
    ids[4:8, 6:7] = 1
    labels = cell_labels(Image.fromarray(ids), ["circle", "star"], ["circle", "square", "star"], 2, min_fraction=0.2)
    assert labels.tolist() == [1, 3, 0, 3]
    assert cell_labels(Image.fromarray(ids), ["circle", "star"], ["circle", "square", "star"], 2, 0.3).tolist() == [
        1,
        0,
        0,
        3,
    ]


def test_segmentation_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 4, 300))
    m = segmentation_metrics(true, pred, ["bg", "a", "b", "c"])
    iou = jaccard_score(true, pred, average=None, labels=[0, 1, 2, 3])
    assert [m["iou"][n] for n in ("bg", "a", "b", "c")] == pytest.approx(iou.tolist())
    assert m["miou"] == pytest.approx(iou.mean())
    assert m["cell_acc"] == pytest.approx(np.mean(true == pred))
    assert m["object_cell_acc"] == pytest.approx(np.mean(true[true > 0] == pred[true > 0]))
    absent = segmentation_metrics(np.array([0, 1]), np.array([0, 1]), ["bg", "a", "never"])
    assert set(absent["iou"]) == {"bg", "a"} and absent["miou"] == 1.0  # a class in neither is not averaged


def test_probe_chooses_c_on_validation_and_refits_on_both():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 5)) * 3
    y = rng.integers(0, 3, 200)
    x = centres[y] + rng.normal(size=(200, 5)) * 2
    probe, c = fit_cell_probe(x[:150], y[:150], x[150:], y[150:], c_grid=(1e-6, 1.0))
    assert c == 1.0  # C = 1e-6 shrinks every weight to zero: the prior wins
    scaled = (x - x.mean(0)) / x.std(0)  # standardised with the statistics of train + val, then refit on both
    direct = LogisticRegression(C=1.0, max_iter=1000).fit(scaled, y)
    assert np.array_equal(probe.predict(x), direct.predict(scaled))
    with pytest.raises(ValueError, match="not a square grid"):
        grid_side(12)


def _tiny_model(**model):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"embed_dim": 16, "width": 32, **model}), image_size=32)


def test_the_suite_runs_the_dense_task_and_draws_its_maps(tmp_path):
    model = _tiny_model()
    loaded = LoadedModel.of_dual_encoder(model, "tiny")
    req = EvalRequest(
        tasks=["dense"],
        data="synthetic:shapes",
        data_config=DataConfig(image_size=32),
        max_records=20,
        max_train_records=30,
        progress=False,
    )
    out = run_suite(loaded, req)
    dense = out.results["dense"]
    assert dense["grid"] == 2 and dense["n_train_images"] == 30
    for attribute in ("shape", "colour", "size"):
        m = dense[attribute]
        assert m["n_cells"] == 20 * 4 and 0 <= m["miou"] <= 1 and 0 <= m["open_vocab_object_cell_acc"] <= 1
    assert {e["task"] for e in out.task_results} == {"dense_probe"}
    assert len(dense["examples"]["true"]) == 6 and len(dense["examples"]["true"][0]) == 4
    report = write_suite(tmp_path, out)
    assert report["plots"]["dense_maps"] == "dense_maps.png"
    with Image.open(tmp_path / "dense_maps.png") as picture:
        assert picture.size[0] > 400
    text = (tmp_path / "report.md").read_text()
    assert "## Dense probe" in text and "![dense probe maps](dense_maps.png)" in text
    assert "dense.shape" not in text  # shown in its own table, not again under "Other results"


def test_dense_task_says_why_it_is_skipped():
    class NoCells:
        def embed_images(self, images):
            return torch.nn.functional.normalize(torch.randn(len(images), 4), dim=-1)

        def embed_texts(self, texts):
            return torch.nn.functional.normalize(torch.randn(len(texts), 4), dim=-1)

    req = EvalRequest(tasks=["dense"], data="synthetic:shapes", data_config=DataConfig(image_size=32), max_records=8)
    out = run_suite(LoadedModel.of_embedder(NoCells()), req)
    assert "per-cell features" in out.results["dense"]["skipped"]


def test_open_clip_vits_give_patch_tokens_in_the_joint_space(tmp_path):
    from helpers import register_tiny_open_clip

    name = register_tiny_open_clip(tmp_path / "cfg")
    model = _tiny_model(image_tower=f"open_clip:{name}", text_tower=f"open_clip:{name}", embed_dim=32).eval()
    pixels = torch.randn(2, 3, 32, 32)
    cells, joint = model.encode_cells(pixels)
    assert cells.shape == (2, 16, 64) and joint.shape == (2, 16, 32)  # (32 / 8)^2 patches, width 64 -> embed 32
    visual = model.image_tower.visual
    assert torch.allclose(joint, torch.nn.functional.normalize(cells @ visual.proj, dim=-1))
    assert visual.output_tokens is False  # the switch is put back
    assert model.encode_image(pixels).shape == (2, 32)  # pooled output again, not (pooled, tokens)
    req = EvalRequest(
        tasks=["dense"],
        data="synthetic:shapes",
        data_config=DataConfig(image_size=32),
        max_records=8,
        max_train_records=10,
        progress=False,
    )
    dense = run_suite(LoadedModel.of_dual_encoder(model, "tiny-vit"), req).results["dense"]
    assert dense["grid"] == 4 and dense["shape"]["n_cells"] == 8 * 16  # the ViT's 4 x 4 patches
