"""A recipe checked whole: the config's own keys, then what only the layers above config know.

:func:`~contrastkit.config.load_config` validates every key and value of the config itself.
The objective's term names and parameters are checked by building the objective, and the
augmentation presets by the data layer that defines them; both errors name the dotted key.
``contrastkit train`` runs :func:`load_recipe` (or :func:`check_recipe` on a resumed run's
config) before any work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import Config, ConfigError, load_config
from ..data.transforms import IMAGE_PRESETS, TEXT_AUGMENTS
from ..objectives import Objective, build
from .experiment_log import check_sinks


def check_recipe(cfg: Config) -> Objective:
    """Raise :class:`ConfigError` naming the key when a term or a preset is unknown, or a log sink's package
    is missing; the built objective."""
    check_sinks(cfg.train.log)
    for key, value, allowed in (
        ("data.image_augment", cfg.data.image_augment, IMAGE_PRESETS),
        ("data.view_image_augment", cfg.data.view_image_augment, IMAGE_PRESETS),
        ("data.view_text_augment", cfg.data.view_text_augment, TEXT_AUGMENTS),
    ):
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(allowed)}")
    try:
        return build(cfg.objective)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """:func:`~contrastkit.config.load_config` followed by :func:`check_recipe`."""
    cfg = load_config(path, overrides)
    check_recipe(cfg)
    return cfg
