"""Peak memory and speed of the contrastive losses on CPU: contrastkit vs open_clip.

    python benchmarks/loss_memory.py                 # B = 1k, 4k, 16k side by side, contrastkit alone at 64k
    python benchmarks/loss_memory.py --quick         # small sizes, a smoke run (~1 min)
    python benchmarks/loss_memory.py --sizes 2048,8192 --alone 32768 --results benchmarks/RESULTS.md

Each case (implementation x batch) runs in a fresh subprocess: inputs are
built, one tiny call warms the kernels up, then the kernel's peak-RSS counter
is reset (/proc/self/clear_refs) and read after one forward+backward: the
difference from the RSS before is the peak extra resident memory of the loss
(it includes the two B x D input gradients, which every implementation
returns). Time is the best of ``--reps`` forward+backward runs.

Contenders: contrastkit's registered ``clip`` and ``siglip`` terms (default
settings: tiled above 1024 rows, dense below) and open_clip's ``ClipLoss`` /
``SigLipLoss``; inputs are L2-normalised float32 B x D embeddings, t = 1/0.07
(CLIP init) for clip and t = 10, b = -10 (SigLIP init) for siglip.

Matmul FLOPs per forward+backward (2 B^2 D each):
  contrastkit clip, tiled: 4 (forward 1; backward recomputes the tile logits: 1, then dX and dY: 2)
  contrastkit siglip, tiled: 3 (gradients accumulated during the forward pass: logits, dX, dY)
  contrastkit dense fallback (B <= 1024) and open_clip SigLipLoss: 3
  open_clip ClipLoss: 6 (it computes image->text and text->image logits with two matmuls)
The floor is FLOPs / (this machine's float32 GEMM rate, measured here on a large matmul).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import resource
import subprocess
import sys
import time

from results_file import command_line, cpu_name, write_section

SECTION = "Loss memory and speed (CPU)"
IMPLS = ("contrastkit clip", "open_clip ClipLoss", "contrastkit siglip", "open_clip SigLipLoss")


# ----------------------------------------------------------------------------- one case (subprocess)


def _proc_status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_probe():
    """Returns ``stop() -> peak extra MiB`` measured from now.

    Linux: reset VmHWM, read VmRSS now and VmHWM at the end (exact peak). Elsewhere: ru_maxrss
    growth, which undercounts when an earlier phase of the process peaked higher.
    """
    if _reset_peak() and _proc_status_mib("VmRSS") is not None:
        base = _proc_status_mib("VmRSS")
        return lambda: (_proc_status_mib("VmHWM") or 0.0) - base
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - base


def make_loss(impl: str):
    """``fn(x, y, t, b) -> loss`` for one of the four compared implementations (also used by gpu_check.py)."""
    from contrastkit.encoded import Encoded
    from contrastkit.objectives import build

    if impl == "contrastkit clip":
        term = build([{"name": "clip"}]).terms[0]
        return lambda x, y, t, b: term(Encoded(image=x, text=y, logit_scale=t))
    if impl == "contrastkit siglip":
        term = build([{"name": "siglip"}]).terms[0]
        return lambda x, y, t, b: term(Encoded(image=x, text=y, logit_scale=t, logit_bias=b))
    from open_clip.loss import ClipLoss, SigLipLoss

    if impl == "open_clip ClipLoss":
        loss = ClipLoss()
        return lambda x, y, t, b: loss(x, y, t)
    if impl == "open_clip SigLipLoss":
        loss = SigLipLoss()
        return lambda x, y, t, b: loss(x, y, t, b)
    raise ValueError(impl)  # pragma: no cover


def _inputs(rows: int, dim: int, impl: str, seed: int = 0):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(rows, dim, generator=g), dim=1).requires_grad_(True)
    y = F.normalize(torch.randn(rows, dim, generator=g), dim=1).requires_grad_(True)
    siglip = "siglip" in impl.lower()
    t = torch.tensor(10.0 if siglip else 1 / 0.07, requires_grad=True)
    b = torch.tensor(-10.0, requires_grad=True)
    return x, y, t, b


def run_case(impl: str, rows: int, dim: int, reps: int, threads: int) -> dict:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    loss_fn = make_loss(impl)
    # Warm-up on a tiny batch: thread pools, GEMM kernels, allocator arenas.
    wx, wy, wt, wb = _inputs(64, dim, impl, seed=1)
    loss_fn(wx, wy, wt, wb).backward()
    del wx, wy, wt, wb
    x, y, t, b = _inputs(rows, dim, impl)
    gc.collect()
    peak_since = _memory_probe()
    times, fwd_times, cpu_times = [], [], []
    value = float("nan")
    for rep in range(reps):
        for leaf in (x, y, t, b):
            leaf.grad = None
        c0, t0 = time.process_time(), time.perf_counter()
        loss = loss_fn(x, y, t, b)
        t1 = time.perf_counter()
        loss.backward()
        t2, c2 = time.perf_counter(), time.process_time()
        value = float(loss.detach())
        del loss
        times.append(t2 - t0)
        fwd_times.append(t1 - t0)
        cpu_times.append(c2 - c0)
        if rep == 0:
            peak = peak_since()
    return {
        "impl": impl,
        "rows": rows,
        "time_s": min(times),
        "fwd_s": min(fwd_times),
        "times": times,
        "cpu_s": min(cpu_times),
        "peak_extra_mib": peak,
        "loss": value,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- driver


def measure_gemm_gflops(threads: int, n: int = 4096, reps: int = 5) -> float:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def matmul_flops(impl: str, rows: int, dim: int) -> float:
    dense_fallback = rows <= 1024  # contrastkit terms: dense formula up to 1024 rows on CPU
    count = {
        "contrastkit clip": 3 if dense_fallback else 4,
        "contrastkit siglip": 3,
        "open_clip ClipLoss": 6,
        "open_clip SigLipLoss": 3,
    }[impl]
    return count * 2.0 * rows * rows * dim


def spawn(impl: str, rows: int, dim: int, reps: int, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--_case", json.dumps([impl, rows, dim, reps, threads])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "rows": rows, "error": f"timeout after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else tail[:120]
        return {"impl": impl, "rows": rows, "error": why}
    return json.loads(lines[-1])


def _fmt_rows(rows: int) -> str:
    return f"{rows // 1024}k" if rows % 1024 == 0 and rows >= 1024 else str(rows)


def build_table(results: list[dict], gflops: float, dim: int) -> str:
    by_key = {(r["impl"], r["rows"]): r for r in results}
    head = (
        "| loss | B | fwd+bwd wall s | CPU s | speed-up vs open_clip (wall / CPU) | peak extra MiB "
        "| memory / open_clip | matmul GFLOP | floor s | wall / floor |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        impl, rows = r["impl"], r["rows"]
        if "error" in r:
            lines.append(f"| {impl} | {_fmt_rows(rows)} | {r['error']} | | | | | | | |")
            continue
        peer_name = {"contrastkit clip": "open_clip ClipLoss", "contrastkit siglip": "open_clip SigLipLoss"}.get(impl)
        peer = by_key.get((peer_name, rows)) if peer_name else None
        speed = mem = ""
        if peer is not None and "error" not in peer:
            speed = f"{peer['time_s'] / r['time_s']:.2f}x / {peer['cpu_s'] / r['cpu_s']:.2f}x"
            mem = (
                f"1/{peer['peak_extra_mib'] / max(r['peak_extra_mib'], 1e-9):.0f}" if r["peak_extra_mib"] > 0 else "~0"
            )
        elif peer is not None:
            speed = mem = f"peer: {peer['error']}"
        flops = matmul_flops(impl, rows, dim)
        floor = flops / (gflops * 1e9)
        lines.append(
            f"| {impl} | {_fmt_rows(rows)} | {r['time_s']:.3f} | {r['cpu_s']:.2f} | {speed} "
            f"| {r['peak_extra_mib']:.0f} | {mem} "
            f"| {flops / 1e9:.0f} | {floor:.3f} | {r['time_s'] / floor:.2f} |"
        )
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", default="1024,4096,16384", help="comma-separated batch sizes measured for all four losses"
    )
    parser.add_argument(
        "--alone", default="65536", help="comma-separated batch sizes measured for contrastkit only ('' for none)"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--reps", type=int, default=3, help="timed runs per case up to 16k rows (best is reported); 1 above"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (256,1024 / alone 4096), one rep")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument(
        "--results", default=None, help=f"write the table into this Markdown file's '{SECTION}' section"
    )
    parser.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._case is not None:
        impl, rows, dim, reps, threads = json.loads(args._case)
        print(json.dumps(run_case(impl, rows, dim, reps, threads)), flush=True)
        return 0

    import torch

    if args.quick:
        args.sizes, args.alone, args.reps = "256,2048", "4096", 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    alone = [int(s) for s in args.alone.split(",") if s.strip()]
    command = command_line("loss_memory.py", argv)
    threads = args.threads if args.threads > 0 else torch.get_num_threads()
    started, load_start = _dt.datetime.now().astimezone(), _load()
    print(f"command: {command}")
    print(
        f"date: {started:%Y-%m-%d %H:%M %Z}; torch {torch.__version__}; CPU: {cpu_name()}, "
        f"{os.cpu_count()} logical cores, {threads} torch threads; load average at start: {load_start}",
        flush=True,
    )
    gflops = measure_gemm_gflops(threads)
    print(f"float32 GEMM (4096^3, best of 5): {gflops:.0f} GFLOP/s", flush=True)

    plan = [(impl, rows) for rows in sizes for impl in IMPLS]
    plan += [(impl, rows) for rows in alone for impl in ("contrastkit clip", "contrastkit siglip")]
    results = []
    for impl, rows in plan:
        reps = args.reps if rows < 16384 else 2 if rows == 16384 else 1
        reps = min(reps, args.reps)
        res = spawn(impl, rows, args.dim, reps, threads, args.timeout)
        results.append(res)
        shown = res.get("error") or (
            f"{res['time_s']:.3f}s (fwd {res['fwd_s']:.3f}s, CPU {res['cpu_s']:.2f}s), "
            f"peak extra {res['peak_extra_mib']:.0f} MiB, loss {res['loss']:.4f}"
        )
        print(f"  {impl:22s} B={rows:6d}: {shown}", flush=True)

    table = build_table(results, gflops, args.dim)
    finished, load_end = _dt.datetime.now().astimezone(), _load()
    notes = (
        f"Command: `{command}`  \n"
        f"Date: {started:%Y-%m-%d %H:%M %Z} (took {(finished - started).total_seconds() / 60:.1f} min); "
        f"torch {torch.__version__}; {cpu_name()}, {os.cpu_count()} logical cores, {threads} torch threads; "
        f"float32 GEMM {gflops:.0f} GFLOP/s (4096^3); load average (1/5/15 min) {load_start} at start, "
        f"{load_end} at end (the machine is shared: a load above {threads} means other jobs competed)."
    )
    print()
    print(table)
    print(f"\nload average at end: {load_end}")
    if args.results:
        body = (
            f"{notes}\n\n"
            f"D = {args.dim}, float32, L2-normalised random embeddings (t = 1/0.07 for clip; t = 10, "
            f"b = -10 for siglip). Time: best of {args.reps} forward+backward runs below 16k rows, 2 at 16k, "
            f"1 above. Peak extra: peak RSS (VmHWM, reset just before) minus the RSS before, in a fresh "
            f"process, over one forward+backward; it includes the two B x D input gradients. Matmul GFLOP: "
            f"4 x 2B^2D for contrastkit's tiled clip (forward, recomputation, dX, dY), 3 for its tiled siglip "
            f"(gradients accumulated in the forward pass) and for dense losses (contrastkit up to 1024 rows, "
            f"open_clip SigLipLoss), 6 for open_clip ClipLoss (two logit matmuls). "
            f"Floor = GFLOP / GEMM rate. CPU s = process CPU time (all its threads), less sensitive "
            f"than wall time to other jobs on the machine.\n\n{table}\n"
        )
        write_section(args.results, SECTION, body)
        print(f"wrote the '{SECTION}' section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
