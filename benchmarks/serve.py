"""The live service under load: 10 s recordings POSTed to `rcmae serve`'s application on 127.0.0.1 at
concurrency 1, 4, 16 and 64, with batching off (max_batch_size 1) and on, one replica; requests/s and p50/p99
latency beside the same recordings scored in-process by the Python API (the floor: one at a time, one thread,
as the replica runs).

Each recording is five of one machine's test clips end to end (10 s with a 2 s model: nine windows). The load
generator runs on the same machine as the service, so on a small machine it competes with it for the CPUs.

    python benchmarks/serve.py --model runs/main/finetune/model --data runs/main/data
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rcmae import Detector
from rcmae.data.layout import index_clips

CONCURRENCY = (1, 4, 16, 64)


def recordings(data: Path, seconds: float, count: int) -> tuple[str, str, list[bytes]]:
    """(machine type, ID, WAV files of `seconds`) built from the first machine's test clips."""
    table = index_clips(data).table.to_pandas()
    test = table[table["split"] == "test"].sort_values("path")
    first = test.iloc[0]
    mine = test[(test["machine_type"] == first["machine_type"]) & (test["machine_id"] == first["machine_id"])]
    waves = [sf.read(path, dtype="float32")[0] for path in mine["path"]]
    rate = sf.info(mine["path"].iloc[0]).samplerate
    wanted = int(seconds * rate)
    files = []
    for i in range(count):
        wave = np.concatenate([waves[(i + k) % len(waves)] for k in range(wanted // len(waves[0]) + 1)])[:wanted]
        buffer = io.BytesIO()
        sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
        files.append(buffer.getvalue())
    return first["machine_type"], first["machine_id"], files


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def in_process(model: Path, machine: tuple[str, str], files: list[bytes], requests: int) -> tuple[float, float, float]:
    """(requests/s, p50 s, p99 s) of the Python API scoring the recordings one after another."""
    torch.set_num_threads(1)
    detector = Detector.load(model)
    waves = [sf.read(io.BytesIO(data), dtype="float32") for data in files]
    detector.score(waves[0][0], waves[0][1], *machine)  # warm
    latencies, started = [], time.perf_counter()
    for i in range(requests):
        begin = time.perf_counter()
        detector.score(waves[i % len(waves)][0], waves[i % len(waves)][1], *machine)
        latencies.append(time.perf_counter() - begin)
    return requests / (time.perf_counter() - started), *percentiles(latencies)


def load(port: int, machine: tuple[str, str], files: list[bytes], concurrency: int,
         requests: int) -> tuple[float, float, float]:
    """(requests/s, p50 s, p99 s) of `requests` POSTs from `concurrency` clients with kept-alive connections."""
    local = threading.local()
    path = f"/score?machine_type={machine[0]}&machine_id={machine[1]}"

    def send(i: int) -> float:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        begin = time.perf_counter()
        local.connection.request("POST", path, body=files[i % len(files)], headers={"Content-Type": "audio/wav"})
        answer = local.connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST /score answered {answer.status}")
        return time.perf_counter() - begin

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, range(concurrency)))  # warm every connection
        started = time.perf_counter()
        latencies = list(pool.map(send, range(requests)))
    return requests / (time.perf_counter() - started), *percentiles(latencies)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a fine-tuned model folder")
    parser.add_argument("--data", type=Path, required=True, help="the DCASE-layout data it was trained on")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level")
    parser.add_argument("--max-batch-size", type=int, default=16, help="the batching arm's batch size")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="the batching arm's wait for a batch")
    args = parser.parse_args()
    os.environ.setdefault("RCMAE_PROGRESS", "0")
    import ray
    from ray import serve

    from rcmae.distributed.runtime import ensure_ray
    from rcmae.serve.app import ServiceSettings, application

    machine_type, machine_id, files = recordings(args.data, args.seconds, 16)
    machine = (machine_type, machine_id)
    floor = in_process(args.model, machine, files, min(args.requests, 64))
    print(f"{len(files)} recordings of {args.seconds:g} s ({machine_type}/{machine_id}), {args.requests} requests "
          f"per level, 1 replica, {os.cpu_count()} CPUs")
    print(f"in-process API (floor): {floor[0]:.1f} recordings/s, p50 {floor[1] * 1000:.1f} ms, "
          f"p99 {floor[2] * 1000:.1f} ms")
    ensure_ray()
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = {}
    try:
        for batch in (1, args.max_batch_size):
            settings = ServiceSettings(str(args.model), max_batch_size=batch, batch_wait_s=args.batch_wait_ms / 1000)
            serve.run(application(settings, replicas=1), name="rcmae", route_prefix="/")
            for concurrency in CONCURRENCY:
                rows[batch, concurrency] = load(port, machine, files, concurrency, args.requests)
    finally:
        ray.shutdown()  # the local instance, Serve with it
    print()
    print("| concurrency | batching | requests/s | p50 ms | p99 ms | p50 over the floor ms |")
    print("|---:|---|---:|---:|---:|---:|")
    for (batch, concurrency), (rate, p50, p99) in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0])):
        arm = "off" if batch == 1 else f"max {batch}"
        print(f"| {concurrency} | {arm} | {rate:.1f} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | "
              f"{(p50 - floor[1]) * 1000:+.1f} |")
    gain = rows[args.max_batch_size, 16][0] / rows[1, 16][0]
    print(f"\nbatching at concurrency 16: {gain:.2f}x the requests/s without; Serve's added p50 at concurrency 1 "
          f"(batching off): {(rows[1, 1][1] - floor[1]) * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
