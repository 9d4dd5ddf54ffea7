"""Every shipped recipe trains a few steps on the synthetic world and reports finite losses."""

import json
from pathlib import Path

import pytest

from contrastkit.config import load_config
from contrastkit.engine.trainer import train

pytestmark = pytest.mark.slow

CONFIGS = sorted(Path("configs").glob("*.yaml"))
TINY = [
    "data.train_size=128",
    "data.eval_size=48",
    "data.image_size=32",
    "model.width=32",
    "train.batch_size=16",
    "train.steps=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.progress=false",
    "eval.max_records=32",
    "train.eval_every=0",
    "train.checkpoint_every=0",
]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    train(load_config("configs/demo.yaml", TINY), out)
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_recipe_runs(path, base_run, tmp_path):
    overrides = list(TINY)
    if load_config(path).model.init_from:
        overrides.append(f"model.init_from={base_run}")
    if load_config(path).clusters.sizes:  # 128 records: fewer clusters, re-clustered every step
        overrides += ["clusters.sizes=[4, 8]", "clusters.every=1"]
    cfg = load_config(path, overrides)
    report = train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    terms = {spec.get("label", spec["name"]) for spec in cfg.objective}
    logged = {key[len("loss/") :].split("#")[0] for key in rows[-1] if key.startswith("loss/")}
    assert logged == terms
    assert all(isinstance(rows[-1][f"loss/{t}"], float) for t in terms)
    if cfg.model.image_tower == "none":  # a text model: the text tasks
        assert report["sts"] and report["text_geometry"]
    else:
        assert report["zeroshot"] and report["retrieval"]


def test_missing_inputs_are_named_at_start(tmp_path):
    cfg = load_config("configs/negclip.yaml", TINY + ["data.neg_per_image=0", "model.init_from=null"])
    with pytest.raises(ValueError, match="'negclip' needs neg_text: data.neg_per_image is 0"):
        train(cfg, tmp_path)
    cfg = load_config("configs/cl2l.yaml", TINY + ["data.views=0"])
    with pytest.raises(ValueError, match="'cl2l_local' needs image_view_features: data.views is 0"):
        train(cfg, tmp_path)
    cfg = load_config("configs/hq_clip.yaml", TINY + ["objective.1.num_tags=5"])
    with pytest.raises(ValueError, match="num_tags is 5 but the data has 62 tags"):
        train(cfg, tmp_path)
