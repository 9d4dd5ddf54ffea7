"""The evaluation view of a map-style source: the first ``limit`` usable records of a val / test split.

In ``skip`` mode a record whose text was flagged or whose image does not
decode is left out (so evaluation never stops on one); in ``raise`` mode the
view only caps the length and a bad record stops evaluation with its error.
Zero-shot tasks are re-indexed to the view.
"""

from __future__ import annotations

from typing import Any

from .problems import DataError
from .records import Dataset, Record, ZeroShotTask


class CheckedView:
    streaming = False

    def __init__(self, dataset: Dataset, limit: int, skip_bad: bool) -> None:
        self.dataset, self.limit, self.skip_bad = dataset, limit, skip_bad
        self.name = getattr(dataset, "name", type(dataset).__name__)
        self.split = getattr(dataset, "split", "?")
        self._indices: list[int] | None = None
        self.skipped: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:  # data_options, classnames, ... of the source
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def indices(self) -> list[int]:
        if self._indices is None:
            if not self.skip_bad:
                self._indices = list(range(min(self.limit, len(self.dataset))))
            else:
                kept: list[int] = []
                for i in range(len(self.dataset)):
                    if len(kept) >= self.limit:
                        break
                    record = self.dataset[i]
                    problem = getattr(record, "problem", None)
                    reason = problem.reason if problem is not None else None
                    if reason is None:
                        try:
                            record.load_image()
                        except DataError as err:
                            reason = err.reason
                    if reason is None:
                        kept.append(i)
                    else:
                        self.skipped[reason] = self.skipped.get(reason, 0) + 1
                self._indices = kept
        return self._indices

    def __len__(self) -> int:
        return len(self.indices())

    def __getitem__(self, index: int) -> Record:
        return self.dataset[self.indices()[index]]

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        position = {j: i for i, j in enumerate(self.indices())}
        tasks = []
        for task in self.dataset.zeroshot_tasks():
            keep = [(position[j], lab) for j, lab in zip(task.indices, task.labels) if j in position]
            if keep:
                tasks.append(
                    ZeroShotTask(
                        task.name,
                        list(task.classnames),
                        list(task.templates),
                        [i for i, _ in keep],
                        [lab for _, lab in keep],
                    )
                )
        return tasks
