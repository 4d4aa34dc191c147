"""`segwise serve` throughput: requests/s and p50/p95 latency of `POST /predict` for 512² images, with
micro-batching on and off, side by side in one run.

The same model (smp Unet, random init with one seed, eval mode, as `Predictor` prepares it) is served twice by
uvicorn on 127.0.0.1 from this process: once with `--batch-window-ms` WINDOW and `--max-batch` N, once with
batching off (`--batch-window-ms 0`). A client (httpx, asyncio) keeps `--concurrency` requests in flight until
`--requests` have been answered; each request uploads one of 8 different 512² PNGs and gets the class-index PNG
back. The first `--warmup` requests of each server are not counted. Latency is from sending to the last response
byte. The two servers run one after another, the order alternating over `--rounds`.

    python benchmarks/serve.py                                     # CPU: ~2 minutes on 2 cores
    python benchmarks/serve.py --device cuda --requests 512 --concurrency 32 --max-batch 16
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

import cv2
import httpx
import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square image side in pixels")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--model", default="unet", help="smp architecture")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=48, help="counted requests per server and round")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--window-ms", type=float, default=10.0, help="batching window of the batched server")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def build_predictor(args: argparse.Namespace):
    from segwise.inference import Predictor
    from segwise.models.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(name=args.model, encoder=args.encoder, args={}, in_channels=3, num_classes=args.classes,
                     class_names=[f"class{k}" for k in range(args.classes)],
                     palette=[[(37 * k) % 256, (91 * k) % 256, (151 * k) % 256] for k in range(args.classes)],
                     mean=[128.0] * 3, std=[64.0] * 3)
    return Predictor(spec.build().eval(), spec, args.device)


def images(size: int, count: int = 8) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        noise = rng.integers(0, 256, (size // 16, size // 16, 3)).astype(np.uint8)
        out.append(cv2.imencode(".png", cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC))[1].tobytes())
    return out


async def load(url: str, files: list[bytes], total: int, concurrency: int) -> tuple[list[float], float]:
    """Send `total` requests, `concurrency` in flight; returns the latencies (s) and the wall time."""
    latencies: list[float] = []
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            start = time.perf_counter()
            response = await client.post("/predict", files={"file": (f"{i}.png", files[i % len(files)], "image/png")})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def measure(predictor, files: list[bytes], args: argparse.Namespace, window_ms: float) -> dict[str, float]:
    from segwise.serve import create_app
    from segwise.serve.server import start_in_thread

    server, thread, url = start_in_thread(create_app(predictor, batch_window_ms=window_ms, max_batch=args.max_batch))
    try:
        asyncio.run(load(url, files, args.warmup, args.concurrency))
        before = httpx.get(f"{url}/health").json()
        latencies, wall = asyncio.run(load(url, files, args.requests, args.concurrency))
        after = httpx.get(f"{url}/health").json()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    ordered = sorted(latencies)
    batches = after["batches"] - before["batches"]
    return {"rps": len(latencies) / wall, "p50": statistics.median(ordered) * 1000,
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
            "mean_batch": (after["batched_images"] - before["batched_images"]) / max(batches, 1)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = build_predictor(args)
    files = images(args.size)
    contenders = {f"batched ({args.window_ms:g} ms, max {args.max_batch})": args.window_ms, "unbatched": 0.0}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        names = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for name in names:
            results[name].append(measure(predictor, files, args, contenders[name]))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), device {args.device}, {datetime.date.today()}")
    print(f"# python benchmarks/serve.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"# {args.model}-{args.encoder}, {args.classes} classes, {args.size}² PNG uploads, {args.requests} requests "
          f"per server and round, {args.concurrency} in flight, median of {args.rounds} round(s)")
    print("| server | requests/s | p50 ms | p95 ms | images per forward |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, runs in results.items():
        summary[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        s = summary[name]
        print(f"| {name} | {s['rps']:.2f} | {s['p50']:.0f} | {s['p95']:.0f} | {s['mean_batch']:.2f} |")
    batched, unbatched = summary.values()
    print(f"batched / unbatched: {batched['rps'] / unbatched['rps']:.2f}× requests/s, "
          f"{batched['p50'] / unbatched['p50']:.2f}× p50 latency, {batched['p95'] / unbatched['p95']:.2f}× p95")


if __name__ == "__main__":
    main()
