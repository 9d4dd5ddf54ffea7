"""Freed host memory stays in the process after keep_freed_host_memory() (glibc), so steps stop page-faulting."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROBE = """
import sys
from contrastkit.engine.host_memory import keep_freed_host_memory

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None
block = bytearray(256 * 2**20)  # 256 MiB, touched (zero-filled by the allocator or the kernel)
for i in range(0, len(block), 4096):
    block[i] = 1
before_free = resident_mib()
del block
print(applied, before_free - resident_mib())
"""


def _released_mib(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    applied, released = out.split()
    return applied, float(released)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc thresholds; /proc/self/statm")
def test_freed_blocks_stay_resident_only_when_kept():
    applied, released_default = _released_mib("default")
    assert released_default > 200  # glibc maps a block this large and unmaps it on free
    applied, released_kept = _released_mib("keep")
    assert applied == "True"
    assert released_kept < 16  # the block went back to the heap for reuse, not to the kernel


def test_training_on_cpu_keeps_freed_memory(monkeypatch, tmp_path):
    from contrastkit.config import load_config
    from contrastkit.engine import prepare, trainer

    calls = []
    monkeypatch.setattr(prepare, "keep_freed_host_memory", lambda: calls.append(True) or True)
    cfg = load_config(
        "configs/demo.yaml",
        [
            "train.steps=1",
            "train.batch_size=8",
            "eval.max_records=8",
            "data.train_size=16",
            "data.eval_size=8",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    trainer.train(cfg, tmp_path / "run")
    assert calls == [True]
