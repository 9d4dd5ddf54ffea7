"""Every registered objective term: a finite scalar with finite gradients, and gradcheck in float64.

Parametrised over ``TERMS.names()``, so a newly registered term is picked up automatically; it
then fails until it has an entry in ``RECIPES`` below (its small constructor kwargs, any inputs
beyond its ``requires``, and how to hold its stop-gradient targets fixed for gradcheck).

The inputs are built from the term's ``requires`` (plus the recipe's ``fields``) with one
builder per ``Encoded`` field / ``extras`` key (``FIELD_BUILDERS``), following the shapes in
``contrastkit/encoded.py``'s field table.

- ``test_finite_loss_and_gradients``: float32, logit scale 100 (large logits), batches of 1, 2,
  7 and 512 rows: the loss is a finite scalar and backward gives finite gradients on every input
  that carries gradient and on every trainable parameter of the term. A term that is undefined below
  ``min_batch`` rows (BatchNorm heads, whitening) must say so with a ValueError naming the term.
- ``test_gradcheck``: float64, a small batch, ``torch.autograd.gradcheck`` on every input field
  that carries gradient (unit-norm fields are re-normalised inside the checked function). Random
  terms are re-seeded before every evaluation; terms with stop-gradient targets computed from
  the inputs get them frozen at the base point (``freeze``), after checking that freezing changes
  neither the value nor the autograd gradient there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from contrastkit.encoded import FIELDS, Encoded
from contrastkit.objectives import TERMS, build
from helpers import frozen_group_whiten

pytestmark = pytest.mark.usefixtures("one_thread")

# D embedding dims, FI / FT raw image / text feature dims, V views, K negatives, T tags,
# L caption tokens, N image cells, VOCAB token ids, cluster sizes of the C = 2 clusterings.
D, FI, FT, V, K, T, L, N, VOCAB = 6, 6, 4, 2, 3, 5, 6, 3, 11
GRID = 2  # the views' cells are a GRID x GRID map
CLUSTER_SIZES = (7, 3)
PAD, BOS, EOS = 0, 1, 2
BATCHES = (1, 2, 7, 512)

# Fields holding L2-normalised embeddings: gradcheck perturbs raw rows and normalises them.
UNIT_FIELDS = {
    "image",
    "text",
    "image_views",
    "text_views",
    "neg_text",
    "teacher_image",
    "teacher_text",
    "teacher_neg_text",
    "reference_image",
    "reference_text",
}


# ---------------------------------------------------------------------------- inputs


def _tokens(b: int, g: torch.Generator) -> torch.Tensor:
    """Right-padded captions: BOS, words, EOS, PAD... (at least BOS, EOS)."""
    tokens = torch.full((b, L), PAD, dtype=torch.long)
    for i in range(b):
        n = int(torch.randint(2, L + 1, (1,), generator=g))
        tokens[i, 0] = BOS
        tokens[i, 1 : n - 1] = torch.randint(3, VOCAB, (n - 2,), generator=g)
        tokens[i, n - 1] = EOS
    return tokens


def _tags(b: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    tags = torch.randint(-1, 2, (b, T), generator=g).to(dtype)
    tags[0, 0] = 1.0  # at least one known entry
    return tags


def _boxes(b: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """B x V x 4 crop boxes that overlap (corners in [0, 0.3] and [0.7, 1]); odd rows' second view flipped."""
    low, high = 0.3 * torch.rand(b, V, 2, generator=g), 0.7 + 0.3 * torch.rand(b, V, 2, generator=g)
    boxes = torch.cat([low, high], dim=-1).to(dtype)
    boxes[1::2, 1] = boxes[1::2, 1][:, [2, 1, 0, 3]]
    return boxes


def _unit(g: torch.Generator, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# field (or extras key) -> builder(b, generator, dtype, logit_scale)
Builder = Callable[[int, torch.Generator, torch.dtype, float], Any]
FIELD_BUILDERS: dict[str, Builder] = {
    "image": lambda b, g, dt, s: _unit(g, dt, b, D),
    "text": lambda b, g, dt, s: _unit(g, dt, b, D),
    "logit_scale": lambda b, g, dt, s: torch.tensor(s, dtype=dt),
    "logit_bias": lambda b, g, dt, s: torch.tensor(-0.1 * s, dtype=dt),
    "image_features": lambda b, g, dt, s: torch.randn(b, FI, generator=g, dtype=dt),
    "text_features": lambda b, g, dt, s: torch.randn(b, FT, generator=g, dtype=dt),
    "image_views": lambda b, g, dt, s: _unit(g, dt, V, b, D),
    "text_views": lambda b, g, dt, s: _unit(g, dt, V, b, D),
    "image_view_features": lambda b, g, dt, s: torch.randn(V, b, FI, generator=g, dtype=dt),
    "text_view_features": lambda b, g, dt, s: torch.randn(V, b, FT, generator=g, dtype=dt),
    "neg_text": lambda b, g, dt, s: _unit(g, dt, b, K, D),
    "neg_text_mask": lambda b, g, dt, s: torch.rand(b, K, generator=g) > 0.3,
    "teacher_image": lambda b, g, dt, s: _unit(g, dt, b, D),
    "teacher_text": lambda b, g, dt, s: _unit(g, dt, b, D),
    "teacher_neg_text": lambda b, g, dt, s: _unit(g, dt, b, K, D),
    "teacher_logit_scale": lambda b, g, dt, s: torch.tensor(12.0, dtype=dt),
    "reference_image": lambda b, g, dt, s: _unit(g, dt, b, D),
    "reference_text": lambda b, g, dt, s: _unit(g, dt, b, D),
    "reference_logit_scale": lambda b, g, dt, s: torch.tensor(s, dtype=dt),
    "tags": lambda b, g, dt, s: _tags(b, g, dt),
    "group_ids": lambda b, g, dt, s: torch.arange(b) // 2,
    "labels": lambda b, g, dt, s: torch.randint(0, 3, (b,), generator=g),
    "caption_tokens": lambda b, g, dt, s: _tokens(b, g),
    "image_tokens": lambda b, g, dt, s: torch.randn(b, N, FI, generator=g, dtype=dt),
    "image_view_tokens": lambda b, g, dt, s: torch.randn(V, b, GRID * GRID, FI, generator=g, dtype=dt),
    "teacher_image_view_tokens": lambda b, g, dt, s: torch.randn(V, b, GRID * GRID, FI, generator=g, dtype=dt),
    "view_boxes": lambda b, g, dt, s: _boxes(b, g, dt),
    "masked_image_tokens": lambda b, g, dt, s: torch.randn(b, N, FI, generator=g, dtype=dt),
    "cell_mask": lambda b, g, dt, s: (torch.rand(b, N, generator=g) < 0.4) | (torch.arange(N) == 0),
    "teacher_image_tokens": lambda b, g, dt, s: torch.randn(b, N, FI, generator=g, dtype=dt),
    # extras keys
    "scores": lambda b, g, dt, s: torch.randn(b, b, generator=g, dtype=dt) * 3,
    "cluster_ids": lambda b, g, dt, s: torch.stack([torch.arange(b) % k for k in CLUSTER_SIZES]),
    "cluster_centroids": lambda b, g, dt, s: [_unit(g, dt, k, D) for k in CLUSTER_SIZES],
    "cluster_density": lambda b, g, dt, s: [0.2 + 0.4 * torch.rand(k, generator=g, dtype=dt) for k in CLUSTER_SIZES],
}
# Built together with the field on the left whenever it is built (the mask travels with the negatives).
COMPANIONS = {"neg_text": ("neg_text_mask",)}


# ---------------------------------------------------------------------------- stop-gradient freezes


def _freeze_siamese_targets(monkeypatch, term, enc: Encoded) -> None:
    """SiamLIP / BYOLIP: the stop-gradient targets, held at their values at ``enc``."""
    with torch.no_grad():
        images = [enc.image_features, *enc.image_view_features]
        texts = [enc.text_features, *enc.text_view_features]
        frozen = term.targets(
            images, texts, [term.image_projector(x) for x in images], [term.text_projector(y) for y in texts]
        )
        frozen = ([t.clone() for t in frozen[0]], [t.clone() for t in frozen[1]])
    monkeypatch.setattr(term, "targets", lambda *args: frozen)


def _freeze_whitening(monkeypatch, term, enc: Encoded) -> None:
    """group_whitening with detach_whitening: W from the base batch of each version (base, views in order)."""
    field, views_field = term.requires
    refs = [getattr(enc, field).detach().clone(), *getattr(enc, views_field).detach().clone()]
    calls: list[int] = []

    def whiten_with_frozen_w(x):
        ref = refs[len(calls) % len(refs)]
        calls.append(1)
        perm = torch.randperm(x.shape[1]) if term.shuffle else None
        return frozen_group_whiten(x, ref, term.groups, term.eps, perm)

    monkeypatch.setattr(term, "whiten", whiten_with_frozen_w)


def _freeze_mochi_mixes(monkeypatch, term, enc: Encoded) -> None:
    """MoCHi: the synthetic negatives are mixed from stop-gradient copies of the embeddings at ``enc``."""
    import contrastkit.objectives.mochi as mochi

    x0, y0 = enc.image.detach().clone(), enc.text.detach().clone()

    def frozen_loss(image, text, logit_scale, n_hard, draws_image, draws_text):
        return (
            mochi.mochi_direction(image, text, logit_scale, n_hard, draws_image, anchor_sg=x0, keys_sg=y0)
            + mochi.mochi_direction(text, image, logit_scale, n_hard, draws_text, anchor_sg=y0, keys_sg=x0)
        ) / 2

    monkeypatch.setattr(mochi, "mochi_loss", frozen_loss)


# ---------------------------------------------------------------------------- the per-term table


@dataclass(frozen=True)
class Recipe:
    kwargs: dict[str, Any] = field(default_factory=dict)  # small constructor kwargs
    fields: tuple[str, ...] = ()  # inputs read besides ``requires`` (optional fields, extras keys)
    grad_extras: tuple[str, ...] = ()  # extras keys that carry gradient (checked like student fields)
    min_batch: int = 1  # below this many rows the term must raise a ValueError naming itself
    fixed: tuple[str, ...] = ()  # grad fields held constant in gradcheck (the term reads them detached)
    freeze: Callable | None = None  # (monkeypatch, term, enc): hold stop-gradient targets fixed
    gradcheck_batch: int = 4
    atol: float = 1e-6


HEADS = {"hidden_dim": 8, "out_dim": 4}
VIEW_FEATURES = ("image_view_features", "text_view_features")
RECIPES: dict[str, Recipe] = {
    "alignment": Recipe(),
    "barlip": Recipe(HEADS, fields=VIEW_FEATURES, min_batch=2),
    "byolip": Recipe(HEADS, fields=VIEW_FEATURES, min_batch=2, freeze=_freeze_siamese_targets),
    "cl2l_local": Recipe(HEADS, min_batch=2, atol=1e-5),
    "clip": Recipe(),
    "coca_caption": Recipe({"vocab_size": VOCAB, "width": 8, "layers": 1, "heads": 2, "context_length": L}),
    "cross_uniformity": Recipe(),
    # weights from the (detached) frozen side's similarities: its embeddings are a constant (LiT)
    "cwcl": Recipe(fixed=("text",)),
    "degla_igc": Recipe(),
    "degla_tgc": Recipe(),
    "ema_distill": Recipe(fields=("neg_text", "teacher_neg_text")),
    "group_whitening": Recipe(
        {"groups": 2, "temperature": 0.5}, min_batch=2, freeze=_freeze_whitening, gradcheck_batch=8, atol=1e-5
    ),
    "hq_tags": Recipe({"num_tags": T}),
    "hycd": Recipe(),
    "ibot_patch": Recipe({"hidden_dim": 8, "bottleneck_dim": 4, "prototypes": 5}),
    "label_contrast": Recipe(),
    "lmix": Recipe(),
    "m2mix": Recipe(),
    "matryoshka": Recipe({"dims": [3, 6], "term": "negclip"}),
    "meow": Recipe(fields=("cluster_ids",)),
    "mochi": Recipe(freeze=_freeze_mochi_mixes),
    "multi_positive": Recipe(),
    "negclip": Recipe(),
    "pixpro": Recipe(HEADS),
    "rafa": Recipe(),
    "score_contrastive": Recipe(grad_extras=("scores",)),
    "siamlip": Recipe(HEADS, fields=VIEW_FEATURES, min_batch=2, freeze=_freeze_siamese_targets),
    "siglip": Recipe(),
    "simcse": Recipe(),
    "uniformity": Recipe(),
    "vlmix": Recipe(),
    "vmix": Recipe(),
}


def recipe_for(name: str) -> Recipe:
    if name not in RECIPES:
        pytest.fail(
            f"objective term {name!r} has no entry in RECIPES in {__file__}: add one with its small "
            f"constructor kwargs and any inputs it reads besides its `requires` "
            f"({', '.join(TERMS.get(name).requires) or 'none'}), so that every term is checked for "
            f"finite values and gradients and by gradcheck"
        )
    return RECIPES[name]


def make_term(name: str, recipe: Recipe, dtype: torch.dtype):
    return build([{"name": name, **recipe.kwargs}]).terms[0].to(dtype)


def input_names(term, recipe: Recipe) -> list[str]:
    """image, text, logit_scale, the term's requires, the recipe's extra fields; companions; in order."""
    names: list[str] = []
    for n in ("image", "text", "logit_scale", *term.requires, *recipe.fields, *recipe.grad_extras):
        for m in (n, *COMPANIONS.get(n, ())):
            if m not in names:
                names.append(m)
    return names


def make_inputs(
    name: str, term, recipe: Recipe, b: int, dtype: torch.dtype, scale: float, seed: int = 0
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    values = {}
    for n in input_names(term, recipe):
        if n not in FIELD_BUILDERS:
            pytest.fail(
                f"objective term {name!r} reads {n!r}, which has no builder: add one to FIELD_BUILDERS "
                f"in {__file__} (shape from contrastkit/encoded.py's field table)"
            )
        values[n] = FIELD_BUILDERS[n](b, g, dtype, scale)
    return values


def to_encoded(values: dict[str, Any]) -> Encoded:
    fields = {n: v for n, v in values.items() if n in FIELDS}
    extras = {n: v for n, v in values.items() if n not in FIELDS}
    return Encoded(**fields, extras=extras, pad_token_id=PAD)


def grad_names(values: dict[str, Any], recipe: Recipe) -> list[str]:
    """The inputs that carry gradient to the model: student fields with ``grad`` and the recipe's grad extras."""
    return [
        n
        for n, v in values.items()
        if isinstance(v, torch.Tensor)
        and v.is_floating_point()
        and ((n in FIELDS and FIELDS[n].grad) or n in recipe.grad_extras)
    ]


def reseed(term) -> None:
    """The same random draws on every evaluation: the global RNG (shuffles) and the term's own stream."""
    torch.manual_seed(0)
    if hasattr(term, "reset_rng"):
        term.reset_rng()


# ---------------------------------------------------------------------------- the checks


def test_every_recipe_names_a_registered_term():
    stale = sorted(set(RECIPES) - set(TERMS.names()))
    assert not stale, f"RECIPES lists terms that are not registered: {stale}"


@pytest.mark.parametrize("b", BATCHES)
@pytest.mark.parametrize("name", TERMS.names())
def test_finite_loss_and_gradients(name, b):
    recipe = recipe_for(name)
    torch.manual_seed(0)
    objective = build([{"name": name, **recipe.kwargs}])
    term = objective.terms[0]
    values = make_inputs(name, term, recipe, b, torch.float32, scale=100.0)
    leaves = {n: values[n].requires_grad_(True) for n in grad_names(values, recipe)}
    enc = to_encoded(values)
    if b < recipe.min_batch:
        with pytest.raises(ValueError, match=rf"'{name}'"):
            objective(enc)
        return
    loss = objective(enc, check_finite=False).loss
    assert loss.shape == (), f"{name}: the loss must be a scalar, got shape {tuple(loss.shape)}"
    assert torch.isfinite(loss), f"{name}: loss {float(loss.detach())} at batch {b}"
    loss.backward()
    reached = []
    for n, leaf in leaves.items():
        if leaf.grad is not None:
            assert torch.isfinite(leaf.grad).all(), f"{name}: non-finite gradient on {n} at batch {b}"
            reached.append(n)
    for n, p in term.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient reached its parameter {n} at batch {b}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient on parameter {n} at batch {b}"
            reached.append(n)
    assert reached, f"{name}: no gradient reached any input or parameter"


# gradcheck of the terms with large projector heads takes seconds each: make test-fast leaves them out
SLOW_GRADCHECK = {"barlip", "byolip", "cl2l_local", "group_whitening", "siamlip"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_GRADCHECK else n for n in TERMS.names()]
)
def test_gradcheck(name, monkeypatch):
    recipe = recipe_for(name)
    torch.manual_seed(0)
    term = make_term(name, recipe, torch.float64)
    values = make_inputs(name, term, recipe, recipe.gradcheck_batch, torch.float64, scale=4.0)
    checked = [n for n in grad_names(values, recipe) if n not in recipe.fixed]
    assert checked, f"{name}: no input to gradcheck"

    def encode(*leaves):
        current = dict(values)
        for n, leaf in zip(checked, leaves, strict=True):
            current[n] = torch.nn.functional.normalize(leaf, dim=-1) if n in UNIT_FIELDS else leaf
        return to_encoded(current)

    def f(*leaves):
        reseed(term)
        return term(encode(*leaves))

    leaves = tuple(values[n].detach().clone().requires_grad_(True) for n in checked)
    f(*leaves)  # materialise lazy heads
    if recipe.freeze is not None:
        value = f(*leaves)
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        recipe.freeze(monkeypatch, term, encode(*leaves))
        frozen_value = f(*leaves)
        torch.testing.assert_close(frozen_value, value, msg=f"{name}: freezing changed the value")
        frozen_grads = torch.autograd.grad(frozen_value, leaves, allow_unused=True)
        for n, a, b in zip(checked, grads, frozen_grads, strict=True):
            if a is None or b is None:
                assert a is None and b is None, f"{name}: freezing changed which inputs get a gradient ({n})"
            else:
                torch.testing.assert_close(a, b, msg=f"{name}: freezing changed the gradient on {n}")
    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=recipe.atol)
