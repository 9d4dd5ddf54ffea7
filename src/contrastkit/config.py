"""Typed run configuration: YAML recipes, dotted ``--set`` overrides, validation.

A recipe is a YAML file whose top-level keys are the sections below. Every key
is checked: an unknown or misspelt key, or a value of the wrong type or out of
range, stops with an error that names the dotted key and says what is allowed.
What only the layers above can check — term names and parameters, augmentation
preset names — is checked by :func:`contrastkit.engine.recipe.check_recipe`
(``contrastkit train`` runs both before any work).

    cfg = load_config("configs/demo.yaml", overrides=["train.steps=200"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_schema import ClusterConfig, Config, DataConfig, EvalConfig, LoraConfig, ModelConfig, TrainConfig

__all__ = [
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "column_list",
    "config_from_dict",
    "load_config",
    "parse_override",
]


class ConfigError(ValueError):
    """A config value or key is invalid; the message names the dotted key."""


def column_list(value: str | Sequence[str] | None) -> list[str]:
    """Column names as DataConfig holds them: ``"a, b"`` -> ``["a", "b"]``; ``["a"]`` -> ``["a"]``; ``""`` -> ``[]``."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip() for item in items if str(item).strip()]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown key {dotted!r}{hint}; allowed keys here: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):  # a type hint: a dataclass type, never an instance
            kwargs[key] = _build(typing.cast(type, tp), value or {}, dotted)
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def _check_ranges(cfg: Config) -> None:
    positive = {
        "train.steps": cfg.train.steps,
        "train.batch_size": cfg.train.batch_size,
        "data.train_size": cfg.data.train_size,
        "data.eval_size": cfg.data.eval_size,
        "data.image_size": cfg.data.image_size,
        "model.embed_dim": cfg.model.embed_dim,
        "model.width": cfg.model.width,
        "model.context_length": cfg.model.context_length,
        "model.vocab_size": cfg.model.vocab_size,
        "eval.batch_size": cfg.eval.batch_size,
        "model.text_layers": cfg.model.text_layers,
        "train.accum_steps": cfg.train.accum_steps,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    non_negative = {
        "train.warmup_steps": cfg.train.warmup_steps,
        "train.grad_clip": cfg.train.grad_clip,
        "train.eval_every": cfg.train.eval_every,
        "train.checkpoint_every": cfg.train.checkpoint_every,
        "train.weight_decay": cfg.train.weight_decay,
        "data.workers": cfg.data.workers,
        "eval.max_records": cfg.eval.max_records,
        "train.threads": cfg.train.threads,
        "data.neg_per_image": cfg.data.neg_per_image,
    }
    for key, amount in non_negative.items():
        if amount < 0:
            raise ConfigError(f"{key}: must be >= 0, got {amount}")
    if cfg.train.batch_size % cfg.train.accum_steps:
        raise ConfigError(
            f"train.accum_steps: must divide train.batch_size ({cfg.train.batch_size}), got {cfg.train.accum_steps}"
        )
    if not (cfg.train.device in ("auto", "cpu", "cuda") or cfg.train.device.startswith("cuda:")):
        raise ConfigError(f"train.device: {cfg.train.device!r} is not allowed; choose auto, cpu, cuda or cuda:N")
    if not 0 <= cfg.train.teacher_momentum < 1:
        raise ConfigError(f"train.teacher_momentum: must be in [0, 1), got {cfg.train.teacher_momentum}")
    if cfg.data.views < 0:
        raise ConfigError(f"data.views: must be >= 0, got {cfg.data.views}")
    for key in ("val_fraction", "test_fraction"):
        value = getattr(cfg.data, key)
        if not 0 <= value < 1:
            raise ConfigError(f"data.{key}: must be in [0, 1), got {value}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction: must be below 1 (the rest is train), got "
            f"{cfg.data.val_fraction} + {cfg.data.test_fraction}"
        )
    if cfg.data.shuffle_buffer < 0:
        raise ConfigError(f"data.shuffle_buffer: must be >= 0, got {cfg.data.shuffle_buffer}")
    if not cfg.data.image_column.strip():
        raise ConfigError("data.image_column: must name a column, got an empty string")
    if not column_list(cfg.data.caption_columns):
        raise ConfigError("data.caption_columns: name at least one caption column (e.g. caption)")
    if "{}" not in cfg.data.class_template and "{c}" not in cfg.data.class_template:
        raise ConfigError(f"data.class_template: must contain {{}} for the class name, got {cfg.data.class_template!r}")
    if not cfg.train.lr > 0:
        raise ConfigError(f"train.lr: must be positive, got {cfg.train.lr}")
    if cfg.train.log_every <= 0:
        raise ConfigError(f"train.log_every: must be positive, got {cfg.train.log_every}")
    if cfg.model.logit_scale_max < 1:
        raise ConfigError(f"model.logit_scale_max: must be >= 1, got {cfg.model.logit_scale_max}")
    for i, beta in enumerate(cfg.train.betas):
        if not 0 <= beta < 1:
            raise ConfigError(f"train.betas[{i}]: must be in [0, 1), got {beta}")
    for i, k in enumerate(cfg.clusters.sizes):
        if k < 2:
            raise ConfigError(f"clusters.sizes[{i}]: a clustering needs at least 2 clusters, got {k}")
    if cfg.clusters.every < 0 or cfg.clusters.iters < 1:
        raise ConfigError(
            f"clusters.every must be >= 0 and clusters.iters >= 1, got {cfg.clusters.every} and {cfg.clusters.iters}"
        )
    if not cfg.clusters.phi_mean > 0:
        raise ConfigError(f"clusters.phi_mean: must be positive, got {cfg.clusters.phi_mean}")
    if not cfg.objective:
        raise ConfigError("objective: list at least one term, e.g. [{name: clip, weight: 1.0}]")
    _check_lora(cfg.lora)


def _check_lora(lora: LoraConfig) -> None:
    if lora.rank < 0:
        raise ConfigError(f"lora.rank: must be >= 0 (0: no adapters), got {lora.rank}")
    if lora.alpha <= 0:
        raise ConfigError(f"lora.alpha: must be positive, got {lora.alpha}")
    if lora.rank and not [t for t in lora.targets if t.strip()]:
        raise ConfigError("lora.targets: name at least one module (e.g. [self_attn, linear1, linear2])")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"lora.dropout: must be in [0, 1), got {lora.dropout}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` -> (["train", "steps"], 200); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value (e.g. train.steps=200)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {err}") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(
                        f"override {text!r}: {'.'.join(path[: i + 1])} is not an index of the list"
                    ) from None
                continue
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is not a section")
        if isinstance(node, list):
            try:
                node[int(path[-1])] = value
            except (ValueError, IndexError):
                raise ConfigError(f"override {text!r}: {path[-1]} is not an index of the list") from None
        else:
            node[path[-1]] = value
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated by a recipe: nested sections merge, other values (lists too) replace."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_from_dict(data: Mapping[str, Any]) -> Config:
    cfg = _build(Config, data, "")
    _check_ranges(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist (recipes live in configs/)")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, ...)")
        data = loaded or {}
    data = apply_overrides(_deep_merge(Config().to_dict(), data), overrides)
    return config_from_dict(data)
