"""The fused per-tile path of the tiled losses (compiled on CUDA) computes what the eager path and the
dense losses compute. Here it runs on CPU: dynamo traces each tile function whole (fullgraph) with the
``eager`` backend, and one test compiles with inductor as on a GPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from contrastkit.objectives import tiled_fused
from contrastkit.objectives.clip import clip_loss
from contrastkit.objectives.siglip import siglip_loss
from contrastkit.objectives.tiled import tiled_clip_loss
from contrastkit.objectives.tiled_fused import infonce_fold, infonce_grad
from contrastkit.objectives.tiled_sigmoid import tiled_siglip_loss
from helpers import assert_value_and_grads_close, pair_inputs, value_and_grads

pytestmark = pytest.mark.slow


def _fused_on_cpu(monkeypatch, backend: str) -> None:
    monkeypatch.setattr(tiled_fused, "FUSED_DEVICES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(tiled_fused, "COMPILE_BACKEND", backend)
    monkeypatch.setattr(tiled_fused, "_compiled", {})


@pytest.fixture
def fused_cpu(monkeypatch):
    _fused_on_cpu(monkeypatch, "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("rows,tile", [(7, 3), (10, 4), (12, 4)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_fused_clip_matches_dense_float64(fused_cpu, rows, tile, eps):
    x, y, t, _ = pair_inputs(rows, seed=rows)
    got = value_and_grads(lambda a, b, s: tiled_clip_loss(a, b, s, eps, "mean", tile), x, y, t)
    ref = value_and_grads(lambda a, b, s: clip_loss(a, b, s, eps, "mean"), x, y, t)
    assert tiled_fused._compiled.keys() == {"infonce_fold", "infonce_grad"}  # the fused path ran
    assert_value_and_grads_close(got, ref, "xyt")


@pytest.mark.parametrize("rows,cols,tile", [(7, 7, 3), (7, 11, 3), (11, 7, 4)])
def test_fused_siglip_matches_dense_float64(fused_cpu, rows, cols, tile):
    x, y, t, b = pair_inputs(rows, cols=cols, seed=rows + cols, scale=5.0, bias=-3.0)
    got = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=tile), x, y, t, b)
    ref = value_and_grads(siglip_loss, x, y, t, b)
    assert_value_and_grads_close(got, ref, "xytb")
    with torch.no_grad():  # the loss-only tile function
        torch.testing.assert_close(
            tiled_siglip_loss(x, y, t, b, tile_size=tile), siglip_loss(x, y, t, b), rtol=1e-12, atol=1e-12
        )
    assert "sigmoid_tile_loss" in tiled_fused._compiled


def test_fused_bfloat16_tiles_equal_the_eager_path(monkeypatch):
    """Under bf16 autocast the fused functions read the bf16 logits the eager path copies to float32."""
    x, y, t, b = pair_inputs(96, dim=32, dtype=torch.float32, seed=8, scale=10.0)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            clip = value_and_grads(lambda a, c, s: tiled_clip_loss(a, c, s, 0.1, "mean", 32), x, y, t)
            sig = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=32), x, y, t, b)
        return clip, sig

    eager = run()
    _fused_on_cpu(monkeypatch, "eager")
    torch._dynamo.reset()
    fused = run()
    torch._dynamo.reset()
    for (e_val, e_grads), (f_val, f_grads) in zip(eager, fused):
        torch.testing.assert_close(f_val, e_val, rtol=1e-6, atol=0)
        for e, f in zip(e_grads, f_grads):
            assert f.dtype == e.dtype == torch.float32
            assert (f - e).norm() <= 1e-2 * e.norm()  # gradient tiles are rounded to bf16 on both paths


def test_fold_of_tiles_is_the_log_sum_exp_of_rows_and_columns():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 10, generator=g, dtype=torch.float64) * 30
    m_r, s_r = torch.full((6,), float("-inf"), dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    m_c, s_c = torch.full((10,), float("-inf"), dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    for r0, c0 in ((0, 0), (0, 5), (3, 0), (3, 5)):
        tile = logits[r0 : r0 + 3, c0 : c0 + 5]
        m_r[r0 : r0 + 3], s_r[r0 : r0 + 3], m_c[c0 : c0 + 5], s_c[c0 : c0 + 5] = infonce_fold(
            tile, m_r[r0 : r0 + 3], s_r[r0 : r0 + 3], m_c[c0 : c0 + 5], s_c[c0 : c0 + 5]
        )
    torch.testing.assert_close(m_r + s_r.log(), logits.logsumexp(1), rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(m_c + s_c.log(), logits.logsumexp(0), rtol=1e-14, atol=1e-12)
    inv_r, inv_c = 1 / s_r, 1 / s_c
    grad = infonce_grad(
        logits, m_r, inv_r, m_c, inv_c, torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.8, dtype=torch.float64)
    )
    expected = logits.softmax(1) + logits.softmax(0) - 0.1 - 1.8 * torch.eye(6, 10, dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


def test_inductor_compiled_tiles_match_dense(monkeypatch):
    """The compiler a GPU uses (inductor; here its CPU code generator), float32, two tile shapes."""
    _fused_on_cpu(monkeypatch, "inductor")
    torch._dynamo.reset()
    try:
        x, y, t, b = pair_inputs(48, dim=16, dtype=torch.float32, seed=3, scale=10.0)
        got, got_g = value_and_grads(lambda a, c, s: tiled_clip_loss(a, c, s, 0.0, "mean", 32), x, y, t)
        ref, ref_g = value_and_grads(lambda a, c, s: clip_loss(a, c, s, 0.0, "mean"), x, y, t)
        sig, sig_g = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=32), x, y, t, b)
        sig_ref, sig_ref_g = value_and_grads(siglip_loss, x, y, t, b)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sig, sig_ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(got_g + sig_g, ref_g + sig_ref_g):
        assert (a - r).norm() <= 1e-5 * r.norm() + 1e-7


def test_cuda_without_triton_falls_back_to_eager_tiles_with_one_warning(monkeypatch):
    monkeypatch.setattr(tiled_fused, "_warned", set())
    monkeypatch.setattr(tiled_fused, "_kernels_compile_on", lambda device: True)
    assert tiled_fused.uses_fused_tiles(torch.device("cuda"))
    assert not tiled_fused.uses_fused_tiles(torch.device("cpu"))  # CPU tiles stay eager (in-place scratch)
    monkeypatch.setattr(tiled_fused, "_kernels_compile_on", lambda device: False)
    with pytest.warns(UserWarning, match="no working Triton"):
        assert not tiled_fused.uses_fused_tiles(torch.device("cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call does not warn again
        assert not tiled_fused.uses_fused_tiles(torch.device("cuda"))
