"""CONTRIBUTING.md's "Add an Encoded field" works as written and touches 3 files of src/.

The test copies the package, applies the three changes the guide shows (a field in the table,
its per-record value, a term that reads it) and trains with the new term in a fresh process:
the engine's encode, gather, exact accumulation, preflight and training-set construction must
pick the field up from the table with no other change.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "CONTRIBUTING.md").read_text()

FIELD = """\
    caption_count: Tensor | None = _declare(FieldSpec(  # B ints: the record's number of true captions
        "data", record="captions", describe="captions", batch_key="caption_count"))
"""
ROW_FUNCTION = '''\
def caption_count(record: Record, context: RowContext) -> Tensor:
    """How many true captions the record has."""
    return torch.tensor(len(record.captions), dtype=torch.long)
'''
ROW_ENTRY = """\
    "caption_count": caption_count,
"""
TERM = '''\
"""CLIP whose rows are weighted by 1 / (the record's number of true captions): CONTRIBUTING.md's example."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term


@register_term
class CaptionWeightedClip(Term):
    name = "caption_weighted_clip"
    description = "symmetric InfoNCE, each row weighted by 1 / its record's number of true captions"
    requires: tuple[str, ...] = ("caption_count",)

    def loss(self, enc: Encoded) -> Tensor:
        logits = enc.logit_scale * enc.image @ enc.text.T
        target = torch.arange(logits.shape[0], device=logits.device)
        per_row = (F.cross_entropy(logits, target, reduction="none")
                   + F.cross_entropy(logits.T, target, reduction="none")) / 2
        weight = 1.0 / enc.caption_count.clamp_min(1).to(per_row.dtype)
        return (weight * per_row).sum() / weight.sum()
'''

CHECK = """
import json, sys
import torch
from contrastkit.data.batch import collate
from contrastkit.data.pipeline import StepBatchSampler
from contrastkit.engine.encode import encode_batch
from contrastkit.engine.recipe import load_recipe
from contrastkit.engine.setup import training_set_for
from contrastkit.engine.trainer import train
from contrastkit.data.sources import open_source
from contrastkit.models.build import build_model
from contrastkit.objectives import build

small = ["data.train_size=64", "data.eval_size=16", "data.image_size=32", "model.width=32", "model.embed_dim=16",
         "train.batch_size=16", "train.steps=2", "train.warmup_steps=1", "train.progress=false",
         "eval.max_records=16", "train.checkpoint_every=0", "train.log_every=1"]
cfg = load_recipe("configs/demo.yaml", small + ["objective=[{name: caption_weighted_clip}]"])
objective = build(cfg.objective)
model = build_model(cfg.model, cfg.data.image_size)
data = open_source(cfg.data.source, "train", cfg.data)
dataset = training_set_for(cfg, data, model, objective)
keys = next(iter(StepBatchSampler(len(data), 8, 1, 0)))
enc = encode_batch(model, collate([dataset[k] for k in keys]), objective.requires)
expected = [len(data[i].captions) for _, i in keys]
report = train(load_recipe("configs/demo.yaml", small + ["objective=[{name: caption_weighted_clip}]",
                                                         "train.accum_steps=2"]), sys.argv[1])
print(json.dumps({"counts": enc.caption_count.tolist(), "expected": expected,
                  "loss": objective(enc).terms["caption_weighted_clip"].item(), "n_images": report["n_images"]}))
"""


def insert_before(text: str, marker: str, addition: str) -> str:
    assert text.count(marker) == 1, f"the guide's anchor {marker!r} is not unique in the source"
    return text.replace(marker, addition + marker)


def test_the_guide_shows_the_code_this_test_applies():
    for snippet in (FIELD, ROW_FUNCTION, ROW_ENTRY, TERM):
        assert snippet in GUIDE, f"CONTRIBUTING.md no longer shows:\n{snippet}"


@pytest.mark.slow
def test_a_new_data_field_reaches_a_new_term_through_three_files(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "contrastkit", src / "contrastkit", ignore=shutil.ignore_patterns("__pycache__"))
    package = src / "contrastkit"
    encoded = package / "encoded.py"
    encoded.write_text(insert_before(encoded.read_text(), "    # Tokens and cells.\n", FIELD))
    rows = package / "data" / "row_values.py"
    text = insert_before(rows.read_text(), "ROW_VALUES: dict[", ROW_FUNCTION + "\n\n")
    rows.write_text(text.replace('    "labels": class_label,\n', '    "labels": class_label,\n' + ROW_ENTRY))
    (package / "objectives" / "caption_weighted.py").write_text(TERM)
    changed = [
        p.relative_to(src)
        for p in sorted(package.rglob("*.py"))
        if not (ROOT / "src" / p.relative_to(src)).exists()
        or (ROOT / "src" / p.relative_to(src)).read_text() != p.read_text()
    ]
    assert [str(p) for p in changed] == [
        "contrastkit/data/row_values.py",
        "contrastkit/encoded.py",
        "contrastkit/objectives/caption_weighted.py",
    ]

    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "run")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["counts"] == out["expected"] and max(out["expected"]) > 1  # the records' own counts, row by row
    assert out["loss"] > 0 and out["n_images"] == 16
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "loss/caption_weighted_clip" in log[-1]  # trained with accumulation (GradCache) through the table
