"""Shared building blocks for objective terms that own parameters (projector heads).

Not a term family: it registers nothing. Heads whose input width depends on the
model are built lazily (``nn.LazyLinear`` / :class:`LazySquareLinear`) so that
recipes need not repeat model sizes.

Lazy-initialisation contract (for the engine)
---------------------------------------------
A lazy parameter has no shape until the first forward. Before building the
optimizer (and before wrapping in DDP), the engine must:

1. move the objective to the training device / dtype (``objective.to(device)``;
   lazy parameters materialise with the device and dtype they carry, not the
   input's);
2. call the objective once on a dry batch with the training shapes, e.g.
   ``objective.eval(); with torch.no_grad(): objective(dry_enc); objective.train()``
   (eval mode keeps BatchNorm running statistics untouched and works at any
   batch size);
3. only then collect ``objective.parameters()`` (``has_lazy_parameters`` must be
   False). Loading a checkpoint's state dict also materialises them.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter, is_lazy


def has_lazy_parameters(module: nn.Module) -> bool:
    """True while some parameter or buffer of ``module`` has not been materialised."""
    return any(is_lazy(p) for p in module.parameters()) or any(is_lazy(b) for b in module.buffers())


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad_(False)`` that also works before lazy parameters are materialised."""
    for sub in module.modules():
        for key, param in list(sub._parameters.items()):
            if param is None:
                continue
            if is_lazy(param):
                sub._parameters[key] = UninitializedParameter(
                    requires_grad=False, device=param.device, dtype=param.dtype
                )
            else:
                param.requires_grad_(False)
    return module


def positive_int(term: str, key: str, value: object) -> int:
    """``value`` when it is an int >= 1; else a ValueError naming the term and the hyperparameter."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{term}: {key} must be a positive integer, got {value!r}")
    return value


def momentum_in_unit_interval(term: str, key: str, value: float) -> float:
    """An EMA momentum in [0, 1] as float; else a ValueError naming the term and the hyperparameter."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{term}: {key} must be in [0, 1], got {value}")
    return float(value)


@torch.no_grad()
def start_as_copy(target: nn.Module, online: nn.Module, x: Tensor) -> None:
    """Give a lazy EMA ``target`` its shapes from input ``x``, then make it a copy of ``online`` (no-op after)."""
    if has_lazy_parameters(target):
        target(x)
        target.load_state_dict(online.state_dict())


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """xi <- m xi + (1 - m) theta over the parameters; buffers (BatchNorm statistics) copied. No-op while lazy."""
    if has_lazy_parameters(target) or has_lazy_parameters(online):
        return  # not materialised yet (no forward so far): nothing to average
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t_buf, o_buf in zip(target.buffers(), online.buffers()):
        t_buf.copy_(o_buf)


def linear(in_dim: int | None, out_dim: int, bias: bool = True) -> nn.Module:
    """``nn.Linear`` when the input width is known, ``nn.LazyLinear`` otherwise."""
    return nn.LazyLinear(out_dim, bias=bias) if in_dim is None else nn.Linear(in_dim, out_dim, bias=bias)


def mlp(
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    *,
    in_dim: int | None = None,
    bias: bool = True,
    last_bias: bool | None = None,
    last_bn: str = "none",
) -> nn.Sequential:
    """Projector ``[Linear -> BN -> ReLU] x (num_layers - 1) -> Linear [-> BN]``.

    ``num_layers = 1`` is a single (lazy) linear map. ``last_bn``: ``"none"``,
    ``"affine"`` (learnable BN, as BarLIP) or ``"plain"`` (``affine=False``, as SimSiam).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if last_bn not in ("none", "affine", "plain"):
        raise ValueError(f"last_bn must be 'none', 'affine' or 'plain', got {last_bn!r}")
    layers: list[tuple[str, nn.Module]] = []
    width = in_dim
    for i in range(1, num_layers):
        layers += [
            (f"linear{i}", linear(width, hidden_dim, bias)),
            (f"bn{i}", nn.BatchNorm1d(hidden_dim)),
            (f"relu{i}", nn.ReLU()),
        ]
        width = hidden_dim
    layers.append((f"linear{num_layers}", linear(width, out_dim, bias if last_bias is None else last_bias)))
    if last_bn != "none":
        layers.append((f"bn{num_layers}", nn.BatchNorm1d(out_dim, affine=last_bn == "affine")))
    return nn.Sequential(OrderedDict(layers))


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def check_bn_batch(term: str, module: nn.Module, rows: int) -> None:
    """BatchNorm in training mode needs >= 2 rows; say so in words instead of torch's message."""
    if rows < 2 and module.training and has_batchnorm(module):
        raise ValueError(
            f"objective term {term!r}: its projector uses BatchNorm, which is undefined for a "
            f"global batch of {rows} row(s) in training mode; use a batch of at least 2"
        )


def check_features(term: str, field: str, x: Tensor, ndim: int) -> None:
    if x.ndim != ndim:
        shape = "B x F" if ndim == 2 else "V x B x F"
        raise ValueError(f"objective term {term!r}: {field} must be {shape}, got shape {tuple(x.shape)}")


class LazySquareLinear(LazyModuleMixin, nn.Linear):
    """A ``Linear(F, F)`` whose width F is inferred from the first input (like ``nn.LazyLinear``)."""

    cls_to_become = nn.Linear
    weight: UninitializedParameter
    # Uninitialised until the first input, or None without a bias (as in nn.Linear, which mypy sees as Parameter).
    bias: UninitializedParameter | None  # type: ignore[assignment]  # nn.Linear's bias is inferred as Parameter

    def __init__(self, bias: bool = True, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(0, 0, False)
        # torch's stub gives UninitializedParameter Parameter's (data, requires_grad); its __new__ takes device, dtype.
        self.weight = UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]  # torch stub bug
        if bias:
            self.bias = UninitializedParameter(device=device, dtype=dtype)  # type: ignore[call-arg]  # torch stub bug

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def initialize_parameters(self, input: Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.in_features = self.out_features = int(input.shape[-1])
                self.weight.materialize((self.out_features, self.in_features))
                if self.bias is not None:
                    self.bias.materialize((self.out_features,))
                self.reset_parameters()
