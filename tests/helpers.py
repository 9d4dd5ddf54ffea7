"""Shared test helpers: the tiny open_clip architecture, the simulated kill, loss inputs and their gradients."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

TINY_OPEN_CLIP = "ck-test-ViT-tiny"


def register_tiny_open_clip(folder: Path) -> str:
    """Register a 2-layer ViT/text open_clip config (32 px) and return its name."""
    import open_clip

    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_OPEN_CLIP


def save_tiny_open_clip(folder: Path, seed: int = 0) -> tuple[str, Path]:
    """Register the tiny architecture, save a seeded random-init model as safetensors; (name, weights path)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    name = register_tiny_open_clip(folder / "cfg")
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    weights = folder / "tiny.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(weights))
    return name, weights


def kill_at_step(monkeypatch, trainer_module, step: int) -> Callable[[], None]:
    """Make training raise KeyboardInterrupt when it reaches ``step``; returns the undo (a simulated kill)."""
    real_lr_at = trainer_module.lr_at

    def dies(at: int, cfg):
        if at == step:
            raise KeyboardInterrupt("simulated kill")
        return real_lr_at(at, cfg)

    monkeypatch.setattr(trainer_module, "lr_at", dies)
    return lambda: monkeypatch.setattr(trainer_module, "lr_at", real_lr_at)


def pair_inputs(
    rows: int, dim: int = 6, cols: int | None = None, dtype=None, seed: int = 0, scale: float = 3.0, bias: float = -2.0
):
    """L2-normalised image/text rows (correlated pairs when ``cols`` is None), a temperature and a bias.

    ``dtype`` defaults to float64 (the exactness tests).
    """
    import torch
    import torch.nn.functional as F

    dtype = torch.float64 if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(rows, dim, generator=g, dtype=dtype), dim=1)
    y = F.normalize(torch.randn(rows if cols is None else cols, dim, generator=g, dtype=dtype), dim=1)
    if cols is None:  # correlated pairs, so positives matter
        y = F.normalize(y + x, dim=1)
    return x, y, torch.tensor(scale, dtype=dtype), torch.tensor(bias, dtype=dtype)


def value_and_grads(fn: Callable, *args):
    """``fn`` on fresh leaf copies of ``args``: (detached value, gradients of the value w.r.t. each)."""
    import torch

    leaves = [a.detach().clone().requires_grad_(True) for a in args]
    value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def assert_value_and_grads_close(
    got, ref, names: str | list[str], value_tol: float = 1e-12, grad_rtol: float = 1e-10, grad_atol: float = 1e-12
) -> None:
    """Two ``value_and_grads`` results agree (float64 tolerances by default); gradients named in failures."""
    import torch

    torch.testing.assert_close(got[0], ref[0], rtol=value_tol, atol=value_tol)
    for name, a, b in zip(names, got[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, rtol=grad_rtol, atol=grad_atol, msg=f"d{name}")


def unit(*shape: int, seed: int = 0, dtype=None):
    """Rows of a seeded standard normal tensor of ``shape``, L2-normalised along the last dim (float64 default)."""
    import torch
    import torch.nn.functional as F

    dtype = torch.float64 if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def naive_mlp(seq, x):
    """A projector (``nn.Sequential`` of Linear / BatchNorm1d / ReLU) written out from its weights.

    BatchNorm uses the batch statistics (biased variance), as in training mode.
    """
    import torch
    from torch import nn

    for m in seq:
        if isinstance(m, nn.Linear):
            x = x @ m.weight.t() + (m.bias if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm1d):
            mean = x.mean(dim=0)
            var = ((x - mean) ** 2).mean(dim=0)
            x = (x - mean) / torch.sqrt(var + m.eps)
            if m.affine:
                x = x * m.weight + m.bias
        elif isinstance(m, nn.ReLU):
            x = torch.where(x > 0, x, torch.zeros_like(x))
        else:  # pragma: no cover
            raise AssertionError(type(m))
    return x


def frozen_group_whiten(x, ref, groups: int, eps: float, perm=None):
    """Group whitening of ``x`` centred by its own mean but with W computed from the constant ``ref`` batch.

    With ``ref`` the batch ``x`` is evaluated at, it equals ``group_whiten(x, ...)``; as a function of ``x``
    it is what ``detach_whitening=True`` differentiates, so finite differences (gradcheck) can check it.
    """
    import torch

    n, f = x.shape
    d = f // groups
    if perm is not None:
        x, ref = x[:, perm], ref[:, perm]
    outs = []
    for g in range(groups):
        block = x[:, g * d : (g + 1) * d] - x[:, g * d : (g + 1) * d].mean(dim=0)
        r = (ref[:, g * d : (g + 1) * d] - ref[:, g * d : (g + 1) * d].mean(dim=0)).detach()
        lam, u = torch.linalg.eigh(r.t() @ r / n)
        outs.append(block @ (u @ torch.diag((lam + eps).rsqrt()) @ u.t()))
    y = torch.cat(outs, dim=1)
    return y[:, torch.argsort(perm)] if perm is not None else y


# A 2-step run of the demo recipe on a 32-pixel world: the training-path tests of the data sources.
TINY_TRAINING = [
    "data.image_size=32",
    "model.width=32",
    "model.embed_dim=32",
    "model.context_length=20",
    "train.batch_size=8",
    "train.steps=2",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.progress=false",
    "train.threads=1",
    "eval.max_records=16",
    "data.eval_size=16",
    "train.eval_every=0",
    "train.checkpoint_every=0",
]


def tiny_demo_run(root: Path, train_size: int) -> Path:
    """The demo recipe trained 2 steps (TINY_TRAINING) on ``train_size`` records into ``root``: a run to adapt."""
    from contrastkit.config import load_config
    from contrastkit.engine.trainer import train

    train(load_config("configs/demo.yaml", [*TINY_TRAINING, f"data.train_size={train_size}"]), root)
    return root
