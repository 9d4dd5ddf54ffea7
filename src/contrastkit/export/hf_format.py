"""Export a run with open_clip towers as a Hugging Face ``CLIPModel`` directory (``from_pretrained`` offline).

open_clip's plain ``CLIP`` (a ViT image tower and its own causal text transformer, pooled at the end-of-text
token) is the architecture of transformers' ``CLIPModel``; the weights map one to one, with the attention's
packed input projection split into q, k and v (the same split transformers' own OpenAI-CLIP converter does):

    visual.conv1, class_embedding, positional_embedding -> vision_model.embeddings.{patch,class,position}_embedding
    visual.ln_pre, ln_post                          -> vision_model.pre_layrnorm, post_layernorm
    visual.proj, text_projection                    -> visual_projection, text_projection (transposed)
    token_embedding, positional_embedding, ln_final -> text_model.embeddings.*, text_model.final_layer_norm
    <tower>.transformer.resblocks.i.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}
        -> <model>.encoder.layers.i.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}
    logit_scale                                     -> logit_scale (log t in both)

The tokenizer files (``vocab.json``, ``merges.txt``) are written from open_clip's own BPE tables, so
``CLIPTokenizer.from_pretrained(DIR)`` gives open_clip's token ids. Architectures with options ``CLIPModel``
does not have (a timm or Hugging Face tower, attentional pooling, layer scale, a text pooling other than the
end-of-text token, a logit bias as in SigLIP) are refused, naming the option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config
from ..models.dual_encoder import DualEncoder
from .open_clip_format import ExportError, architecture, open_clip_name, open_clip_state

UNSUPPORTED = {  # open_clip config key -> the value CLIPModel implies
    "vision_cfg": {"timm_model_name": None, "attentional_pool": False, "ls_init_value": None, "no_ln_pre": False,
                   "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None},
    "text_cfg": {"hf_model_name": None, "ls_init_value": None, "pool_type": "argmax", "proj_bias": False,
                 "embed_cls": False, "no_causal_mask": False, "act_kwargs": None, "norm_kwargs": None},
}  # fmt: skip


def hf_config(arch: dict[str, Any], name: str) -> dict[str, Any]:
    """``CLIPConfig`` keyword arguments for open_clip architecture ``arch``; refuses what CLIPModel lacks."""
    for part, defaults in UNSUPPORTED.items():
        for key, value in defaults.items():
            got = arch.get(part, {}).get(key, value)
            if got != value:
                raise ExportError(
                    f"--format hf: open_clip:{name} sets {part}.{key}={got!r}, which CLIPModel has no place for"
                )
    if "init_logit_bias" in arch:
        raise ExportError("--format hf: this run has a logit bias (a sigmoid loss); CLIPModel has none")
    vision, text = arch["vision_cfg"], arch["text_cfg"]
    act = "quick_gelu" if arch.get("quick_gelu", False) else "gelu"
    v_width = vision["width"]
    t_width = text["width"]
    return {
        "projection_dim": arch["embed_dim"],
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": int(v_width * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": vision["layers"],
            "num_attention_heads": v_width // vision.get("head_width", 64),
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
        },
        "text_config": {
            "hidden_size": t_width,
            "intermediate_size": int(t_width * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": text["layers"],
            "num_attention_heads": text["heads"],
            "max_position_embeddings": text["context_length"],
            "vocab_size": text["vocab_size"],
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 0,
        },
    }


def _blocks(state: dict[str, Tensor], src: str, dst: str, layers: int) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for i in range(layers):
        a, b = f"{src}transformer.resblocks.{i}.", f"{dst}.encoder.layers.{i}."
        q, k, v = state[a + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = state[a + "attn.in_proj_bias"].chunk(3)
        out |= {b + "self_attn.q_proj.weight": q, b + "self_attn.k_proj.weight": k, b + "self_attn.v_proj.weight": v}
        out |= {b + "self_attn.q_proj.bias": qb, b + "self_attn.k_proj.bias": kb, b + "self_attn.v_proj.bias": vb}
        pairs = {
            "attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
        }  # fmt: skip
        for old, new in pairs.items():
            for p in ("weight", "bias"):
                out[f"{b}{new}.{p}"] = state[f"{a}{old}.{p}"]
    return out


def hf_state(state: dict[str, Tensor], config: dict[str, Any]) -> dict[str, Tensor]:
    """open_clip ``CLIP`` weights (see :func:`open_clip_state`) under ``CLIPModel``'s keys."""
    vm, tm = "vision_model", "text_model"
    out = {
        f"{vm}.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        f"{vm}.embeddings.class_embedding": state["visual.class_embedding"],
        f"{vm}.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "visual_projection.weight": state["visual.proj"].T,
        f"{tm}.embeddings.token_embedding.weight": state["token_embedding.weight"],
        f"{tm}.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_projection.weight": state["text_projection"].T,
        "logit_scale": state["logit_scale"],
    }
    for old, new in (("visual.ln_pre", f"{vm}.pre_layrnorm"), ("visual.ln_post", f"{vm}.post_layernorm"),
                     ("ln_final", f"{tm}.final_layer_norm")):  # fmt: skip
        out[f"{new}.weight"], out[f"{new}.bias"] = state[f"{old}.weight"], state[f"{old}.bias"]
    out |= _blocks(state, "visual.", vm, config["vision_config"]["num_hidden_layers"])
    out |= _blocks(state, "", tm, config["text_config"]["num_hidden_layers"])
    return {k: v.contiguous().clone() for k, v in out.items()}


def write_tokenizer(name: str, out: Path) -> list[str]:
    """``vocab.json`` + ``merges.txt`` from open_clip's BPE tables, with CLIPTokenizer's special-token names."""
    import open_clip

    bpe = open_clip.get_tokenizer(name)
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(token, token): int(index) for token, index in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges))
    return ["vocab.json", "merges.txt"]


def export_hf(model: DualEncoder, cfg: Config, out: Path) -> dict[str, str]:
    """Write a ``CLIPModel`` directory (config.json, model.safetensors, tokenizer files) to ``out``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    name = open_clip_name(cfg)
    state = open_clip_state(model)
    config = hf_config(architecture(name, "logit_bias" in state), name)
    clip = CLIPModel(CLIPConfig(**config))
    clip.load_state_dict(hf_state(state, config), strict=True)
    out.mkdir(parents=True, exist_ok=True)
    clip.save_pretrained(str(out), safe_serialization=True)
    write_tokenizer(name, out)
    length = config["text_config"]["max_position_embeddings"]
    CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=length).save_pretrained(str(out))
    return {"config": "config.json", "weights": "model.safetensors", "tokenizer": "vocab.json, merges.txt"}


@torch.no_grad()
def verify_hf(model: DualEncoder, out: Path, texts: list[str], pixels: Tensor) -> float:
    """Max |difference| between the run's embeddings and ``CLIPModel.from_pretrained(out)``'s (same tokens)."""
    import torch.nn.functional as F
    from transformers import CLIPModel, CLIPTokenizer

    loaded = CLIPModel.from_pretrained(str(out)).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(out))
    model.eval()
    ours = torch.cat([model.encode_image(pixels), model.encode_text(model.tokenize(texts))])
    ids = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    image = projected(loaded.get_image_features(pixel_values=pixels))
    text = projected(loaded.get_text_features(input_ids=ids))
    theirs = F.normalize(torch.cat([image, text]), dim=-1)
    return float((ours - theirs).abs().max())


def projected(output: Any) -> Tensor:
    """The projected features of ``get_image_features`` / ``get_text_features``: a tensor before transformers 5,
    the output's ``pooler_output`` from 5 on."""
    return output if isinstance(output, Tensor) else output.pooler_output
