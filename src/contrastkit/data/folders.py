"""Image folders for classification: ``ROOT/<class name>/<image>``.

Classes are the sub-folders of ``ROOT`` in sorted order (``_`` and ``-`` in a
folder name read as spaces: ``golden_retriever`` -> "golden retriever");
every file with an image extension below a class folder (recursively) is a
record with that ``label`` and the caption ``data.class_template`` filled with
the class name. The source defines one zero-shot task, ``class``, over all its
records with the same template. Splits: ``folder:data/{split}`` reads
``data/train``, ``data/val``, ``data/test`` (classes from ``data/train``); otherwise the hash split
(``data.val_fraction`` / ``data.test_fraction``) applies to the relative paths.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .problems import SourceRecord
from .records import ZeroShotTask
from .splits import split_of

FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def class_folders_of(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def readable_class(folder: str) -> str:
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


class ImageFolderSource:
    """One split of an image-folder tree; see the module docstring."""

    streaming = False

    def __init__(
        self, root: str | Path, split: str, cfg: DataConfig, split_by_hash: bool, class_folders: list[str] | None = None
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"folder:{root}: not a directory")
        self.name, self.split, self.cfg, self.on_error = f"folder:{root}", split, cfg, cfg.on_error
        folders = class_folders or class_folders_of(self.root)
        if not folders:
            raise ValueError(f"folder:{root}: no class sub-folders (expected ROOT/<class>/<image files>)")
        self.folders = folders
        self.classnames = [readable_class(f) for f in folders]
        files: list[tuple[str, int]] = []
        for label, folder in enumerate(folders):
            if not (self.root / folder).is_dir():
                continue
            for path in sorted((self.root / folder).rglob("*")):
                if path.is_file() and path.suffix.lower() in FOLDER_EXTENSIONS and not path.name.startswith("."):
                    files.append((path.relative_to(self.root).as_posix(), label))
        if not files:
            raise ValueError(f"folder:{root}: no image files ({', '.join(FOLDER_EXTENSIONS)}) in the class folders")
        if split_by_hash:
            files = [f for f in files if split_of(f[0], cfg.seed, cfg.val_fraction, cfg.test_fraction) == split]
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def caption(self, label: int) -> str:
        return self.cfg.class_template.replace("{c}", "{}").format(self.classnames[label])

    def __getitem__(self, index: int) -> SourceRecord:
        if not -len(self.files) <= index < len(self.files):
            raise IndexError(f"{self.name} [{self.split}]: index {index} out of range for {len(self.files)} records")
        rel, label = self.files[index]
        record = SourceRecord(image=str(self.root / rel), captions=[self.caption(label)], label=label, key=rel)
        record.meta["class"] = self.classnames[label]
        return record

    def zeroshot_tasks(self) -> list[ZeroShotTask]:
        return [
            ZeroShotTask(
                "class",
                list(self.classnames),
                [self.cfg.class_template],
                list(range(len(self.files))),
                [label for _, label in self.files],
            )
        ]
