import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny CPU ops: intra-op threads only add contention on a 2-core box (BatchNorm ~80x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_plots(monkeypatch):
    """Report plots are tested with the report; in training tests they only cost time."""
    import contrastkit.evaluate.report as report

    for name in dir(report):
        if name.startswith("plot_"):
            monkeypatch.setattr(report, name, lambda *a, **k: False)
