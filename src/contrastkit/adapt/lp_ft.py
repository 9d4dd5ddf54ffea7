"""Fine-tuning the image tower with a classification head: FT and LP-FT (Kumar et al. 2022).

"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution": fine-tuning the
whole encoder with a randomly or poorly initialised head changes the features while the head is still
wrong, which hurts accuracy off the training distribution. LP-FT first fits a linear probe (the head)
on frozen features, then fine-tunes encoder and head together from it.

Both start from the same contrastive model; the head is logits = s · normalize(E(x)) Wᵀ + b:

- ``ft``: W = the zero-shot head (class prompt embeddings), s = the model's logit scale, b = 0
  (how CLIP models are usually fine-tuned, e.g. for WiSE-FT);
- ``lp_ft``: W, b from a logistic-regression probe on the shots' frozen features (C chosen on val), s = 1;
- ``lora``: as ``ft``, but the image side is frozen except for LoRA adapters of rank r on every layer that
  embeds an image (Hu et al. 2022; :func:`~contrastkit.models.lora.image_side_targets`), W' = W + (α/r) B A
  with B = 0 at the start, so the adapted classifier starts as FT's; the head trains as in FT.

Then cross-entropy on the k shots per class, AdamW on encoder and head, ``steps`` steps. The text tower
is not used after the head is built.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from ..config import LoraConfig
from ..models.dual_encoder import DualEncoder
from ..models.lora import add_lora, image_side_targets


@dataclass(frozen=True)
class FineTuneSettings:
    steps: int = 50
    lr: float = 1e-4
    weight_decay: float = 0.1
    batch_size: int = 32


def probe_head(features: Tensor, labels: Tensor, n_classes: int, c: float) -> tuple[Tensor, Tensor]:
    """(W, b) of an L2-regularised logistic regression (inverse strength ``c``) on unit ``features``."""
    x = F.normalize(features.double(), dim=-1).numpy()
    y = labels.numpy()
    present = np.unique(y)
    fit = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    weight = np.zeros((n_classes, x.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class without shots is never predicted
    if len(present) == 2:  # sklearn keeps one row for two classes: logit(present[1]) - logit(present[0])
        weight[present[1]], bias[present[1]] = fit.coef_[0] / 2, fit.intercept_[0] / 2
        weight[present[0]], bias[present[0]] = -fit.coef_[0] / 2, -fit.intercept_[0] / 2
    else:
        weight[present], bias[present] = fit.coef_, fit.intercept_
    return torch.from_numpy(weight).float(), torch.from_numpy(bias).float()


class _Classifier(torch.nn.Module):
    def __init__(self, model: DualEncoder, weight: Tensor, bias: Tensor, scale: float) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        self.weight = torch.nn.Parameter(weight.clone().float())
        self.bias = torch.nn.Parameter(bias.clone().float())
        self.scale = scale

    def forward(self, pixels: Tensor) -> Tensor:
        features = F.normalize(self.model.encode_image(pixels), dim=-1)
        return self.scale * features @ self.weight.T + self.bias


def fine_tune(
    model: DualEncoder,
    weight: Tensor,
    bias: Tensor,
    scale: float,
    pixels: Tensor,
    labels: Tensor,
    settings: FineTuneSettings,
    seed: int,
    lora: LoraConfig | None = None,
) -> _Classifier:
    """A copy of ``model`` with the head (``weight``, ``bias``, ``scale``), fine-tuned on (``pixels``, ``labels``);
    with ``lora`` (its targets replaced by the image side's layers) only the adapters and the head train."""
    torch.manual_seed(seed)
    classifier = _Classifier(model, weight, bias, scale)
    if lora is not None:
        add_lora(classifier.model, replace(lora, targets=image_side_targets(classifier.model)))
    params = [p for p in classifier.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    classifier.train()
    for _ in range(settings.steps):
        rows = torch.randperm(len(pixels), generator=generator)[: settings.batch_size]
        loss = F.cross_entropy(classifier(pixels[rows]), labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return classifier.eval()


@torch.no_grad()
def accuracy(classifier: _Classifier, pixels: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    predictions = torch.cat(
        [classifier(pixels[i : i + batch_size]).argmax(1) for i in range(0, len(pixels), batch_size)]
    )
    return float((predictions == labels).float().mean())
