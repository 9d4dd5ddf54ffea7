"""coca_caption: CoCa captioning loss with a term-owned decoder (docs/methods.md A14)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives import build, term_parameters
from contrastkit.objectives._heads import has_lazy_parameters
from contrastkit.objectives.coca import CocaCaptionTerm, caption_loss

PAD, BOS, EOS = 0, 1, 2
SMALL = {"vocab_size": 11, "width": 8, "layers": 2, "heads": 2, "context_length": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_tokens(b: int, length: int, vocab: int, g: torch.Generator, min_len: int = 2) -> torch.Tensor:
    """Right-padded captions: BOS, words, EOS, PAD..."""
    tokens = torch.full((b, length), PAD, dtype=torch.long)
    for i in range(b):
        n = int(torch.randint(min_len, length + 1, (1,), generator=g))
        tokens[i, 0] = BOS
        tokens[i, 1 : n - 1] = torch.randint(3, vocab, (n - 2,), generator=g)
        tokens[i, n - 1] = EOS
    return tokens


def make_enc(
    b: int = 4, n: int = 3, f: int = 5, length: int = 7, vocab: int = 11, dtype=torch.float64, seed: int = 0
) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    return Encoded(
        image=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        text=F.normalize(torch.randn(b, 3, generator=g, dtype=dtype), dim=-1),
        logit_scale=torch.tensor(10.0, dtype=dtype),
        image_tokens=torch.randn(b, n, f, generator=g, dtype=dtype),
        caption_tokens=make_tokens(b, length, vocab, g),
        pad_token_id=PAD,
    )


# ---------------------------------------------------------------- the decoder written out by hand


def layer_norm(x, ln):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def attention(x, mem, mha, heads, mask=None):
    e = x.shape[-1]
    hd = e // heads
    wq, wk, wv = mha.in_proj_weight.split(e)
    bq, bk, bv = mha.in_proj_bias.split(e)
    q, k, v = x @ wq.t() + bq, mem @ wk.t() + bk, mem @ wv.t() + bv
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(hd)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        outs.append(weights @ v[..., sl])
    return torch.cat(outs, dim=-1) @ mha.out_proj.weight.t() + mha.out_proj.bias


def naive_logits(term: CocaCaptionTerm, tokens: torch.Tensor, image_tokens: torch.Tensor, heads: int):
    mem = layer_norm(image_tokens @ term.image_proj.weight.t() + term.image_proj.bias, term.image_ln)
    length = tokens.shape[1]
    x = term.token_embedding.weight[tokens] + term.positional_embedding[:length]
    causal = torch.ones(length, length, dtype=torch.bool).triu(1)
    for layer in term.decoder.layers:
        x = x + attention(layer_norm(x, layer.norm1), layer_norm(x, layer.norm1), layer.self_attn, heads, causal)
        x = x + attention(layer_norm(x, layer.norm2), mem, layer.multihead_attn, heads)
        h = layer_norm(x, layer.norm3) @ layer.linear1.weight.t() + layer.linear1.bias
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        x = x + h @ layer.linear2.weight.t() + layer.linear2.bias
    return layer_norm(x, term.ln_final) @ term.lm_head.weight.t()


def naive_caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad: int) -> torch.Tensor:
    total, count = 0.0, 0
    for i in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[i, t])
            if y == pad:
                continue
            row = logits[i, t]
            total = total - (row[y] - row.max() - torch.log(torch.exp(row - row.max()).sum()))
            count += 1
    return total / count


# (a) value --------------------------------------------------------------------------------------


def test_value_matches_naive_decoder_and_formula():
    torch.manual_seed(0)
    term = CocaCaptionTerm(**SMALL).double()
    enc = make_enc()
    value = term(enc)
    tokens = enc.caption_tokens
    logits = naive_logits(term, tokens[:, :-1], enc.image_tokens, SMALL["heads"])
    torch.testing.assert_close(
        term.decode(tokens[:, :-1], term.encode_image(enc.image_tokens)), logits, rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(value, naive_caption_loss(logits, tokens[:, 1:], PAD), rtol=1e-10, atol=1e-10)


# (b) gradcheck on the image tokens and (c) finite values and gradients at batch 1, 2, 512:
# tests/objectives/test_every_term.py ---------------------------------------------------------------


# (d) peer parity: open_clip's CoCaLoss caption part on the same logits -----------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_caption_loss_matches_open_clip(dtype, tol):
    from open_clip.loss import CoCaLoss

    torch.manual_seed(0)
    term = CocaCaptionTerm(**SMALL).to(dtype)
    enc = make_enc(dtype=dtype)
    value = term(enc)
    logits = term.decode(enc.caption_tokens[:, :-1], term.encode_image(enc.image_tokens))
    _, peer = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=0.0, pad_id=PAD)(
        None, None, logits, enc.caption_tokens[:, 1:], None
    )
    torch.testing.assert_close(value, peer, rtol=tol, atol=tol)


# (e) behaviour --------------------------------------------------------------------------------------


def test_pad_tokens_are_ignored():
    torch.manual_seed(0)
    term = CocaCaptionTerm(**SMALL).double()
    enc = make_enc(b=5, length=6)
    value = term(enc)
    # more right padding changes nothing
    padded = make_enc(b=5, length=6)
    padded.caption_tokens = torch.cat([padded.caption_tokens, torch.full((5, 2), PAD)], dim=1)
    torch.testing.assert_close(term(padded), value, rtol=1e-12, atol=1e-12)
    # the loss is the token-weighted mean of each caption decoded alone, without its padding
    total, count = 0.0, 0
    for i in range(5):
        row = enc.caption_tokens[i]
        n = int((row != PAD).sum())
        single = Encoded(
            image=enc.image[i : i + 1],
            text=enc.text[i : i + 1],
            logit_scale=enc.logit_scale,
            image_tokens=enc.image_tokens[i : i + 1],
            caption_tokens=row[None, :n],
            pad_token_id=PAD,
        )
        total = total + term(single) * (n - 1)
        count += n - 1
    torch.testing.assert_close(value, total / count, rtol=1e-10, atol=1e-10)
    # a different pad id is honoured
    shifted = make_enc(b=5, length=6)
    shifted.caption_tokens = torch.where(
        shifted.caption_tokens == PAD, torch.full_like(shifted.caption_tokens, 10), shifted.caption_tokens
    )
    shifted.pad_token_id = 10
    pad_as_10 = term(shifted)
    assert torch.isfinite(pad_as_10)
    assert caption_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 0).item() == 0.0  # all pad


@pytest.mark.slow
def test_training_lowers_loss_and_generate_reproduces_the_caption():
    torch.manual_seed(0)
    term = CocaCaptionTerm(vocab_size=12, width=32, layers=2, heads=4, context_length=8)
    g = torch.Generator().manual_seed(0)
    image_tokens = torch.randn(2, 3, 6, generator=g)
    captions = torch.tensor([[BOS, 5, 6, 7, EOS, PAD, PAD], [BOS, 9, 4, 11, 3, 8, EOS]])
    enc = Encoded(
        image=torch.zeros(2, 2),
        text=torch.zeros(2, 2),
        logit_scale=torch.tensor(1.0),
        image_tokens=image_tokens,
        caption_tokens=captions,
        pad_token_id=PAD,
    )
    first = term(enc).item()
    opt = torch.optim.Adam(term.parameters(), lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        term(enc).backward()
        opt.step()
    assert term(enc).item() < 0.1 * first
    out = term.generate(image_tokens, bos_id=BOS, eos_id=EOS, max_len=7, pad_id=PAD)
    assert torch.equal(out, captions)  # greedy decoding memorised both captions; the first is padded after EOS
    short = term.generate(image_tokens, bos_id=BOS, eos_id=EOS, max_len=3)
    assert short.shape == (2, 3) and torch.equal(short, captions[:, :3])


def test_generate_validates_max_len():
    term = CocaCaptionTerm(**SMALL)
    with pytest.raises(ValueError, match="max_len"):
        term.generate(torch.randn(1, 2, 5), bos_id=BOS, eos_id=EOS, max_len=9)


# registry, validation, missing inputs --------------------------------------------------------------


def test_build_lazy_and_missing_input_error():
    assert term_parameters("coca_caption")["vocab_size"] is None  # required
    with pytest.raises(ValueError, match="vocab_size"):
        build([{"name": "coca_caption"}])
    objective = build([{"name": "clip"}, {"name": "coca_caption", "weight": 2.0, **SMALL}])
    assert objective.requires >= {"image_tokens", "caption_tokens"}
    assert has_lazy_parameters(objective)
    enc = make_enc(dtype=torch.float32)
    out = objective(enc)
    assert torch.isfinite(out.loss) and set(out.terms) == {"clip", "coca_caption"}
    assert not has_lazy_parameters(objective)
    enc.image_tokens = None
    with pytest.raises(ValueError, match=r"'coca_caption'.*image_tokens"):
        objective(enc)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 10, "width": 10, "heads": 3}, "divisible"),
        ({"vocab_size": 10, "context_length": 1}, "context_length"),
        ({"vocab_size": 10, "layers": 0}, "layers"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build([{"name": "coca_caption", **kwargs}])


def test_bad_tokens_are_reported():
    term = CocaCaptionTerm(**SMALL).double()
    enc = make_enc(length=9)
    with pytest.raises(ValueError, match="context_length=8"):
        term(enc)
    enc = make_enc()
    enc.caption_tokens[0, 1] = 11
    with pytest.raises(ValueError, match="vocab_size=11"):
        term(enc)
    enc = make_enc()
    enc.caption_tokens = enc.caption_tokens.double()
    with pytest.raises(ValueError, match="integer"):
        term(enc)
