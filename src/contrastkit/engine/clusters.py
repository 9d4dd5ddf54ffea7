"""Cluster assignments of every training record, kept fresh on a schedule (MEOW, ProtoNCE).

MEOW (Yu & Li 2023, "Heterogeneous Graph Contrastive Learning with Meta-path
Contexts and Weighted Negative Samples") weights each negative by how many of
C k-means clusterings separate it from the anchor; ProtoNCE (Li et al. 2021,
"Prototypical Contrastive Learning of Unsupervised Representations") contrasts
each embedding with its cluster's centroid at a per-cluster temperature phi.
Both need cluster ids that follow the model ("ids go stale: recluster on a
schedule"). When the recipe has a ``clusters`` section with ``sizes``, the
engine:

1. embeds every training record (eval transform, first caption) with the model
   named by ``clusters.embed`` (the live model, its EMA teacher, or the frozen
   reference), L2-normalised ``z`` of ``clusters.modality``
   (image, text, or normalize(image + text));
2. runs spherical k-means once per size k_c (k-means++ seeding from a generator
   seeded by (train.seed, step), ``clusters.iters`` Lloyd iterations; an empty
   cluster is re-seeded with the point farthest from its centroid);
3. computes PCL's concentration per cluster,
   ``phi = mean_i ||z_i - mu|| / log(n + 10)`` (clusters of one point get the
   largest phi), clipped to its 10th-90th percentiles and scaled to mean
   ``clusters.phi_mean``;
4. repeats at every multiple of ``clusters.every`` steps (0: only at the start).

Each batch then carries (after the cross-rank gather, looked up by the global
rows' record indices, so every rank sees the same global ids):

    extras["cluster_ids"]        C x B long
    extras["cluster_centroids"]  list of C tensors k_c x D (unit norm)
    extras["cluster_density"]    list of C tensors k_c (phi)

The table is a module of buffers saved with every checkpoint, so a resumed run
continues with the assignments it had. Rank 0 computes it and broadcasts it.
Cost: one inference pass over the training set per refresh plus
``iters * N * sum(k_c) * D`` multiply-adds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import distributed as dist_utils
from ..config import ClusterConfig
from ..data.problems import DataError
from ..data.records import Dataset, Record
from ..encoded import Encoded
from ..models.dual_encoder import DualEncoder
from ..models.embedder import dual_encoder_embedder

CLUSTER_FIELDS = frozenset({"cluster_ids", "cluster_centroids", "cluster_density"})
PCL_ALPHA = 10.0  # smoothing of the concentration estimate (PCL's alpha)


@torch.no_grad()
def spherical_kmeans(
    z: Tensor, k: int, iters: int, generator: torch.Generator, chunk: int = 8192
) -> tuple[Tensor, Tensor]:
    """k-means on the unit sphere (cosine similarity): (ids N, centroids k x D, unit norm)."""
    n = z.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means with k = {k} needs between 1 and {n} points per cluster run")
    # k-means++ seeding on the cosine distance 1 - z.c
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [z[first]]
    nearest = 1.0 - z @ z[first]
    for _ in range(1, k):
        weights = nearest.clamp_min(0)
        pick = (
            int(torch.multinomial(weights, 1, generator=generator))
            if float(weights.sum()) > 0
            else int(torch.randint(n, (1,), generator=generator))
        )
        centres.append(z[pick])
        nearest = torch.minimum(nearest, 1.0 - z @ z[pick])
    centroids = torch.stack(centres)
    ids = torch.empty(n, dtype=torch.long, device=z.device)
    for _ in range(max(1, iters)):
        best = torch.empty(n, dtype=z.dtype, device=z.device)
        for start in range(0, n, chunk):
            sims = z[start : start + chunk] @ centroids.T
            best[start : start + chunk], ids[start : start + chunk] = sims.max(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, ids, z)
        counts = torch.bincount(ids, minlength=k)
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(best.argmin())  # the point worst served by its centroid starts the empty cluster
            sums[empty], best[far] = z[far], float("inf")
            counts[ids[far]] -= 1
            sums[ids[far]] -= z[far]
            ids[far], counts[empty] = empty, 1
        centroids = nn.functional.normalize(sums, dim=1)
    return ids, centroids


def concentration(z: Tensor, ids: Tensor, centroids: Tensor, phi_mean: float) -> Tensor:
    """PCL's per-cluster temperature phi = mean ||z - mu|| / log(n + alpha), clipped and scaled to ``phi_mean``."""
    k = centroids.shape[0]
    dist = (z - centroids[ids]).norm(dim=1)
    counts = torch.bincount(ids, minlength=k).to(z.dtype)
    mean_dist = torch.zeros(k, dtype=z.dtype, device=z.device).index_add_(0, ids, dist) / counts.clamp_min(1)
    phi = mean_dist / torch.log(counts + PCL_ALPHA)
    crowded = counts > 1
    if bool(crowded.any()):
        phi = torch.where(crowded, phi, phi[crowded].max())
        lo, hi = torch.quantile(phi, 0.1), torch.quantile(phi, 0.9)
        phi = phi.clamp(lo, hi)
    else:
        phi = torch.ones_like(phi)
    if float(phi.mean()) <= 0:  # every cluster a single repeated point
        phi = torch.ones_like(phi)
    return phi_mean * phi / phi.mean()


def _usable(record: Record, index: int) -> Record:
    """The record, or the DataError training would raise for it (problem found on reading, no caption)."""
    problem = getattr(record, "problem", None)
    if problem is not None:
        raise problem.error()
    if not record.captions:
        raise DataError("empty_caption", record.key or str(index), "has no caption")
    return record


def _joint(image: Tensor | None, text: Tensor | None) -> Tensor:
    """The image embeddings, the text embeddings, or (both given) their normalised sum."""
    if image is None:
        assert text is not None  # the modality embeds images, texts or both
        return text
    return image if text is None else nn.functional.normalize(image + text, dim=1)


def embed_records(
    model: DualEncoder,
    dataset: Dataset,
    modality: str,
    on_error: str = "raise",
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """L2-normalised embeddings (eval transform, first caption) of the usable records, and their indices.

    A bad record (unreadable image, no caption, a problem found on reading) raises the error training
    would raise with ``on_error="raise"``; with ``"skip"`` it is left out (training skips and counts it,
    so its cluster id is never read).
    """
    embedder = dual_encoder_embedder(model, batch_size=batch_size)
    parts: list[Tensor] = []
    kept: list[int] = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="cluster: embed", disable=not progress, leave=False):
        records, images = [], []
        for i in range(start, min(start + batch_size, len(dataset))):
            try:
                record = _usable(dataset[i], i)
                if modality != "text":
                    images.append(record.load_image())
            except DataError:
                if on_error == "raise":
                    raise
                continue
            records.append(record)
            kept.append(i)
        if not records:
            continue
        image = embedder.embed_images(images) if modality != "text" else None
        text = embedder.embed_texts([r.captions[0] for r in records]) if modality != "image" else None
        parts.append(_joint(image, text))
    if not parts:
        raise ValueError("clusters: no usable training record to cluster")
    return torch.cat(parts), torch.tensor(kept, dtype=torch.long)


class ClusterTable(nn.Module):
    """C clusterings of the N training records: ids, centroids and concentrations as buffers."""

    ids: Tensor  # C x N cluster id of each record (buffer)
    refreshed_at: Tensor  # the step of the last refresh, -1 before the first (buffer)

    def __init__(self, cfg: ClusterConfig, records: int, dim: int) -> None:
        super().__init__()
        for c, k in enumerate(cfg.sizes):
            if k > records:
                raise ValueError(
                    f"clusters.sizes[{c}]: {k} clusters for {records} training records; "
                    "choose sizes below the number of records"
                )
        self.cfg = cfg
        self.register_buffer("ids", torch.zeros(len(cfg.sizes), records, dtype=torch.long))
        self.register_buffer("refreshed_at", torch.tensor(-1))
        for c, k in enumerate(cfg.sizes):
            self.register_buffer(f"centroids_{c}", torch.zeros(k, dim))
            self.register_buffer(f"density_{c}", torch.ones(k))

    def centroids(self) -> list[Tensor]:
        return [getattr(self, f"centroids_{c}") for c in range(len(self.cfg.sizes))]

    def density(self) -> list[Tensor]:
        return [getattr(self, f"density_{c}") for c in range(len(self.cfg.sizes))]

    def due(self, step: int) -> bool:
        """Whether the assignments must be (re)computed before ``step`` runs."""
        last = int(self.refreshed_at)
        return last < 0 or (self.cfg.every > 0 and step % self.cfg.every == 0 and step != last)

    @torch.no_grad()
    def refresh(
        self,
        embedder: DualEncoder,
        dataset: Dataset,
        step: int,
        seed: int,
        progress: bool = False,
        on_error: str = "raise",
    ) -> None:
        """Re-embed the records and recluster (rank 0), then share the result with every rank."""
        if dist_utils.rank() == 0:
            z, kept = embed_records(embedder, dataset, self.cfg.modality, on_error, progress=progress)
            z, kept = z.to(self.ids.device), kept.to(self.ids.device)
            generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + step)
            for c, k in enumerate(self.cfg.sizes):
                if k > len(kept):
                    raise ValueError(f"clusters.sizes[{c}]: {k} clusters for {len(kept)} usable training records")
                ids, centroids = spherical_kmeans(z.cpu(), k, self.cfg.iters, generator)
                ids, centroids = ids.to(z.device), centroids.to(z.device)
                self.ids[c].zero_()  # skipped records keep cluster 0; training never reads them
                self.ids[c, kept] = ids
                getattr(self, f"centroids_{c}").copy_(centroids)
                getattr(self, f"density_{c}").copy_(concentration(z, ids, centroids, self.cfg.phi_mean))
        self.refreshed_at.fill_(step)
        dist_utils.broadcast_parameters([self])

    def attach(self, enc: Encoded) -> Encoded:
        """Put the global batch's assignments, centroids and concentrations into ``enc.extras``."""
        if enc.group_ids is None:
            raise ValueError("cluster ids are looked up by record index, but the batch has no group_ids")
        enc.extras["cluster_ids"] = self.ids[:, enc.group_ids.to(self.ids.device)].to(enc.image.device)
        enc.extras["cluster_centroids"] = [c.to(enc.image.device) for c in self.centroids()]
        enc.extras["cluster_density"] = [d.to(enc.image.device) for d in self.density()]
        return enc


def cluster_table_for(cfg: ClusterConfig, dataset: Dataset, embed_dim: int, streaming: bool) -> ClusterTable | None:
    """The table when the recipe asks for clusters; a clear error where the data cannot have one."""
    if not cfg.sizes:
        return None
    if streaming:
        raise ValueError(
            "clusters: cluster ids are kept per record, which needs an indexable dataset "
            "(csv/jsonl/parquet manifest, folder:, synthetic:); webdataset shards stream"
        )
    return ClusterTable(cfg, len(dataset), embed_dim)
