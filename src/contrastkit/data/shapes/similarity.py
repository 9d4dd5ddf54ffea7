"""Text–text data from the shapes world: graded-similarity pairs (a built-in STS set) and paraphrase pairs.

**Gold similarity.** A caption states facts: for each mention its shape (``object`` when unstated), its
colour and its size (each tied to the mention's shape), and for each relation of its chain the triple
(mention, relation, mention), with "right of" / "below" rewritten as "left of" / "above" with the
mentions swapped, so a caption and its inverse state the same facts. The gold similarity of two captions
is 5 x the Jaccard index of their fact sets (0 = nothing shared, 5 = the same facts: a paraphrase).

**The graded set** (:func:`graded_pairs`): for each pair a scene is drawn (its own random stream, apart
from the training records), one of its true captions is the first text and the second is, in equal
shares, another true caption of the scene (a paraphrase, possibly with sizes left out), one of its hard
negatives (a minimal edit: swapped attributes, objects or relation, a replaced word) or a true caption of
another scene. Gold scores then spread over [0, 5], with the hard negatives in the middle: a model scores
well only if it tells which words bind to which object.

**Paraphrase pairs** (:func:`paraphrase_pairs`): a scene's canonical caption and one of its rewrites (the
inverse relation chain, "a photo of ...", "there is ..."), which state the same facts (gold 5), as
(anchor, positive), with one hard negative of the scene (a minimal edit, false for it) when ``negatives``.

**Sentences** (:func:`sentences`): one true caption per scene, paired with itself (unsupervised SimCSE and
WhitenedCSE, whose two views differ by the encoder's dropout).
"""

from __future__ import annotations

import random
from functools import cache

from ..text_pairs import ScoredPair, TextPair
from .dataset import SyntheticShapes
from .grammar import INVERSE, Caption, Mention, mention_text, parse_caption

Fact = tuple[str, ...]
KINDS = ("paraphrase", "negative", "other")


def _key(mention: Mention) -> str:
    return mention_text(mention)


@cache
def caption_facts(text: str) -> frozenset[Fact]:
    """The facts a shapes-world caption states (see the module docstring)."""
    caption: Caption = parse_caption(text)
    facts: set[Fact] = set()
    for m in caption.mentions:
        shape = m.shape or "object"
        facts.add(("shape", shape))
        if m.colour:
            facts.add(("colour", m.colour, shape))
        if m.size:
            facts.add(("size", m.size, shape))
    for k, relation in enumerate(caption.relations):
        a, b = _key(caption.mentions[k]), _key(caption.mentions[k + 1])
        if relation in ("right", "below"):
            a, b, relation = b, a, INVERSE[relation]
        facts.add(("relation", a, relation, b))
    return frozenset(facts)


def graded_similarity(a: str, b: str) -> float:
    """5 x Jaccard(facts(a), facts(b))."""
    fa, fb = caption_facts(a), caption_facts(b)
    return 5.0 * len(fa & fb) / len(fa | fb)


def graded_pairs(n: int = 600, seed: int = 0) -> list[ScoredPair]:
    """``n`` caption pairs with their gold similarity; the same list for the same (n, seed)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    world = SyntheticShapes("val", size=2 * n, seed=seed)
    rng = random.Random(f"shapes-sts/{seed}")
    out: list[ScoredPair] = []
    for i in range(n):
        words = world.describe(i)
        first = rng.choice(words.captions)
        kind = KINDS[i % len(KINDS)]
        negatives = [t for group in words.neg_captions.values() for t in group]
        if kind == "paraphrase" and len(words.captions) > 1:
            second = rng.choice([c for c in words.captions if c != first])
        elif kind == "negative" and negatives:
            second = rng.choice(negatives)
        else:
            second = rng.choice(world.describe(n + i).captions)
        out.append(ScoredPair(first, second, graded_similarity(first, second), f"shapes-sts-{seed}-{i:05d}"))
    return out


def paraphrase_pairs(size: int = 5000, seed: int = 0, negatives: bool = True, split: str = "train") -> list[TextPair]:
    """(canonical caption, a rewrite of it[, a hard negative]) for the ``size`` scenes of ``split``."""
    world = SyntheticShapes(split, size=size, seed=seed)
    rng = random.Random(f"shapes-paraphrases/{seed}/{split}")
    out: list[TextPair] = []
    for i in range(size):
        words = world.describe(i)
        anchor, positive = words.captions[0], rng.choice(words.rewrites)
        pool = [t for group in words.neg_captions.values() for t in group]
        negs = (rng.choice(pool),) if negatives and pool else ()
        out.append(TextPair(anchor, positive, negs, f"shapes-{split}-{i:05d}"))
    return out


def sentences(size: int = 5000, seed: int = 0, split: str = "train") -> list[TextPair]:
    """One true caption of each of the ``size`` scenes of ``split``, as its own positive (unsupervised SimCSE)."""
    world = SyntheticShapes(split, size=size, seed=seed)
    rng = random.Random(f"shapes-sentences/{seed}/{split}")
    out = []
    for i in range(size):
        caption = rng.choice(world.describe(i).captions)
        out.append(TextPair(caption, caption, (), f"shapes-{split}-{i:05d}"))
    return out
