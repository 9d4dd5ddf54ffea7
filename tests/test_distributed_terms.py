"""Every registered term: 2 gloo ranks with local batches == 1 process with the global batch.

Each rank encodes its own rows with a small differentiable "model", the engine's
gather makes them global, the term runs on the global batch, and gradients are
averaged across ranks (contrastkit.distributed). Values and the gradients of the
model, the temperature, the bias and the term's own heads must equal the
single-process run on the whole batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from contrastkit import Encoded
from contrastkit.distributed import average_gradients, gather_encoded
from contrastkit.objectives import TERMS, build

pytestmark = pytest.mark.distributed

B, F_IN, FEAT, D, V, K, T, L, N, VOCAB = 8, 6, 12, 5, 2, 3, 7, 6, 4, 50
WORLD = 2

SMALL_HEADS = {
    "barlip": {"hidden_dim": 16, "out_dim": 16},
    "byolip": {"hidden_dim": 16, "out_dim": 8},
    "siamlip": {"hidden_dim": 16, "out_dim": 8},
    "cl2l_local": {"hidden_dim": 16, "out_dim": 8},
    "coca_caption": {"vocab_size": VOCAB, "width": 16, "heads": 2, "context_length": L},
    "group_whitening": {"groups": 3},
    "hq_tags": {"num_tags": T},
    "mochi": {"num_hard": 4, "num_mix": 3, "num_self_mix": 2},
    "ema_distill": {"batch_rows": 4},
    "matryoshka": {"dims": [2, 5], "term": "negclip"},
    "pixpro": {"hidden_dim": 16, "out_dim": 8},
    "ibot_patch": {"hidden_dim": 16, "bottleneck_dim": 8, "prototypes": 12},
}
# score_contrastive reads a caller-supplied score matrix (extras), which the engine does not gather.
TERM_NAMES = [n for n in TERMS.names() if n != "score_contrastive"]


def make_model() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w_image": torch.randn(F_IN, FEAT, generator=g),
        "w_text": torch.randn(F_IN, FEAT, generator=g),
        "p_image": torch.randn(FEAT, D, generator=g),
        "p_text": torch.randn(FEAT, D, generator=g),
        "w_tokens": torch.randn(F_IN, FEAT, generator=g),
        "log_scale": torch.tensor(2.0),
        "bias": torch.tensor(-3.0),
    }


def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, VOCAB, (B, L), generator=g)
    tokens[:, -2:] = 0  # right padding
    return {
        "x_image": torch.randn(B, F_IN, generator=g),
        "x_text": torch.randn(B, F_IN, generator=g),
        "x_image_views": torch.randn(V, B, F_IN, generator=g),
        "x_text_views": torch.randn(V, B, F_IN, generator=g),
        "x_neg": torch.randn(B, K, F_IN, generator=g),
        "x_cells": torch.randn(B, N, F_IN, generator=g),
        "teacher_image": F.normalize(torch.randn(B, D, generator=g), dim=-1),
        "teacher_text": F.normalize(torch.randn(B, D, generator=g), dim=-1),
        "teacher_neg": F.normalize(torch.randn(B, K, D, generator=g), dim=-1),
        "tags": torch.randint(-1, 2, (B, T), generator=g).float(),
        "groups": torch.tensor([0, 1, 1, 2, 3, 3, 4, 5]),
        "tokens": tokens,
        "neg_mask": torch.rand(B, K, generator=g) > 0.2,
        "labels": torch.tensor([0, 1, 1, 2, 0, 2, 1, -1]),
        "x_masked_cells": torch.randn(B, N, F_IN, generator=g),
        "cell_mask": (torch.rand(B, N, generator=g) < 0.4) | (torch.arange(N) == 0),
        "teacher_cells": torch.randn(B, N, FEAT, generator=g),
        "x_view_cells": torch.randn(V, B, N, F_IN, generator=g),  # N = 4: a 2 x 2 grid per view
        "teacher_view_cells": torch.randn(V, B, N, FEAT, generator=g),
        "view_boxes": torch.cat(
            [0.3 * torch.rand(B, V, 2, generator=g), 0.7 + 0.3 * torch.rand(B, V, 2, generator=g)], -1
        ),
    }


def encode(model: dict, inputs: dict, rows: slice) -> Encoded:
    def feats(x, w):
        return torch.tanh(x @ w)

    def embed(f, p):
        return F.normalize(f @ p, dim=-1)

    xi, xt = inputs["x_image"][rows], inputs["x_text"][rows]
    fi, ft = feats(xi, model["w_image"]), feats(xt, model["w_text"])
    fvi = feats(inputs["x_image_views"][:, rows], model["w_image"])
    fvt = feats(inputs["x_text_views"][:, rows], model["w_text"])
    return Encoded(
        image=embed(fi, model["p_image"]),
        text=embed(ft, model["p_text"]),
        logit_scale=model["log_scale"].exp(),
        logit_bias=model["bias"],
        image_features=fi,
        text_features=ft,
        image_views=embed(fvi, model["p_image"]),
        text_views=embed(fvt, model["p_text"]),
        image_view_features=fvi,
        text_view_features=fvt,
        neg_text=embed(feats(inputs["x_neg"][rows], model["w_text"]), model["p_text"]),
        neg_text_mask=inputs["neg_mask"][rows],
        teacher_image=inputs["teacher_image"][rows],
        teacher_text=inputs["teacher_text"][rows],
        teacher_neg_text=inputs["teacher_neg"][rows],
        teacher_logit_scale=torch.tensor(12.0),
        reference_image=inputs["teacher_image"][rows],
        reference_text=inputs["teacher_text"][rows],
        reference_logit_scale=torch.tensor(12.0),
        tags=inputs["tags"][rows],
        group_ids=inputs["groups"][rows],
        labels=inputs["labels"][rows],
        caption_tokens=inputs["tokens"][rows],
        image_tokens=feats(inputs["x_cells"][rows], model["w_tokens"]),
        image_view_tokens=feats(inputs["x_view_cells"][:, rows], model["w_tokens"]),
        teacher_image_view_tokens=inputs["teacher_view_cells"][:, rows],
        view_boxes=inputs["view_boxes"][rows],
        masked_image_tokens=feats(inputs["x_masked_cells"][rows], model["w_tokens"]),
        cell_mask=inputs["cell_mask"][rows],
        teacher_image_tokens=inputs["teacher_cells"][rows],
    )


def run_term(name: str, rows: slice) -> dict[str, torch.Tensor]:
    """Loss and gradients of one term; under a process group ``rows`` is this rank's shard."""
    torch.manual_seed(5)
    objective = build([{"name": name, **SMALL_HEADS.get(name, {})}])
    model = {k: v.clone().requires_grad_(True) for k, v in make_model().items()}
    inputs = make_inputs()
    with torch.no_grad():  # materialise lazy heads on the global batch, identically everywhere
        torch.manual_seed(6)
        objective(encode(model, inputs, slice(0, B)), check_finite=False)
    enc = gather_encoded(encode(model, inputs, rows))
    loss, _ = objective(enc)
    loss.backward()
    params = list(model.values()) + [p for p in objective.parameters() if p.requires_grad]
    average_gradients(params)
    out = {"loss": loss.detach().reshape(1)}
    out.update({f"grad.{k}": v.grad.clone() for k, v in model.items() if v.grad is not None})
    out.update({f"head.{n}": p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None})
    return out


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        local = B // WORLD
        for name in TERM_NAMES:
            save_file(
                {k: v.contiguous() for k, v in run_term(name, slice(rank * local, (rank + 1) * local)).items()},
                os.path.join(out_dir, f"{name}.rank{rank}.safetensors"),
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD, join=True)
    return folder


@pytest.mark.parametrize("name", TERM_NAMES)
def test_two_ranks_equal_one_process(name, distributed_results):
    single = run_term(name, slice(0, B))
    assert len(single) > 1, "the term produced no gradient at all"
    for rank in range(WORLD):
        ranked = load_file(str(distributed_results / f"{name}.rank{rank}.safetensors"))
        assert ranked.keys() == single.keys()
        for key, value in single.items():
            torch.testing.assert_close(ranked[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key} (rank {rank})")


def _uneven_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Ranks with 3 and 5 rows (records skipped as bad make local batches unequal)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(0, 3) if rank == 0 else slice(3, B)
        for name in ("clip", "negclip", "barlip"):
            save_file(
                {k: v.contiguous() for k, v in run_term(name, rows).items()},
                os.path.join(out_dir, f"uneven-{name}.rank{rank}.safetensors"),
            )
    finally:
        dist.destroy_process_group()


def test_unequal_local_batches_equal_one_process(tmp_path):
    mp.spawn(_uneven_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for name in ("clip", "negclip", "barlip"):
        single = run_term(name, slice(0, B))
        for rank in range(WORLD):
            ranked = load_file(str(tmp_path / f"uneven-{name}.rank{rank}.safetensors"))
            for key, value in single.items():
                torch.testing.assert_close(ranked[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}: {key} (rank {rank})")
