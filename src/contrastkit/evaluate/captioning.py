"""Captioning scores of a run whose objective has a caption decoder (CoCa's ``coca_caption``).

Each image is captioned greedily by the decoder (:meth:`~contrastkit.objectives.coca.CocaCaptionTerm.generate`,
cross-attending to the image tower's cell features) and scored against the record's true captions
with the COCO caption metrics of ``pycocoevalcap`` (Vedantam et al. 2015 CIDEr-D, Papineni et al.
2002 BLEU-4), on lower-cased words. The built-in tokenizer hashes words, so generated ids are read
back through the words of the reference captions (an id no reference word has becomes ``<unk>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from ..data.records import Record
from ..models.dual_encoder import DualEncoder
from ..models.tokenizer import BOS, EOS, PAD, HashedWordTokenizer
from ..models.towers import TokenFeatures
from ..objectives import Objective
from ..objectives.coca import CocaCaptionTerm

UNKNOWN = "<unk>"


def caption_scores(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr-D of ``candidates[i]`` against ``references[i]`` (pycocoevalcap; words are
    split on spaces, so pass them tokenized)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("captioning scores need pycocoevalcap: pip install 'contrastkit[captioning]'") from err
    if len(references) != len(candidates) or not candidates:
        raise ValueError(f"caption_scores: {len(candidates)} candidates for {len(references)} reference sets")
    gts = {i: [r.lower() for r in refs] for i, refs in enumerate(references)}
    res = {i: [c.lower()] for i, c in enumerate(candidates)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def _reader(tokenizer: HashedWordTokenizer, records: Sequence[Record]) -> dict[int, str]:
    words = {w for rec in records for c in rec.captions for w in tokenizer.words(c)}
    return {tokenizer.word_id(w): w for w in sorted(words)}


def caption_decoder(objective: Objective) -> CocaCaptionTerm:
    for term in objective.iter_terms():
        if isinstance(term, CocaCaptionTerm):
            return term
    raise ValueError("captioning needs a run whose objective has a caption decoder (coca_caption)")


@torch.inference_mode()
def evaluate_captioning(
    model: DualEncoder, objective: Objective, records: Sequence[Record], batch_size: int = 128
) -> dict[str, Any]:
    """Greedy captions of ``records``' images and their scores; ``examples`` holds the first few."""
    decoder = caption_decoder(objective)
    tokenizer = getattr(model.text_tower, "tokenizer", None)
    if not isinstance(tokenizer, HashedWordTokenizer):
        raise ValueError("captioning reads generated ids back through the built-in tokenizer (tiny_transformer)")
    words = _reader(tokenizer, records)
    transform = model.image_transform(train=False)
    device = model.log_logit_scale.device
    model.eval()
    decoder.eval()
    candidates: list[str] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        pixels = torch.stack([transform(r.load_image()) for r in chunk]).to(device)
        cells = cast(TokenFeatures, model.image_tower).forward_tokens(pixels)
        ids = decoder.generate(cells, BOS, EOS, pad_id=PAD)
        for row in ids.tolist():
            body = [i for i in row[1:] if i not in (EOS, PAD)]
            candidates.append(" ".join(words.get(i, UNKNOWN) for i in body))
    references = [[" ".join(tokenizer.words(c)) for c in r.captions] for r in records]
    scores = caption_scores(references, candidates)
    examples = [{"caption": c, "references": list(r.captions[:2])} for c, r in zip(candidates[:5], records[:5])]
    return {**scores, "n_images": len(records), "examples": examples}
