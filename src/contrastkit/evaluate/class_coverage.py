"""Do the class names of a zero-shot task occur in the captions the model was trained on?

A contrastive model can only place a class name where its training captions put it. A class whose name
never occurs in the training captions (as whole words, case-insensitive) gets a text embedding the
model never learned to align, and its zero-shot accuracy sits near chance with nothing in the numbers
to say why. Pretrained text towers (MiniLM, open_clip weights) may still know such words, so this is a
warning in the report, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


def unseen_classnames(classnames: Sequence[str], captions: Iterable[str]) -> list[str]:
    """The class names none of ``captions`` contains as a whole-word phrase (case-insensitive)."""
    text = "\n".join(c.lower() for c in captions)
    unseen = []
    for name in classnames:
        words = re.findall(r"\w+", name.lower())
        pattern = r"\b" + r"\W+".join(map(re.escape, words)) + r"\b"
        if not words or re.search(pattern, text) is None:
            unseen.append(name)
    return unseen


def coverage_warning(task: str, unseen: Sequence[str], n_classes: int, n_captions: int) -> str:
    """The report's sentence for ``unseen`` class names of zero-shot task ``task``."""
    shown = ", ".join(repr(n) for n in unseen[:10]) + (f" and {len(unseen) - 10} more" if len(unseen) > 10 else "")
    return (
        f"zero-shot {task!r}: {len(unseen)} of {n_classes} class names never occur in {n_captions} training "
        f"captions ({shown}); expect chance-level accuracy on them unless the text tower was pretrained "
        "on such words — check --classnames against the training data"
    )
