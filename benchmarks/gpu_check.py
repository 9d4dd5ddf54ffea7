"""GPU check of contrastkit's tiled contrastive losses (one short run, < 4 minutes on an H100/H200).

    python3 benchmarks/gpu_check.py --out gpu_check.md     # on a CUDA machine
    python3 benchmarks/gpu_check.py --cpu-smoke             # tiny sizes on CPU: checks the script itself

Prints, and writes to ``--out`` as Markdown:

1. the card, torch / CUDA versions, the measured fp32 and bf16 GEMM rates;
2. a correctness check on the device (tiled == dense in float64, small B);
3. loss forward+backward time and peak extra CUDA memory
   (``torch.cuda.max_memory_allocated`` minus the memory held before the call, so it
   includes the two B x D input gradients) of contrastkit's ``clip`` / ``siglip``
   terms against open_clip's ``ClipLoss`` / ``SigLipLoss`` at B = 64k and 256k,
   D = 512, fp32 (IEEE matmuls: torch's default, TF32 off) and bf16 inputs; open_clip
   running out of memory is reported as OOM;
4. a tile-size sweep (contrastkit clip, B = 64k) and the dense/tiled crossover, to
   tune ``DEFAULT_TILE_CUDA`` / ``DENSE_MAX_CUDA`` in ``contrastkit/objectives/tiled.py``;
5. the time of one training step of an open_clip ViT-B-32 (random init) at batch 256,
   AdamW, bf16 autocast, with contrastkit's ``clip`` term (and with open_clip's
   ``ClipLoss`` for reference).

Needs ``open_clip`` (and its ``ftfy`` / ``wcwidth``) importable: without them the open_clip
columns and the ViT step are reported as skipped. ``src/`` is put on the path when
contrastkit is not installed. ``--budget-s`` (default 220) skips what would start after
that many seconds, so the run ends in time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import contrastkit  # noqa: F401
except ImportError:  # a bare checkout: use the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import torch
import torch.nn.functional as F

from contrastkit.encoded import Encoded
from contrastkit.objectives.clip import ClipTerm, clip_loss
from contrastkit.objectives.siglip import siglip_loss
from contrastkit.objectives.tiled import DEFAULT_TILE_CUDA, DENSE_MAX_CUDA, tiled_clip_loss
from contrastkit.objectives.tiled_sigmoid import tiled_siglip_loss
from loss_memory import make_loss  # the same four implementations as the CPU benchmark

try:
    import open_clip
    from open_clip.loss import ClipLoss, SigLipLoss

    OPEN_CLIP_ERROR = None
except Exception as err:
    open_clip = ClipLoss = SigLipLoss = None
    OPEN_CLIP_ERROR = f"{type(err).__name__}: {err}"


class Budget:
    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def gemm_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    elapsed = (time.perf_counter() - t0) / reps
    del a, b
    free(device)
    return 2 * n**3 / elapsed / 1e12


# ----------------------------------------------------------------------------- losses


def inputs(rows: int, dim: int, dtype: torch.dtype, device: torch.device, siglip: bool, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = F.normalize(torch.randn(rows, dim, device=device, generator=g), dim=1).to(dtype).requires_grad_(True)
    y = F.normalize(torch.randn(rows, dim, device=device, generator=g), dim=1).to(dtype).requires_grad_(True)
    t = torch.tensor(10.0 if siglip else 1 / 0.07, device=device, requires_grad=True)
    b = torch.tensor(-10.0, device=device, requires_grad=True)
    return x, y, t, b


def measure_loss(impl: str, rows: int, dim: int, dtype: torch.dtype, device: torch.device, reps: int) -> dict:
    """Warm-up + ``reps`` timed forward+backward runs (best reported); peak extra memory over the first."""
    out: dict = {"impl": impl, "rows": rows, "dtype": str(dtype).replace("torch.", "")}
    if impl.startswith("open_clip") and OPEN_CLIP_ERROR:
        out["error"] = "open_clip not importable"
        return out
    fn = make_loss(impl)
    x = y = t = b = loss = None
    try:
        x, y, t, b = inputs(rows, dim, dtype, device, "siglip" in impl.lower())
        fn(x, y, t, b).backward()  # warm-up (and the first OOM, if any)
        times = []
        peak = None
        for rep in range(reps):
            x.grad = y.grad = t.grad = b.grad = None
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            loss = fn(x, y, t, b)
            loss.backward()
            sync(device)
            times.append(time.perf_counter() - t0)
            if rep == 0 and device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            out["loss"] = float(loss.detach())
            loss = None
        out.update(time_s=min(times), peak_mib=peak)
    except Exception as err:
        if not is_oom(err):
            raise
        out["error"] = "OOM"
    finally:
        del x, y, t, b, loss
        free(device)
    return out


def matmul_flops(impl: str, rows: int, dim: int) -> float:
    dense = rows <= DENSE_MAX_CUDA
    count = {
        "contrastkit clip": 3 if dense else 4,
        "contrastkit siglip": 3,
        "open_clip ClipLoss": 6,
        "open_clip SigLipLoss": 3,
    }[impl]
    return count * 2.0 * rows * rows * dim


def rows_label(rows: int) -> str:
    return f"{rows // 1024}k" if rows >= 1024 and rows % 1024 == 0 else str(rows)


def loss_table(results: list[dict], rates: dict, dim: int) -> str:
    head = (
        "| loss | dtype | B | fwd+bwd ms | peak extra MiB | speed-up vs open_clip | memory / open_clip "
        "| matmul TFLOP | floor ms | time / floor |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_key = {(r["impl"], r["dtype"], r["rows"]): r for r in results}
    peers = {"contrastkit clip": "open_clip ClipLoss", "contrastkit siglip": "open_clip SigLipLoss"}
    for r in results:
        cells = [r["impl"], r["dtype"], rows_label(r["rows"])]
        if "error" in r:
            lines.append("| " + " | ".join(cells + [r["error"]] + [""] * 6) + " |")
            continue
        peer = by_key.get((peers.get(r["impl"]), r["dtype"], r["rows"]))
        speed = mem = ""
        if peer is not None:
            if "error" in peer:
                speed = mem = f"open_clip {peer['error']}"
            else:
                speed = f"{peer['time_s'] / r['time_s']:.2f}x"
                if r.get("peak_mib") and peer.get("peak_mib"):
                    mem = f"1/{peer['peak_mib'] / r['peak_mib']:.1f}"
        flops = matmul_flops(r["impl"], r["rows"], dim)
        rate = rates.get(r["dtype"])
        floor = flops / (rate * 1e12) if rate else float("nan")
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") is not None else "n/a"
        cells += [
            f"{r['time_s'] * 1e3:.1f}",
            peak,
            speed,
            mem,
            f"{flops / 1e12:.2f}",
            f"{floor * 1e3:.1f}",
            f"{r['time_s'] / floor:.2f}" if floor == floor else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- small extra checks


def correctness(device: torch.device, rows: int, tile: int) -> str:
    """Tiled vs dense on the device, float64, with label smoothing: max relative error."""
    g = torch.Generator(device=device).manual_seed(3)
    x = F.normalize(torch.randn(rows, 32, device=device, dtype=torch.float64, generator=g), dim=1)
    y = F.normalize(x + torch.randn(rows, 32, device=device, dtype=torch.float64, generator=g), dim=1)
    t = torch.tensor(20.0, device=device, dtype=torch.float64)
    b = torch.tensor(-5.0, device=device, dtype=torch.float64)
    worst = {}
    for name, tiled, dense, args in (
        (
            "clip",
            lambda *a: tiled_clip_loss(*a, label_smoothing=0.1, tile_size=tile),
            lambda *a: clip_loss(*a, label_smoothing=0.1),
            (x, y, t),
        ),
        ("siglip", lambda *a: tiled_siglip_loss(*a, tile_size=tile), siglip_loss, (x, y, t, b)),
    ):
        errs = []
        for fn in (tiled, dense):
            leaves = [a.detach().clone().requires_grad_(True) for a in args]
            value = fn(*leaves)
            errs.append([value.detach()] + list(torch.autograd.grad(value, leaves)))
        worst[name] = max(float((a - r).norm() / r.norm().clamp_min(1e-300)) for a, r in zip(*errs))
    return ", ".join(f"{k}: max relative error {v:.1e}" for k, v in worst.items())


def tile_sweep(
    device: torch.device, rows: int, dim: int, tiles: list[int], dtypes: list[torch.dtype], budget: Budget
) -> str:
    lines = ["| dtype | tile | fwd+bwd ms |", "|---|---|---|"]
    for dtype in dtypes:
        x, y, t, _ = inputs(rows, dim, dtype, device, siglip=False)
        for tile in tiles:
            if budget.left() < 30:
                lines.append(f"| {str(dtype)[6:]} | {tile} | skipped (time budget) |")
                continue
            try:
                best = float("inf")
                for _ in range(3):  # first run is the warm-up
                    x.grad = y.grad = t.grad = None
                    sync(device)
                    t0 = time.perf_counter()
                    tiled_clip_loss(x, y, t, tile_size=tile).backward()
                    sync(device)
                    best = min(best, time.perf_counter() - t0)
                lines.append(f"| {str(dtype)[6:]} | {tile} | {best * 1e3:.1f} |")
            except Exception as err:
                if not is_oom(err):
                    raise
                lines.append(f"| {str(dtype)[6:]} | {tile} | OOM |")
                free(device)
        del x, y, t
        free(device)
    return "\n".join(lines)


def crossover(device: torch.device, sizes: list[int], dim: int, dtype: torch.dtype) -> str:
    lines = ["| B | dense clip_loss ms | tiled (default tile) ms |", "|---|---|---|"]
    for rows in sizes:
        x, y, t, _ = inputs(rows, dim, dtype, device, siglip=False)
        row = [rows_label(rows)]
        for fn in (lambda: clip_loss(x, y, t), lambda: tiled_clip_loss(x, y, t)):
            best = float("inf")
            for _ in range(4):
                x.grad = y.grad = t.grad = None
                sync(device)
                t0 = time.perf_counter()
                fn().backward()
                sync(device)
                best = min(best, time.perf_counter() - t0)
            row.append(f"{best * 1e3:.2f}")
        lines.append("| " + " | ".join(row) + " |")
        x = y = t = None  # release this size's tensors before the next one is allocated
        free(device)
    return "\n".join(lines)


def train_step(device: torch.device, batch: int, steps: int, warmup: int) -> str:
    if OPEN_CLIP_ERROR:
        return f"skipped: open_clip not importable ({OPEN_CLIP_ERROR})"
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).to(device)
    model.train()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    images = torch.randn(batch, 3, size, size, device=device)
    tokens = torch.randint(1, 49408, (batch, 77), device=device)
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    rows = ["| loss used in the step | step ms | peak MiB |", "|---|---|---|"]
    terms = [("contrastkit clip", ClipTerm())]
    if ClipLoss is not None:
        terms.append(("open_clip ClipLoss", ClipLoss()))
    for name, loss_fn in terms:

        def step() -> None:
            with amp:
                img = model.encode_image(images, normalize=True)
                txt = model.encode_text(tokens, normalize=True)
                scale = model.logit_scale.exp()
                if name.startswith("contrastkit"):
                    loss = loss_fn(Encoded(image=img, text=txt, logit_scale=scale))
                else:
                    loss = loss_fn(img, txt, scale)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        ms = (time.perf_counter() - t0) / steps * 1e3
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "n/a"
        rows.append(f"| {name} | {ms:.1f} | {peak} |")
    model = opt = images = tokens = None  # release the model before the next check
    free(device)
    return (
        f"open_clip ViT-B-32, random init, batch {batch}, {size}px, AdamW, bf16 autocast, "
        f"mean of {steps} steps after {warmup} warm-up steps:\n\n" + "\n".join(rows)
    )


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="also write the Markdown report here")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (checks the script)")
    parser.add_argument(
        "--budget-s", type=float, default=220.0, help="skip measurements that would start after this many seconds"
    )
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)

    if args.cpu_smoke:
        device = torch.device("cpu")
        sizes, dim, reps = [600, 3000], 64, 1
        sweep_rows, sweep_tiles, cross_sizes = 3000, [512, 1024, 2048], [512, 2048]
        batch, steps, warmup = 2, 1, 1
        dtypes = [torch.float32, torch.bfloat16]
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --cpu-smoke to check the script on CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        sizes, dim, reps = [65536, 262144], 512, 2
        sweep_rows, sweep_tiles, cross_sizes = 65536, [4096, 8192, 16384], [2048, 4096, 8192, 16384]
        batch, steps, warmup = 256, 10, 3
        dtypes = [torch.float32, torch.bfloat16]

    command = "python3 " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    report = [
        "# contrastkit GPU check\n",
        f"Command: `{command}`  ",
        f"Date: {_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}  ",
        f"Device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
        f"TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (fp32 rows are IEEE fp32)  ",
        f"open_clip: {open_clip.__version__ if open_clip else 'not importable: ' + str(OPEN_CLIP_ERROR)}  ",
        f"Tiled defaults: tile {DEFAULT_TILE_CUDA}, dense up to {DENSE_MAX_CUDA} rows (CUDA)\n",
    ]

    def emit(text: str) -> None:
        print(text, flush=True)
        report.append(text)

    for line in report:
        print(line, flush=True)
    gemm_n = 1024 if args.cpu_smoke else 8192
    rates = {str(dt).replace("torch.", ""): gemm_tflops(device, dt, gemm_n) for dt in dtypes}
    emit("GEMM rate (" + f"{gemm_n}^3): " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in rates.items()) + "\n")
    emit(
        "Correctness on the device (tiled vs dense, float64, several tiles): "
        + correctness(device, 700 if args.cpu_smoke else 3000, 256 if args.cpu_smoke else 1024)
        + "\n"
    )

    emit(f"## Loss forward+backward, D = {dim}\n")
    results = []
    impls = ["contrastkit clip", "open_clip ClipLoss", "contrastkit siglip", "open_clip SigLipLoss"]
    for dtype in dtypes:
        for rows in sizes:
            for impl in impls:
                if budget.left() < 60:
                    results.append(
                        {"impl": impl, "rows": rows, "dtype": str(dtype)[6:], "error": "skipped (time budget)"}
                    )
                    continue
                res = measure_loss(impl, rows, dim, dtype, device, reps if rows < max(sizes) else 1)
                results.append(res)
                shown = res.get("error") or f"{res['time_s'] * 1e3:.1f} ms, peak extra {res.get('peak_mib')} MiB"
                print(f"  {impl:22s} {str(dtype)[6:]:8s} B={rows}: {shown}", flush=True)
    emit(loss_table(results, rates, dim) + "\n")
    emit(
        f"Time: best of {reps} runs after a warm-up ({rows_label(max(sizes))}: 1 run). "
        "Peak extra = max_memory_allocated during the call minus memory_allocated before it "
        "(inputs excluded, the two input gradients included). Matmul TFLOP: 4 x 2B^2D for contrastkit's "
        "tiled clip, 3 for its siglip and for dense losses, 6 for open_clip ClipLoss; floor = TFLOP / the "
        "GEMM rate above.\n"
    )

    emit(f"## Tile size (contrastkit clip, B = {rows_label(sweep_rows)}, D = {dim})\n")
    emit(tile_sweep(device, sweep_rows, dim, sweep_tiles, dtypes, budget) + "\n")
    if budget.left() > 30:
        emit(f"## Dense vs tiled crossover (fp32, D = {dim})\n")
        emit(crossover(device, cross_sizes, dim, torch.float32) + "\n")

    emit("## Training step\n")
    if budget.left() > 40:
        try:
            emit(train_step(device, batch, steps, warmup) + "\n")
        except Exception as err:
            traceback.print_exc()
            emit(f"failed: {type(err).__name__}: {err}\n")
    else:
        emit("skipped (time budget)\n")
    emit(f"Total time: {time.perf_counter() - budget.start:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(report) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
