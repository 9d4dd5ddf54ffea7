"""hq_tags: HQ-CLIP multi-label tag head on the image embedding (docs/methods.md A10)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build, term_parameters
from contrastkit.objectives._heads import has_lazy_parameters
from contrastkit.objectives.hq_tags import HqTagsTerm, masked_tag_bce

pytestmark = pytest.mark.usefixtures("one_thread")


def make_enc(b: int = 6, t: int = 5, d: int = 4, dtype=torch.float64, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    tags = torch.randint(-1, 2, (b, t), generator=g).to(dtype)
    return Encoded(
        image=F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        tags=tags,
    )


def naive_tag_loss(term: HqTagsTerm, enc: Encoded) -> torch.Tensor:
    w, bias = term.head.weight, term.head.bias
    total, count = 0.0, 0
    for i in range(enc.image.shape[0]):
        for k in range(term.num_tags):
            y = float(enc.tags[i, k])
            if y == -1:
                continue
            z = sum(w[k, j] * enc.image[i, j] for j in range(enc.image.shape[1])) + bias[k]
            sig = 1 / (1 + torch.exp(-z))
            total = total - (y * torch.log(sig) + (1 - y) * torch.log(1 - sig))
            count += 1
    return total / count


# (a) value --------------------------------------------------------------------------------------


def test_value_matches_naive_formula():
    torch.manual_seed(0)
    term = HqTagsTerm(num_tags=5).double()
    enc = make_enc()
    value = term(enc)
    torch.testing.assert_close(value, naive_tag_loss(term, enc), rtol=1e-12, atol=1e-12)


def test_soft_targets_match_naive_formula():
    torch.manual_seed(0)
    term = HqTagsTerm(num_tags=5).double()
    enc = make_enc()
    enc.tags = torch.where(enc.tags == 1, torch.full_like(enc.tags, 0.7), enc.tags)
    torch.testing.assert_close(term(enc), naive_tag_loss(term, enc), rtol=1e-12, atol=1e-12)


# (b) gradcheck on the image embeddings and (c) finite values and gradients (the head's included) at
# batch 1, 2, 512 (no batch statistics: defined at batch 1): tests/objectives/test_every_term.py -------


# (d) peer parity ------------------------------------------------------------------------------------
# No peer library implements HQ-CLIP's tag head (the release is README-only); the masked BCE is checked
# against the formula above and against torch's BCEWithLogits with per-entry weights.


def test_masked_bce_equals_weighted_torch_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 6, generator=g, dtype=torch.float64)
    tags = torch.randint(-1, 2, (8, 6), generator=g).double()
    known = (tags != -1).double()
    peer = F.binary_cross_entropy_with_logits(logits, tags.clamp_min(0), weight=known, reduction="sum") / known.sum()
    torch.testing.assert_close(masked_tag_bce(logits, tags), peer, rtol=1e-12, atol=1e-12)


# (e) behaviour ------------------------------------------------------------------------------------


def test_unknown_entries_are_ignored():
    torch.manual_seed(0)
    term = HqTagsTerm(num_tags=5).double()
    enc = make_enc(b=4)
    enc.tags[1] = -1.0  # nothing known about image 1
    image = enc.image.clone().requires_grad_(True)
    loss = term(Encoded(image=image, text=enc.text, logit_scale=enc.logit_scale, tags=enc.tags))
    loss.backward()
    assert torch.count_nonzero(image.grad[1]) == 0
    assert torch.count_nonzero(image.grad[0]) > 0
    # the unknown entries' would-be targets do not matter; explicit negatives (0) do
    known = enc.tags != -1
    flipped = enc.tags.clone()
    flipped[~known] = -1.0
    torch.testing.assert_close(
        term(enc), term(Encoded(image=enc.image, text=enc.text, logit_scale=enc.logit_scale, tags=flipped))
    )
    as_zero = enc.tags.clone()
    as_zero[~known] = 0.0
    assert not torch.allclose(
        term(enc), term(Encoded(image=enc.image, text=enc.text, logit_scale=enc.logit_scale, tags=as_zero))
    )


def test_all_unknown_gives_zero_with_a_graph():
    term = HqTagsTerm(num_tags=3).double()
    enc = make_enc(t=3)
    enc.tags = torch.full_like(enc.tags, -1.0)
    loss = term(enc)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.count_nonzero(term.head.weight.grad) == 0


def test_training_learns_tags_of_a_fixed_batch():
    torch.manual_seed(0)
    term = HqTagsTerm(num_tags=4)
    g = torch.Generator().manual_seed(1)
    image = F.normalize(torch.randn(32, 8, generator=g), dim=-1)
    truth = (image @ torch.randn(8, 4, generator=g) > 0).float()
    tags = torch.where(torch.rand(32, 4, generator=g) < 0.3, torch.full_like(truth, -1.0), truth)
    enc = Encoded(image=image, text=image, logit_scale=torch.tensor(1.0), tags=tags)
    first = term(enc).item()
    opt = torch.optim.Adam(term.parameters(), lr=5e-2)
    for _ in range(100):
        opt.zero_grad()
        term(enc).backward()
        opt.step()
    assert term(enc).item() < 0.5 * first
    known = tags != -1
    with torch.no_grad():
        pred = (term.logits(image) > 0).float()
    assert (pred[known] == truth[known]).float().mean() > 0.9


def test_vocabulary_is_a_plain_attribute_and_predict_uses_it():
    vocab = ["dog", "cat", "red", "outdoor"]
    term = HqTagsTerm(num_tags=4, vocabulary=vocab)
    assert term.vocabulary == vocab
    assert all("vocab" not in name for name, _ in term.named_buffers())
    assert term.config() == {"num_tags": 4, "vocabulary": vocab, "bias": True}
    with torch.no_grad():
        term.head(torch.zeros(1, 2))  # materialise with D = 2
        term.head.weight.copy_(torch.tensor([[10.0, 0], [-10, 0], [0, 10], [0, -10]]))
        term.head.bias.zero_()
    assert term.predict(torch.tensor([[1.0, 1.0], [-1.0, -1.0]])) == [["dog", "red"], ["cat", "outdoor"]]
    assert "vocabulary=4 tags" in repr(term)
    state = term.state_dict()
    assert set(state) == {"head.weight", "head.bias"}


def test_num_tags_is_required():
    assert term_parameters("hq_tags")["num_tags"] is None
    with pytest.raises(ValueError, match="num_tags"):
        build([{"name": "hq_tags"}])


# registry, validation, missing inputs --------------------------------------------------------------


def test_build_lazy_and_missing_input_error():
    objective = build([{"name": "hq_tags", "weight": 0.5, "num_tags": 5, "vocabulary": list("abcde")}])
    assert objective.requires == {"tags"}
    assert has_lazy_parameters(objective)
    enc = make_enc(dtype=torch.float32)
    assert torch.isfinite(objective(enc).loss)
    assert not has_lazy_parameters(objective)
    enc.tags = None
    with pytest.raises(ValueError, match=r"'hq_tags'.*tags"):
        objective(enc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_tags": 0}, "num_tags"),
        ({"num_tags": 2.5}, "num_tags"),
        ({"num_tags": 3, "vocabulary": ["a", "b"]}, "vocabulary has 2"),
        ({"num_tags": 2, "vocabulary": ["a", "a"]}, "repeats"),
        ({"num_tags": 2, "vocabulary": "ab"}, "list of tag strings"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build([{"name": "hq_tags", **kwargs}])


def test_bad_tags_are_reported():
    term = HqTagsTerm(num_tags=5).double()
    enc = make_enc(t=4)
    with pytest.raises(ValueError, match=r"B x num_tags = 6 x 5"):
        term(enc)
    enc = make_enc()
    enc.tags[0, 0] = 2.0
    with pytest.raises(ValueError, match=r"-1 \(unknown\)"):
        term(enc)
    assert math.isfinite(term(make_enc()).item())
