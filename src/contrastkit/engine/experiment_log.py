"""Where a run's metrics go: ``metrics.jsonl`` always, TensorBoard and wandb (offline) when ``train.log`` lists them.

``metrics.jsonl`` is the run's own record (the report's loss curve and resuming read it), so it is written
whatever ``train.log`` says. ``tensorboard`` writes event files under ``RUN/tensorboard`` (open them with
``tensorboard --logdir RUN``): every numeric field of a training line as ``train/<field>`` (loss per term,
lr, temperature, samples/s, grad norm), the quick validation evaluations as ``val/<metric>``, the final
evaluation's headline metrics as ``eval/<metric>`` and the embedding-gap figure. ``wandb`` logs the same
to a wandb run in offline mode under ``RUN/wandb`` (``wandb sync`` uploads it later); it never goes online
by itself. A resumed run drops what TensorBoard recorded after the resume step, as the JSONL log does;
wandb cannot rewind a run's history, so a resumed run starts a new offline wandb run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..config import ConfigError
from .metrics_log import MetricsLog

SINKS = ("jsonl", "tensorboard", "wandb")
FIGURES = ("embedding_gap.png",)  # figures of the final report sent to the sinks that take images


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a metrics record, nested mappings flattened with ``/``; ``step`` and text dropped."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "split"):
            continue
        if isinstance(value, Mapping):
            out.update(scalars(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def tagged(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's scalars named for the sinks: ``train/<field>`` for a training line; an evaluation line
    (one with a ``split``) already names its metrics ``<split>/...``."""
    values = scalars(record)
    return values if "split" in record else {f"train/{key}": value for key, value in values.items()}


class Sink(Protocol):
    def write(self, record: Mapping[str, Any]) -> None: ...

    def final(self, step: int, metrics: Mapping[str, float], figures: Mapping[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """TensorBoard event files through ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, folder: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: Mapping[str, Any]) -> None:
        for tag, value in tagged(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def final(self, step: int, metrics: Mapping[str, float], figures: Mapping[str, np.ndarray]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        for name, pixels in figures.items():
            self.writer.add_image(f"eval/{name}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A wandb run in offline mode (needs the ``wandb`` package); ``wandb sync RUN/wandb/offline-run-*`` uploads it."""

    def __init__(self, run_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            mode="offline",
            dir=str(run_dir),  # wandb writes into its own RUN/wandb folder
            project="contrastkit",
            name=name,
            config=dict(config),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),  # the run's own output stays in the terminal
        )

    def write(self, record: Mapping[str, Any]) -> None:
        self.run.log(tagged(record), step=int(record["step"]))

    def final(self, step: int, metrics: Mapping[str, float], figures: Mapping[str, np.ndarray]) -> None:
        values: dict[str, Any] = dict(metrics)
        values.update({f"eval/{name}": self.wandb.Image(pixels) for name, pixels in figures.items()})
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def check_sinks(names: Sequence[str]) -> None:
    """Fail before training when a listed sink's package is missing, saying what to install."""
    packages = {"tensorboard": "tensorboard", "wandb": "wandb"}
    for name in names:
        if name not in packages:
            continue
        try:
            __import__(packages[name])
        except ImportError:
            raise ConfigError(
                f"train.log: {name!r} needs the {packages[name]} package: pip install 'contrastkit[logging]' "
                f"(or remove {name!r} from train.log)"
            ) from None


class RunLog:
    """The run's metrics log (JSONL) and the extra sinks of ``train.log``; rank 0 only."""

    def __init__(
        self,
        run_dir: Path,
        sinks: Sequence[str],
        resume_step: int | None = None,
        name: str = "run",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        check_sinks(sinks)
        self.jsonl = MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step)
        self.path = self.jsonl.path
        self.sinks: list[Sink] = []
        if "tensorboard" in sinks:
            self.sinks.append(TensorBoardSink(run_dir / "tensorboard", resume_step))
        if "wandb" in sinks:
            self.sinks.append(WandbSink(run_dir, name, config or {}))

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(record)
        for sink in self.sinks:
            sink.write(record)

    def read(self) -> list[dict[str, Any]]:
        return self.jsonl.read()

    def final(self, step: int, metrics: Mapping[str, float], run_dir: Path) -> None:
        """The final evaluation's headline metrics (named ``eval/...``) and the report's figures; closes the sinks."""
        if not self.sinks:
            return
        figures = {
            Path(name).stem: np.asarray(Image.open(run_dir / name).convert("RGB"))
            for name in FIGURES
            if (run_dir / name).exists()
        }
        for sink in self.sinks:
            sink.final(step, metrics, figures)
        self.close()

    def close(self) -> None:
        """Flush and close the extra sinks (also when training stops with an error)."""
        for sink in self.sinks:
            sink.close()
        self.sinks = []
