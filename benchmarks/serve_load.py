"""Load and latency of `contrastkit serve` on loopback: queries/s, p50 / p99, and the index's recall@10.

    python benchmarks/serve_load.py --run runs/demo            # ~3 minutes on 2 cores
    python benchmarks/serve_load.py --run runs/demo --items 20000 --seconds 5

An index of ``--items`` synthetic embeddings (clustered like real ones: 1000 centres, noise, L2-normalised,
of the run's dimension; captions and no thumbnails) is written with the library's own index code, so the
faiss structure is the one `contrastkit index` would choose for that size. `contrastkit serve` runs in its
own process (uvicorn, one worker); a bounded asyncio load generator (httpx, ``--clients`` concurrent
connections, each sending its next query when the previous answer arrives, for ``--seconds``) sends text
queries (``/api/search``: the text tower runs per query) and vector queries (``/api/similar/ID``: a stored
vector looked up). recall@10 of the approximate index is measured against exact search on 500 held-out
perturbed vectors. Anchor: clip-retrieval's back end serves ~20 queries/s at ~50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_file import command_line, cpu_name, write_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from contrastkit.models.load import load_run
from contrastkit.serve import faiss_index
from contrastkit.serve.index_build import model_info, rebuild_search
from contrastkit.serve.index_files import IndexFiles
from search_page import serving

WORDS = ["red", "green", "blue", "yellow", "purple", "white", "circle", "square", "star", "cross", "large", "small"]


def synthetic_index(run: Path, root: Path, items: int, seed: int = 0) -> tuple[IndexFiles, np.ndarray]:
    """An index of ``items`` clustered unit vectors of the run's dimension; (files, held-out queries)."""
    model, _ = load_run(run)
    dim = model.embed_dim
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim))
    vectors = centres[rng.integers(0, 1000, items)] + 0.5 * rng.normal(size=(items, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    files = IndexFiles(root, dim, model_info(run))
    for start in range(0, items, 20_000):
        chunk = vectors[start : start + 20_000]
        rows = [(f"synthetic#{i}", "synthetic:vectors", "train", f"item {i}") for i in range(start, start + len(chunk))]
        files.append(rows, chunk, chunk)
    rebuild_search(files, memory_budget_bytes=4 << 30)
    queries = vectors[rng.choice(items, 500, replace=False)] + rng.normal(0, 0.05, (500, dim)).astype(np.float32)
    return files, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def index_recall(files: IndexFiles, queries: np.ndarray) -> float:
    """recall@10 of the saved image index against exact inner-product search."""
    data = np.asarray(files.vectors("images"))
    exact = faiss_index.faiss.IndexFlatIP(files.dim)
    exact.add(data)
    truth = exact.search(queries, 10)[1]
    index = faiss_index.load(files.root / "images.faiss", int(files.info["search"]["images"]["nprobe"]))
    return faiss_index.recall_at_k(truth, index.search(queries, 10)[1])


async def load(url: str, kind: str, clients: int, seconds: float, items: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(worker: int) -> None:
        nonlocal errors
        rng = random.Random(worker)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.perf_counter() < stop:
                if kind == "text":
                    path, params = "/api/search", {"text": " ".join(rng.sample(WORDS, 3)), "k": 10}
                else:
                    path, params = f"/api/similar/{rng.randrange(items)}", {"k": 10}
                started = time.perf_counter()
                response = await http.get(path, params=params)
                if response.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - began
    ms = sorted(1000 * x for x in latencies)
    return {
        "qps": len(ms) / elapsed,
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "n": len(ms),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run (embeds the text queries)")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        files, queries = synthetic_index(Path(args.run), Path(tmp) / "index", args.items)
        built = time.perf_counter() - started
        choice = files.info["search"]["images"]
        recall = index_recall(files, queries)
        print(
            f"index: {args.items} x {files.dim}, {choice['factory']} nprobe {choice['nprobe']}, built in "
            f"{built:.0f} s; recall@10 vs exact {recall:.3f}"
        )
        rows = []
        with serving(Path(tmp) / "index") as url:
            for kind in ("text", "vector"):
                for clients in (int(c) for c in args.clients.split(",")):
                    result = asyncio.run(load(url, kind, clients, args.seconds, args.items))
                    rows.append((kind, clients, result))
                    print(
                        f"{kind:6s} {clients:3d} clients: {result['qps']:7.1f} q/s, p50 {result['p50']:6.1f} ms, "
                        f"p99 {result['p99']:6.1f} ms ({result['n']} queries, {result['errors']} errors)"
                    )
    lines = [
        f"Command: `{command_line('serve_load.py', argv)}`. CPU: {cpu_name()}, {os.cpu_count()} cores; server "
        "and load generator share them. Index: "
        f"{args.items:,} synthetic clustered {files.dim}-d vectors, faiss `{choice['factory']}` nprobe "
        f"{choice['nprobe']} (chosen by `contrastkit index`'s rule), **recall@10 vs exact {recall:.3f}** on 500 "
        f"held-out queries. {args.seconds:g} s per row; each client sends its next query when the answer arrives.",
        "",
        "| queries | clients | queries/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for kind, clients, r in rows:
        what = "text (text tower + search)" if kind == "text" else "vector (/api/similar)"
        lines.append(f"| {what} | {clients} | {r['qps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    lines += ["", "Anchor: clip-retrieval's back end, ~20 queries/s at ~50 ms."]
    write_section(args.results, "Search service load (serve_load.py)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
