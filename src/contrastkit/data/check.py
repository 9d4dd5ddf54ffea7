"""Scan a source for bad records (``contrastkit data check SPEC``).

Every record of the split is built and its image decoded, exactly as training
would; problems are grouped by reason (:data:`~contrastkit.data.problems.REASONS`)
with the first examples of each. Captions longer than the text context
(``context_length`` tokens of the built-in tokenizer, BOS and EOS included)
are listed as ``caption_too_long``: training keeps them, truncated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .convert import iter_source
from .problems import REASONS, DataError, Problem, caption_tokens
from .records import Dataset


@dataclass
class CheckReport:
    name: str
    split: str
    records: int = 0  # records (and bad shard ends) scanned
    good: int = 0  # records usable for training
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[Problem]] = field(default_factory=dict)

    def add(self, problem: Problem, keep: int) -> None:
        self.counts[problem.reason] += 1
        shown = self.examples.setdefault(problem.reason, [])
        if len(shown) < keep:
            shown.append(problem)

    @property
    def ok(self) -> bool:
        return not self.counts

    def table(self) -> str:
        """Problems by reason (most frequent first) with their first examples."""
        head = (
            f"checked {self.records} records of {self.name} [{self.split}]: {self.good} usable, "
            f"{sum(self.counts.values())} problems"
        )
        if self.ok:
            return head + "\nno problems found"
        width = max(len("reason"), *(len(r) for r in self.counts))
        lines = [
            head,
            "",
            f"{'reason':<{width}}  {'count':>7}  first examples",
            f"{'-' * width}  {'-' * 7}  {'-' * 40}",
        ]
        for reason, count in self.counts.most_common():
            examples = self.examples.get(reason, [])
            first = f"{examples[0].where}: {examples[0].detail}" if examples else ""
            lines.append(f"{reason:<{width}}  {count:>7}  {first}")
            for ex in examples[1:]:
                lines.append(f"{'':<{width}}  {'':>7}  {ex.where}: {ex.detail}")
        lines.append("")
        for reason in self.counts:
            lines.append(f"  {reason}: {REASONS.get(reason, '')}")
        return "\n".join(lines)


def check_source(
    dataset: Dataset, *, context_length: int = 0, limit: int | None = None, examples: int = 3, progress: bool = True
) -> CheckReport:
    """Scan ``dataset`` (open it with ``on_error=skip`` or ``raise``: both work); ``context_length`` 0 skips
    the caption-length check."""
    from tqdm.auto import tqdm

    report = CheckReport(getattr(dataset, "name", type(dataset).__name__), getattr(dataset, "split", "?"))
    total = None if getattr(dataset, "streaming", False) else len(dataset)
    if limit is not None and total is not None:
        total = min(total, limit)
    room = context_length - 2
    bar = tqdm(total=total, desc=f"check {report.name}", unit="rec", disable=not progress, dynamic_ncols=True)
    for item in iter_source(dataset):
        if limit is not None and report.records >= limit:
            break
        report.records += 1
        bar.update(1)
        if isinstance(item, Problem):
            report.add(item, examples)
            continue
        try:
            if getattr(item, "anchor", None) is None:  # a text pair has an anchor text instead of an image
                item.load_image()
        except DataError as err:
            report.add(Problem.of(err), examples)
            continue
        if not item.captions:
            report.add(Problem("empty_caption", item.key or "?", "no caption"), examples)
            continue
        report.good += 1
        if context_length > 0:
            longest = max(item.captions, key=caption_tokens)
            n = caption_tokens(longest)
            if n > room:
                report.add(
                    Problem(
                        "caption_too_long",
                        item.key or "?",
                        f"{n} tokens > {room} (context {context_length}); kept, truncated: {longest[:60]!r}...",
                    ),
                    examples,
                )
    bar.close()
    return report
