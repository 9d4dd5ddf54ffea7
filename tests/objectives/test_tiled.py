"""Tiled (linear-memory) CLIP / SigLIP losses against the dense reference and open_clip."""

from __future__ import annotations

import functools
import gc
import importlib
import importlib.util
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from contrastkit.encoded import Encoded
from contrastkit.objectives import build
from contrastkit.objectives.clip import ClipTerm, clip_loss
from contrastkit.objectives.siglip import SiglipTerm, siglip_loss
from contrastkit.objectives.tiled import DENSE_MAX_CPU, TiledInfoNCE, default_tile_size, tiled_clip_loss
from contrastkit.objectives.tiled_sigmoid import TiledSigmoid, tiled_siglip_loss
from helpers import assert_value_and_grads_close, pair_inputs, value_and_grads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread is as fast and immune to other jobs competing for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ tiled == dense (float64)


@pytest.mark.parametrize("rows,tile", [(1, 3), (2, 3), (7, 3), (10, 4), (5, 16), (33, 8)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_clip_tiled_matches_dense_float64(rows, tile, eps, reduction):
    x, y, t, _ = pair_inputs(rows, seed=rows)
    got = value_and_grads(lambda a, b, s: tiled_clip_loss(a, b, s, eps, reduction, tile), x, y, t)
    ref = value_and_grads(lambda a, b, s: clip_loss(a, b, s, eps, reduction), x, y, t)
    assert_value_and_grads_close(got, ref, "xyt")


@pytest.mark.parametrize(
    "rows,cols,tile", [(1, 1, 3), (7, 7, 3), (10, 10, 4), (5, 5, 16), (33, 33, 8), (7, 11, 3), (11, 7, 4), (5, 9, 16)]
)
def test_siglip_tiled_matches_dense_float64(rows, cols, tile):
    x, y, t, b = pair_inputs(rows, cols=cols, seed=rows + cols, scale=5.0, bias=-3.0)
    got = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=tile), x, y, t, b)
    ref = value_and_grads(siglip_loss, x, y, t, b)
    assert_value_and_grads_close(got, ref, "xytb")


def test_large_logits_are_stable():
    """t = 100 with nearly-identical pairs: logits near +-100, no overflow, still equal to dense."""
    x, y, _, _ = pair_inputs(20, seed=3)
    y = F.normalize(x + 1e-3 * y, dim=1)
    t, b = torch.tensor(100.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    got, got_g = value_and_grads(lambda a, c, s: tiled_clip_loss(a, c, s, 0.1, "mean", 6), x, y, t)
    ref, ref_g = value_and_grads(lambda a, c, s: clip_loss(a, c, s, 0.1, "mean"), x, y, t)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    for a, r in zip(got_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-10)
    got, got_g = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=6), x, y, t, b)
    ref, ref_g = value_and_grads(siglip_loss, x, y, t, b)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    for a, r in zip(got_g, ref_g):
        torch.testing.assert_close(a, r, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ gradcheck (several tiles)


@pytest.mark.parametrize("eps,reduction", [(0.0, "mean"), (0.2, "mean"), (0.1, "sum")])
def test_clip_gradcheck(eps, reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)  # unnormalised on purpose
    y = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: tiled_clip_loss(a, b, s, eps, reduction, 3), (x, y, t))


@pytest.mark.parametrize("rows,cols", [(7, 7), (7, 5), (4, 8)])
def test_siglip_gradcheck(rows, cols):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(rows, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(cols, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: tiled_siglip_loss(*a, tile_size=3), (x, y, t, b))


def test_partial_requires_grad():
    """Locked image tower (no grad on x) and a fixed temperature: only the needed gradients."""
    x, y, t, b = pair_inputs(9, seed=4)
    y = y.clone().requires_grad_(True)
    loss = tiled_clip_loss(x, y, t, 0.1, "mean", 4)
    (gy,) = torch.autograd.grad(loss, [y])
    y_ref = y.detach().clone().requires_grad_(True)
    (gy_ref,) = torch.autograd.grad(clip_loss(x, y_ref, t, 0.1, "mean"), [y_ref])
    torch.testing.assert_close(gy, gy_ref, rtol=1e-10, atol=1e-12)
    loss = tiled_siglip_loss(x, y, t, b, tile_size=4)
    (gy,) = torch.autograd.grad(loss, [y])
    (gy_ref,) = torch.autograd.grad(siglip_loss(x, y_ref, t, b), [y_ref])
    torch.testing.assert_close(gy, gy_ref, rtol=1e-10, atol=1e-12)


def test_double_backward_is_refused():
    x, y, t, _ = pair_inputs(5, seed=5)
    x.requires_grad_(True)
    (gx,) = torch.autograd.grad(tiled_clip_loss(x, y, t, tile_size=2), [x], create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


# ------------------------------------------------------------------ float32 accuracy


@pytest.mark.parametrize("scale", [1 / 0.07, 100.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_clip_float32_within_1e5(scale, eps):
    x, y, t, _ = pair_inputs(300, dim=32, dtype=torch.float32, seed=6, scale=scale)
    got, got_g = value_and_grads(lambda a, b, s: tiled_clip_loss(a, b, s, eps, "mean", 64), x, y, t)
    dense, dense_g = value_and_grads(lambda a, b, s: clip_loss(a, b, s, eps, "mean"), x, y, t)
    exact, exact_g = value_and_grads(
        lambda a, b, s: clip_loss(a, b, s, eps, "mean"), x.double(), y.double(), t.double()
    )
    assert abs(got.item() - dense.item()) <= 1e-5 * abs(dense.item())
    assert abs(got.item() - exact.item()) <= 1e-5 * abs(exact.item())
    for a, d, e in zip(got_g[:2], dense_g[:2], exact_g[:2]):  # relative error of the whole tensor
        assert (a.double() - e).norm() <= 1e-5 * e.norm()
        assert (a - d).norm() <= 1e-5 * d.norm()
    # dLoss/dt is a small difference of O(1) sums once pairs are separated (t = 100 here: dense
    # float32 is itself ~1e-5 off). Check the log-temperature gradient t * dLoss/dt, relative,
    # with an absolute floor of 1e-5 (the loss is O(1)).
    dt, dt_exact = got_g[2].double() * t, exact_g[2] * t
    assert abs(dt - dt_exact) <= 1e-5 * (abs(dt_exact) + 1.0)


@pytest.mark.parametrize("scale,bias", [(10.0, -10.0), (100.0, -15.0)])
def test_siglip_float32_within_1e5(scale, bias):
    x, y, t, b = pair_inputs(300, dim=32, dtype=torch.float32, seed=7, scale=scale, bias=bias)
    got, got_g = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=64), x, y, t, b)
    dense, dense_g = value_and_grads(siglip_loss, x, y, t, b)
    exact, exact_g = value_and_grads(siglip_loss, x.double(), y.double(), t.double(), b.double())
    assert abs(got.item() - dense.item()) <= 1e-5 * abs(dense.item())
    assert abs(got.item() - exact.item()) <= 1e-5 * abs(exact.item())
    for a, d, e in zip(got_g, dense_g, exact_g):
        assert (a.double() - e).norm() <= 1e-5 * e.norm()
        assert (a - d).norm() <= 1e-5 * d.norm()


def test_cpu_autocast_bfloat16_close_to_dense():
    x, y, t, b = pair_inputs(200, dim=32, dtype=torch.float32, seed=8, scale=10.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_g = value_and_grads(lambda a, c, s: tiled_clip_loss(a, c, s, tile_size=64), x, y, t)
        ref, ref_g = value_and_grads(lambda a, c, s: clip_loss(a, c, s), x, y, t)
        sig, sig_g = value_and_grads(lambda *a: tiled_siglip_loss(*a, tile_size=64), x, y, t, b)
        sig_ref, _ = value_and_grads(siglip_loss, x, y, t, b)
    assert got.dtype == torch.float32 and all(g.dtype == torch.float32 for g in got_g + sig_g)
    torch.testing.assert_close(got, ref.float(), rtol=2e-2, atol=0)
    torch.testing.assert_close(sig, sig_ref.float(), rtol=2e-2, atol=0)
    for a, r in zip(got_g[:2], ref_g[:2]):
        assert (a - r.float()).norm() <= 5e-2 * r.float().norm()


# ------------------------------------------------------------------ the registered terms vs open_clip


@functools.lru_cache(maxsize=1)
def _open_clip_loss_module():
    """open_clip's ``loss.py`` (it imports only torch), loaded without the package ``__init__``.

    ``import open_clip`` pulls in timm, the tokenizer and the model zoo: 10-25 s here, for two
    classes that need none of it. Falls back to the normal import if the file moves.
    """
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None and spec.submodule_search_locations, (
        "open_clip is a dev dependency: pip install -e '.[dev]'"
    )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "loss.py")
    try:
        loss_spec = importlib.util.spec_from_file_location("_open_clip_loss_standalone", path)
        module = importlib.util.module_from_spec(loss_spec)
        loss_spec.loader.exec_module(module)
        module.ClipLoss, module.SigLipLoss  # noqa: B018 - both must exist
        return module
    except Exception:
        return importlib.import_module("open_clip.loss")


def _open_clip_loss():
    module = _open_clip_loss_module()
    return module.ClipLoss(), module.SigLipLoss()


@pytest.mark.parametrize("rows,tile_size", [(7, None), (7, 3), (DENSE_MAX_CPU + 77, None)])
def test_clip_term_matches_open_clip(rows, tile_size):
    ref_loss, _ = _open_clip_loss()
    x, y, t, _ = pair_inputs(rows, dim=16, dtype=torch.float32, seed=9, scale=1 / 0.07)
    term = ClipTerm(tile_size=tile_size)
    got, got_g = value_and_grads(lambda a, b, s: term(Encoded(image=a, text=b, logit_scale=s)), x, y, t)
    ref, ref_g = value_and_grads(lambda a, b, s: ref_loss(a, b, s), x, y, t)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    for a, r in zip(got_g, ref_g):
        assert (a - r).norm() <= 2e-5 * r.norm()


@pytest.mark.parametrize("rows,tile_size", [(7, None), (7, 3), (DENSE_MAX_CPU + 77, None)])
def test_siglip_term_matches_open_clip(rows, tile_size):
    _, ref_loss = _open_clip_loss()
    # open_clip keeps logit_scale as log(t) in the model and passes exp() to the loss; its bias
    # is added as is; labels are 2 I - 1 (+1 positives): the same convention as contrastkit.
    x, y, t, b = pair_inputs(rows, dim=16, dtype=torch.float32, seed=10, scale=10.0, bias=-10.0)
    term = SiglipTerm(tile_size=tile_size)
    got, got_g = value_and_grads(
        lambda a, c, s, d: term(Encoded(image=a, text=c, logit_scale=s, logit_bias=d)), x, y, t, b
    )
    ref, ref_g = value_and_grads(lambda a, c, s, d: ref_loss(a, c, s, d), x, y, t, b)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)
    for a, r in zip(got_g, ref_g):
        assert (a - r).norm() <= 2e-5 * r.norm()


def test_terms_take_tile_size_from_the_recipe():
    x, y, t, b = pair_inputs(11, dim=8, dtype=torch.float32, seed=11)
    objective = build([{"name": "clip", "tile_size": 4}, {"name": "siglip", "tile_size": 4}])
    out = objective(Encoded(image=x, text=y, logit_scale=t, logit_bias=b))
    torch.testing.assert_close(out.terms["clip"], clip_loss(x, y, t), rtol=1e-5, atol=0)
    torch.testing.assert_close(out.terms["siglip"], siglip_loss(x, y, t, b), rtol=1e-5, atol=0)
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(ValueError, match="tile_size"):
            build([{"name": "clip", "tile_size": bad}])
        with pytest.raises(ValueError, match="tile_size"):
            build([{"name": "siglip", "tile_size": bad}])
    assert default_tile_size("cpu") >= 256


def test_shape_errors():
    x, y, t, b = pair_inputs(5, seed=12)
    with pytest.raises(ValueError, match="same shape"):
        tiled_clip_loss(x, y[:4], t)
    with pytest.raises(ValueError, match="Bx x D"):
        tiled_siglip_loss(x, y[:, :3], t, b)
    with pytest.raises(ValueError, match="scalar"):
        tiled_clip_loss(x, y, torch.ones(2, dtype=torch.float64))


# ------------------------------------------------------------------ memory: nothing B x B


def test_forward_saves_only_linear_size_tensors():
    rows, dim = 512, 8
    x, y, t, b = pair_inputs(rows, dim=dim, dtype=torch.float32, seed=13)
    leaves = [v.requires_grad_(True) for v in (x, y, t, b)]
    for fn, node in (
        (lambda: tiled_clip_loss(*leaves[:3], label_smoothing=0.1, tile_size=64), TiledInfoNCE),
        (lambda: tiled_siglip_loss(*leaves, tile_size=64), TiledSigmoid),
    ):
        saved: list[torch.Size] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s.shape) or s, lambda s: s):
            loss = fn()
        assert type(loss.grad_fn).__name__ == f"{node.__name__}Backward"
        assert saved and max(s.numel() for s in saved) <= rows * dim
    # Control: the dense loss does save B x B tensors, so the hook sees them.
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s.shape) or s, lambda s: s):
        clip_loss(*leaves[:3])
    assert max(s.numel() for s in saved) >= rows * rows


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_no_op_materialises_b_by_b(which):
    rows, dim, tile = 1024, 8, 256
    x, y, t, b = pair_inputs(rows, dim=dim, dtype=torch.float32, seed=14)
    leaves = [v.requires_grad_(True) for v in (x, y, t, b)]
    with _LargestTensor() as probe:
        if which == "clip":
            loss = tiled_clip_loss(*leaves[:3], label_smoothing=0.1, tile_size=tile)
        else:
            loss = tiled_siglip_loss(*leaves, tile_size=tile)
        loss.backward()
    assert probe.largest <= tile * tile < rows * rows // 8
    with _LargestTensor() as control:  # the probe does see a dense loss's B x B logits
        clip_loss(*leaves[:3]).backward()
    assert control.largest >= rows * rows


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def _peak_rss_growth_mib(fn) -> float:
    """Peak resident memory (VmHWM, reset first) above the RSS before ``fn()``; Linux only."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _status_mib("VmRSS")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    fn()
    return _status_mib("VmHWM") - base


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_resident_memory_stays_linear(which):
    """Real process memory over forward+backward at B = 4096: a few MiB, not B^2.

    One float32 4096 x 4096 logit matrix is 64 MiB; the tiled losses hold two 512 x 512 scratch
    tiles (1 MiB each) and a few B x D buffers (1 MiB each).
    """
    rows, dim, tile = 4096, 64, 512
    x, y, t, b = pair_inputs(rows, dim=dim, dtype=torch.float32, seed=15)
    leaves = [v.requires_grad_(True) for v in (x, y, t, b)]

    def tiled(n: int = rows) -> None:
        a, c, s, d = (v[:n] if v.dim() else v for v in leaves)
        if which == "clip":
            loss = tiled_clip_loss(a, c, s, label_smoothing=0.1, tile_size=tile)
        else:
            loss = tiled_siglip_loss(a, c, s, d, tile_size=tile)
        loss.backward()

    tiled(2 * tile)  # warm-up: kernels, allocator arenas
    for leaf in leaves:
        leaf.grad = None
    grown = _peak_rss_growth_mib(tiled)
    assert grown < 24, f"{which}: peak RSS grew by {grown:.0f} MiB"
    # Control: the probe does see one B x B float32 matrix being written.
    assert _peak_rss_growth_mib(lambda: torch.ones(rows, rows).sum()) > 60
