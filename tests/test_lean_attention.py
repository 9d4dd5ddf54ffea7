"""LeanSelfAttention computes nn.MultiheadAttention's function (values and gradients) with fewer copies."""

import copy

import pytest
import torch
from torch import nn

from contrastkit.models.lean_attention import LeanSelfAttention, use_lean_attention
from helpers import register_tiny_open_clip


def _pair(batch_first: bool, bias: bool = True, dropout: float = 0.0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = nn.MultiheadAttention(48, 3, batch_first=batch_first, bias=bias, dropout=dropout).double()
    lean = copy.deepcopy(plain)
    assert use_lean_attention(lean) == 1 and isinstance(lean, LeanSelfAttention)
    return plain, lean


def _value_and_grads(module: nn.Module, x: torch.Tensor, **kwargs) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    out, _weights = module(x, x, x, **kwargs)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
    return [out, *torch.autograd.grad(loss, [x, *module.parameters()])]


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "causal_float_mask"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_lean_self_attention_equals_multihead_attention(batch_first, masked, bias):
    plain, lean = _pair(batch_first, bias)
    length, batch = 7, 5
    x = torch.randn((batch, length, 48) if batch_first else (length, batch, 48), dtype=torch.float64)
    mask = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1) if masked else None
    expected = _value_and_grads(plain, x, need_weights=False, attn_mask=mask)
    got = _value_and_grads(lean, x, need_weights=False, attn_mask=mask)
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, rtol=1e-12, atol=1e-12)


def test_lean_attention_defers_what_it_does_not_cover():
    plain, lean = _pair(True)
    x = torch.randn(2, 4, 48, dtype=torch.float64)
    other = torch.randn(2, 4, 48, dtype=torch.float64)
    pad = torch.tensor([[False, False, True, True], [False, False, False, True]])
    bool_mask = torch.ones(4, 4, dtype=torch.bool).triu(1)
    cases = [
        ((x, other, other), {}),  # cross-attention
        ((x, x, x), {"key_padding_mask": pad}),
        ((x, x, x), {"attn_mask": bool_mask}),
        ((x, x, x), {"need_weights": True}),
    ]
    for args, kwargs in cases:
        out_plain, w_plain = plain(*args, **kwargs)
        out_lean, w_lean = lean(*args, **kwargs)
        assert torch.allclose(out_plain, out_lean, rtol=1e-12, atol=1e-12)
        assert (w_plain is None) == (w_lean is None)
        if w_plain is not None:
            assert torch.allclose(w_plain, w_lean)
    with torch.no_grad():  # inference keeps torch's own (fast-path) forward
        assert torch.allclose(plain(x, x, x, need_weights=False)[0], lean(x, x, x, need_weights=False)[0])


def test_lean_attention_uses_dropout_only_in_training():
    plain, lean = _pair(True, dropout=0.5)
    x = torch.randn(2, 6, 48, dtype=torch.float64)
    lean.eval()
    plain.eval()
    assert torch.allclose(
        _value_and_grads(plain, x, need_weights=False)[0], _value_and_grads(lean, x, need_weights=False)[0]
    )
    lean.train()
    torch.manual_seed(1)
    first = _value_and_grads(lean, x, need_weights=False)[0]
    torch.manual_seed(2)
    second = _value_and_grads(lean, x, need_weights=False)[0]
    assert not torch.allclose(first, second)  # attention dropout is applied while training


def test_open_clip_towers_use_lean_attention_with_the_same_function_and_keys(tmp_path):
    import open_clip

    from contrastkit.models.open_clip_towers import build_open_clip

    name = register_tiny_open_clip(tmp_path / "cfg")
    torch.manual_seed(0)
    reference = open_clip.create_model(name)
    torch.manual_seed(0)
    parts = build_open_clip(name)
    attentions = [m for m in [*parts.image.modules(), *parts.text.modules()] if isinstance(m, nn.MultiheadAttention)]
    assert attentions and all(type(m) is LeanSelfAttention for m in attentions)
    ours = {**{f"visual.{k}": v for k, v in parts.image.visual.state_dict().items()}, **parts.text.model.state_dict()}
    theirs = {k: v for k, v in reference.state_dict().items() if k not in ("logit_scale", "logit_bias")}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)

    pixels = torch.randn(3, 3, 32, 32)
    tokens = parts.text.tokenize(["a red square", "a small blue circle left of a star", "x"])
    for encode_ours, encode_theirs, inputs, weight in (
        (parts.image, reference.encode_image, pixels, "conv1.weight"),
        (lambda t: parts.text.model.encode_text(t), reference.encode_text, tokens, "token_embedding.weight"),
    ):
        a, b = encode_ours(inputs), encode_theirs(inputs)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        param_ours = dict([*parts.image.visual.named_parameters(), *parts.text.model.named_parameters()])[weight]
        param_theirs = dict(
            reference.visual.named_parameters() if weight == "conv1.weight" else reference.named_parameters()
        )[weight]
        (g_ours,) = torch.autograd.grad(a.square().sum(), param_ours)
        (g_theirs,) = torch.autograd.grad(b.square().sum(), param_theirs)
        assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-6 * float(g_theirs.abs().max()))
