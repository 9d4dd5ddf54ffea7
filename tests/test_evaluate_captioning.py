"""Captioning scores (pycocoevalcap BLEU-4, CIDEr-D) and greedy captions of a CoCa run."""

from __future__ import annotations

import pytest
import torch

from contrastkit.config import load_config
from contrastkit.data.sources import open_source
from contrastkit.evaluate.captioning import UNKNOWN, caption_scores, evaluate_captioning
from contrastkit.models.build import build_model
from contrastkit.models.tokenizer import HashedWordTokenizer
from contrastkit.objectives import build


def test_scores_rank_exact_partial_and_wrong_captions():
    refs = [["a red circle left of a blue square", "a blue square right of a red circle"], ["a large green star"]]
    exact = caption_scores(refs, ["a red circle left of a blue square", "a large green star"])
    partial = caption_scores(refs, ["a red circle left of a green square", "a small green star"])
    wrong = caption_scores(refs, ["cyan diamond", "white cross above"])
    assert exact["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert exact["cider"] > partial["cider"] > wrong["cider"] >= 0
    assert exact["bleu4"] > partial["bleu4"] > wrong["bleu4"]
    with pytest.raises(ValueError, match="1 candidates for 2 reference sets"):
        caption_scores(refs, ["x"])


def test_tokenizer_words_are_what_it_hashes():
    tok = HashedWordTokenizer()
    assert tok.words("A red circle, left of it") == ["a", "red", "circle", ",", "left", "of", "it"]
    assert tok.encode("A red circle")[1:-1] == [tok.word_id(w) for w in ("a", "red", "circle")]


def test_greedy_captions_of_a_coca_model_are_read_back_and_scored():
    cfg = load_config("configs/coca.yaml", ["data.image_size=32", "model.width=32", "model.embed_dim=16"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size)
    spec = dict(cfg.objective[1], width=32, layers=1, heads=2, context_length=8)
    objective = build([cfg.objective[0], spec])
    records = [open_source("synthetic:shapes", "test", cfg.data)[i] for i in range(6)]
    with torch.no_grad():  # materialise the decoder's lazy image projection
        decoder = objective.terms[1]
        decoder.encode_image(model.image_tower.forward_tokens(torch.zeros(1, 3, 32, 32)))
    out = evaluate_captioning(model, objective, records, batch_size=4)
    assert out["n_images"] == 6 and set(out) >= {"bleu4", "cider", "examples"}
    vocabulary = {w for r in records for c in r.captions for w in HashedWordTokenizer.words(c)} | {UNKNOWN}
    assert all(set(e["caption"].split()) <= vocabulary for e in out["examples"])
    with pytest.raises(ValueError, match="caption decoder"):
        evaluate_captioning(model, build([{"name": "clip"}]), records)
