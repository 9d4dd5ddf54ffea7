from pathlib import Path

import pytest

from contrastkit.config import ConfigError, load_config
from contrastkit.engine.recipe import load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_demo_config_loads_and_overrides_apply():
    cfg = load_config(CONFIGS / "demo.yaml", ["train.steps=7", "model.embed_dim=64", "train.lr=1e-4"])
    assert cfg.train.steps == 7
    assert cfg.model.embed_dim == 64
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.objective[0]["name"] == "clip"


def test_override_reaches_into_objective_list():
    cfg = load_config(CONFIGS / "demo.yaml", ["objective.0.label_smoothing=0.1"])
    assert cfg.objective[0]["label_smoothing"] == 0.1


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.stepz=3", "train.stepz"),
        ("train.steps=abc", "train.steps: expected an integer"),
        ("train.steps=0", "train.steps: must be positive"),
        ("data.on_error=ignore", "data.on_error"),
        ("model.logit_scale_max=0.5", "model.logit_scale_max"),
        ("train.betas=[0.9]", "train.betas"),
        ("objective=[{name: clipp}]", "unknown term 'clipp'"),
        ("objective=[{name: clip, smoothing: 0.1}]", "unknown parameter(s) smoothing"),
        ("objective=[{name: clip, label_smoothing: 2}]", "label_smoothing"),
        ("bogus=1", "unknown key 'bogus'"),
    ],
)
def test_invalid_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_recipe(CONFIGS / "demo.yaml", [override])
    assert fragment in str(err.value)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match="did you mean train.batch_size"):
        load_config(None, ["train.batchsize=3"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["train.steps"])


def test_every_shipped_config_is_valid():
    for path in sorted(CONFIGS.glob("*.yaml")):
        load_recipe(path)


def test_config_checks_its_own_keys_and_the_recipe_check_the_terms():
    """config.py knows nothing of the objective catalogue: an unknown term passes load_config, not load_recipe."""
    cfg = load_config(CONFIGS / "demo.yaml", ["objective=[{name: clipp}]", "data.image_augment=simclear"])
    assert cfg.objective == [{"name": "clipp"}]
    with pytest.raises(ConfigError, match="data.image_augment: 'simclear' is not allowed"):
        load_recipe(CONFIGS / "demo.yaml", ["data.image_augment=simclear"])
