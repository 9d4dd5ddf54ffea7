"""External models for evaluation: Hugging Face CLIP / SigLIP folders and open_clip files, built offline.

The HF folders are made here: a tiny CLIPModel with a byte-level BPE
tokenizer written from a 515-entry vocabulary (every byte, every byte + "</w>",
three merges, the two special tokens) and a tiny SiglipModel with a WordPiece
(BERT) tokenizer from a 12-word vocab.txt (SigLIP's own tokenizer needs
sentencepiece); both with their image-processor configs, saved with
``save_pretrained``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastkit.evaluate.cache import FeatureCache
from contrastkit.evaluate.embedding import embed_images
from contrastkit.models.embedder import PixelEmbedder
from contrastkit.models.load import load_model


def _bytes_to_unicode():
    """GPT-2 / CLIP byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_hf_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["a t</w>", "c a", "ca t</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            eos_token_id=eos,
            bos_token_id=vocab["<|startoftext|>"],
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_hf_siglip(folder):
    from transformers import BertTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "photo", "of", "cat", "dog", "red", "blue", "the"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(words),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=8,
            projection_size=32,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
    )
    torch.manual_seed(1)
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return make_hf_clip(root / "clip"), make_hf_siglip(root / "siglip")


def _images(n=5):
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(12, 9, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


def test_hf_clip_folder_equals_direct_transformers_calls(hf_dirs):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    folder = hf_dirs[0]
    model = load_model(f"hf:{folder}", device="cpu")
    assert isinstance(model.embedder, PixelEmbedder) and model.kind == "hf" and model.name == f"hf:{folder}"
    ref = CLIPModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    proc = AutoImageProcessor.from_pretrained(folder)
    texts = ["a cat", "a photo of a dog on the mat", "cat"]
    images = _images()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=16, return_tensors="pt")  # 16 positions
        out = ref.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        want_t = F.normalize(getattr(out, "pooler_output", out), dim=-1)
        out = ref.get_image_features(pixel_values=proc(images=images, return_tensors="pt")["pixel_values"])
        want_i = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    assert torch.allclose(model.embedder.embed_texts(texts), want_t, atol=1e-5)
    assert torch.allclose(model.embedder.embed_images(images), want_i, atol=1e-5)
    assert model.logit_scale == pytest.approx(float(ref.logit_scale.detach().exp()))
    # a caption's embedding does not depend on its batch companions (padding is masked)
    assert torch.allclose(model.embedder.embed_texts(["a cat"])[0], want_t[0], atol=1e-5)


def test_hf_siglip_pads_to_max_length_and_is_batch_independent(hf_dirs):
    from transformers import AutoTokenizer, SiglipModel

    folder = hf_dirs[1]
    model = load_model(f"hf:{folder}", device="cpu")
    ref = SiglipModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    texts = ["a red cat", "the blue dog"]
    with torch.no_grad():
        enc = tok(texts, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
        out = ref.get_text_features(input_ids=enc["input_ids"])
        want = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    got = model.embedder.embed_texts(texts)
    assert torch.allclose(got, want, atol=1e-5)
    alone = model.embedder.embed_texts(["a red cat"])
    assert torch.allclose(alone[0], got[0], atol=1e-6)
    assert model.logit_bias is not None  # SigLIP has a learned bias


def test_dataloader_workers_give_the_same_embeddings(hf_dirs):
    model = load_model(f"hf:{hf_dirs[0]}", device="cpu")
    loaders = [(lambda im=im: im) for im in _images(7)]
    serial = embed_images(model.embedder, loaders, batch_size=3, progress=False, num_workers=0)
    parallel = embed_images(model.embedder, loaders, batch_size=3, progress=False, num_workers=2)
    assert torch.equal(serial, parallel)
    assert torch.allclose(serial, model.embedder.embed_images(_images(7)), atol=1e-6)


def test_fingerprint_follows_the_weights_file(hf_dirs, tmp_path):
    import shutil

    copy = tmp_path / "clip"
    shutil.copytree(hf_dirs[0], copy)
    cache = FeatureCache(tmp_path / "cache")
    a = load_model(f"hf:{hf_dirs[0]}", device="cpu").fingerprint(cache)
    b = load_model(f"hf:{copy}", device="cpu").fingerprint(cache)
    assert a == b  # same content, another folder: same key
    assert load_model(f"hf:{copy}", device="cpu", precision="amp").fingerprint(cache) != a
    weights = copy / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state["logit_scale"] = state["logit_scale"] + 1.0
    save_file(state, str(weights))
    assert load_model(f"hf:{copy}", device="cpu").fingerprint(cache) != a


def test_model_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="clip, siglip"):
        load_model(f"hf:{tmp_path}")
    with pytest.raises(ValueError, match="not a run directory"):
        load_model("no/such/thing")
    with pytest.raises(ValueError, match="open_clip has no model"):
        load_model("open_clip:no-such-arch")
    with pytest.raises(FileNotFoundError, match="--pretrained"):
        load_model("open_clip:ViT-B-32", tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="open_clip"):
        load_model(f"hf:{tmp_path}", pretrained=tmp_path / "x")
