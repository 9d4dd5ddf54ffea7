"""Engine-kept k-means assignments (MEOW / ProtoNCE): k-means, PCL concentration, batch lookup, schedule, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file

from contrastkit.config import ClusterConfig, ConfigError, load_config
from contrastkit.encoded import Encoded
from contrastkit.engine import trainer as trainer_module
from contrastkit.engine.clusters import ClusterTable, concentration, spherical_kmeans
from contrastkit.engine.trainer import train
from contrastkit.models.checkpoint import latest_checkpoint
from helpers import kill_at_step
from test_scale import _free_port, assert_same_training, rank_main

SMALL = [
    "data.train_size=96",
    "data.eval_size=32",
    "data.image_size=32",
    "model.width=32",
    "model.embed_dim=16",
    "train.batch_size=16",
    "train.steps=6",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.progress=false",
    "eval.max_records=16",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "objective=[{name: meow, temperature: null, proto_weight: 1.0}]",
    "clusters.sizes=[3, 6]",
    "clusters.every=2",
    "clusters.iters=5",
]


def _planted(n_per: int = 40, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:3]
    truth = torch.arange(3).repeat_interleave(n_per)
    z = F.normalize(centres[truth] + 0.1 * torch.randn(len(truth), dim, generator=g), dim=1)
    return z, truth


def test_kmeans_recovers_planted_clusters():
    z, truth = _planted()
    ids, centroids = spherical_kmeans(z, 3, 10, torch.Generator().manual_seed(1))
    # same partition as the truth, up to renaming
    pairs = {(int(a), int(b)) for a, b in zip(ids, truth)}
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3
    assert torch.allclose(centroids.norm(dim=1), torch.ones(3), atol=1e-6)
    # each centroid is the normalised mean of its members
    for c in range(3):
        assert torch.allclose(centroids[c], F.normalize(z[ids == c].mean(0), dim=0), atol=1e-6)


def test_kmeans_leaves_no_cluster_empty_even_with_duplicates():
    z = F.normalize(torch.cat([torch.ones(30, 4), torch.eye(4)]), dim=1)  # 30 copies of one point + 4 others
    ids, _ = spherical_kmeans(z, 8, 5, torch.Generator().manual_seed(0))
    assert torch.bincount(ids, minlength=8).min() >= 1
    with pytest.raises(ValueError, match="k = 40"):
        spherical_kmeans(z, 40, 1, torch.Generator())


def test_kmeans_is_deterministic_for_a_seed():
    z, _ = _planted(seed=3)
    a = spherical_kmeans(z, 5, 4, torch.Generator().manual_seed(7))
    b = spherical_kmeans(z, 5, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_concentration_follows_pcl_formula():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(50, 6, generator=g, dtype=torch.float64), dim=1)
    ids = torch.cat([torch.zeros(20), torch.ones(15), torch.full((14,), 2), torch.full((1,), 3)]).long()
    centroids = torch.stack([F.normalize(z[ids == c].mean(0), dim=0) for c in range(4)])
    phi = concentration(z, ids, centroids, 0.2)
    naive = []
    for c in range(4):
        members = z[ids == c]
        d = [float((m - centroids[c]).norm()) for m in members]
        naive.append(sum(d) / len(d) / math.log(len(d) + 10))
    naive[3] = max(naive[:3])  # a single point gets the largest concentration
    ref = torch.tensor(naive, dtype=torch.float64)
    ref = ref.clamp(torch.quantile(ref, 0.1), torch.quantile(ref, 0.9))
    ref = 0.2 * ref / ref.mean()
    assert torch.allclose(phi, ref, rtol=1e-10)
    assert float(phi.mean()) == pytest.approx(0.2)


def test_attach_looks_up_the_global_rows_by_record_index():
    table = ClusterTable(ClusterConfig(sizes=[2, 3]), records=10, dim=4)
    table.ids.copy_(torch.stack([torch.arange(10) % 2, torch.arange(10) % 3]))
    enc = Encoded(
        image=torch.randn(4, 4),
        text=torch.randn(4, 4),
        logit_scale=torch.tensor(10.0),
        group_ids=torch.tensor([7, 2, 9, 4]),
    )
    table.attach(enc)
    assert enc.extras["cluster_ids"].tolist() == [[1, 0, 1, 0], [1, 2, 0, 1]]
    assert [c.shape for c in enc.extras["cluster_centroids"]] == [(2, 4), (3, 4)]
    assert [d.shape for d in enc.extras["cluster_density"]] == [(2,), (3,)]


@pytest.mark.slow
def test_training_reclusters_on_schedule_and_feeds_meow(tmp_path, monkeypatch):
    refreshed: list[int] = []
    real = ClusterTable.refresh

    def spy(self, embedder, dataset, step, seed, progress=False, on_error="raise"):
        refreshed.append(step)
        return real(self, embedder, dataset, step, seed, progress, on_error)

    monkeypatch.setattr(ClusterTable, "refresh", spy)
    train(load_config("configs/demo.yaml", SMALL), tmp_path)
    assert refreshed == [0, 2, 4]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss/meow"]) for r in rows)
    saved = load_file(str(latest_checkpoint(tmp_path) / "clusters.safetensors"))
    assert saved["ids"].shape == (2, 96) and int(saved["refreshed_at"]) == 4
    assert set(saved["ids"][0].tolist()) == {0, 1, 2} and set(saved["ids"][1].tolist()) == set(range(6))
    assert torch.allclose(saved["centroids_1"].norm(dim=1), torch.ones(6), atol=1e-5)


@pytest.mark.slow
def test_killed_clustered_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    args = SMALL + ["train.checkpoint_every=3"]
    train(load_config("configs/demo.yaml", args), tmp_path / "straight")
    revive = kill_at_step(monkeypatch, trainer_module, 4)
    with pytest.raises(KeyboardInterrupt):
        train(load_config("configs/demo.yaml", args), tmp_path / "killed")
    revive()
    train(load_config("configs/demo.yaml", args), tmp_path / "killed", resume=True)
    for name in ("model", "clusters"):
        a = load_file(str(latest_checkpoint(tmp_path / "straight") / f"{name}.safetensors"))
        b = load_file(str(latest_checkpoint(tmp_path / "killed") / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_cluster_inputs_are_asked_for_at_start(tmp_path):
    no_clusters = [s for s in SMALL if not s.startswith("clusters.")]
    with pytest.raises(ValueError, match="'meow' needs cluster_ids: the recipe has no clusters"):
        train(load_config("configs/demo.yaml", no_clusters), tmp_path / "a")
    with pytest.raises(ValueError, match=r"clusters.sizes\[1\]: 500 clusters for 96 training records"):
        train(load_config("configs/demo.yaml", SMALL + ["clusters.sizes=[3, 500]"]), tmp_path / "b")
    with pytest.raises(ConfigError, match=r"clusters.sizes\[0\]: a clustering needs at least 2"):
        load_config("configs/demo.yaml", SMALL + ["clusters.sizes=[1]"])
    with pytest.raises(ConfigError, match="clusters.embed"):
        load_config("configs/demo.yaml", SMALL + ["clusters.embed=student"])


@pytest.mark.distributed
def test_two_gloo_ranks_share_rank_zeros_clusters_and_train_like_one_process(tmp_path):
    single = tmp_path / "single"
    train(load_config("configs/demo.yaml", SMALL + ["train.threads=1"]), single)
    ranked = tmp_path / "ranked"
    mp.spawn(rank_main, args=(2, _free_port(), str(ranked), SMALL), nprocs=2, join=True)
    cfg = load_config("configs/demo.yaml", SMALL)
    assert_same_training(single, ranked, cfg.train.lr, cfg.train.steps)
    a = load_file(str(latest_checkpoint(single) / "clusters.safetensors"))
    b = load_file(str(latest_checkpoint(ranked) / "clusters.safetensors"))
    agree = float((a["ids"] == b["ids"]).float().mean())
    assert agree > 0.9  # same model up to float noise -> (almost) the same k-means partition


@pytest.mark.slow
def test_bad_records_stop_clustering_or_are_left_out_as_training_treats_them(tmp_path, monkeypatch):
    """A missing image: on_error=raise names it before the first step; skip clusters the other records."""
    from contrastkit.data.export import export_dataset
    from contrastkit.data.problems import DataError
    from contrastkit.data.shapes import SyntheticShapes
    from contrastkit.data.sources import open_source
    from contrastkit.engine import clusters as clusters_module

    path = export_dataset(SyntheticShapes("train", size=64, image_size=32), tmp_path / "data")
    args = [a for a in SMALL if not a.startswith("data.train_size")] + [
        f"data.source=csv:{path}",
        "data.val_fraction=0",
        "data.test_fraction=0.25",
        "eval.split=test",
        "train.steps=2",
        "clusters.every=0",
    ]
    cfg = load_config("configs/demo.yaml", args)
    train_records = open_source(cfg.data.source, "train", cfg.data)
    Path(train_records[3].image).unlink()  # one training record loses its image
    with pytest.raises(DataError, match="missing_file"):
        train(cfg, tmp_path / "raise")

    clustered: list[int] = []
    real = clusters_module.spherical_kmeans

    def spy(z, k, iters, generator, chunk=8192):
        clustered.append(z.shape[0])
        return real(z, k, iters, generator, chunk)

    monkeypatch.setattr(clusters_module, "spherical_kmeans", spy)
    train(load_config("configs/demo.yaml", args + ["data.on_error=skip"]), tmp_path / "skip")
    assert clustered == [len(train_records) - 1] * 2  # both clusterings, without the bad record
