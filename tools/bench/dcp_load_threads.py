"""Where a DCP load's CPU goes, thread by thread: s3torch against s3torchconnector.

Usage::

    uv run --group bench python tools/bench/dcp_load_threads.py \\
        [--size-mib 1024] [--rounds 3] [--every 1] [--clients s3torch,s3torchconnector]

Starts SeaweedFS, saves the ``dcp_load`` case's state dict (``--size-mib`` of
float32 tensors of mixed sizes, four files) once with ``S3StorageWriter``,
then, for ``--rounds`` rounds, loads it with each client's DCP storage reader
in turn (``--every 4``: every fourth tensor, the partial case). For each load
it prints the wall time, the process's and the server's CPU seconds, and the
CPU seconds of each thread name (threads that start and end inside the load
count: :class:`s3bench.measure.ThreadCpuSampler`).

On a machine where client and server share few cores, every load is bound by
the CPU of both together; the busiest single thread is what bounds a client
once it has cores to spare. The last lines give, per client, the medians and
``size / busiest thread's CPU``: the rate at which that one thread, on a core
of its own, would be the limit.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench.adapters import ADAPTERS
from s3bench.dcp_state import check_state, make_state, save_for_load, storage_reader
from s3bench.measure import ThreadCpuSampler, cpu_seconds, server_cpu_seconds, server_process

MiB = 1024 * 1024
BUCKET = "dcp-threads"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="load every n-th tensor (default 1)")
    parser.add_argument("--clients", default="s3torch,s3torchconnector")
    args = parser.parse_args()
    if args.size_mib < 1 or args.rounds < 1 or args.every < 1:
        parser.error("--size-mib, --rounds and --every must be >= 1")
    for name in args.clients.split(","):
        if name not in ("s3torch", "s3torchconnector"):
            parser.error(f"unknown client {name!r}: s3torch or s3torchconnector")
    return args


def main() -> None:
    args = _parse()
    import boto3
    from torch.distributed.checkpoint import state_dict_loader

    from locals3 import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFSServer

    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    size = args.size_mib * MiB
    with SeaweedFSServer() as server:
        boto3.client("s3", region_name=REGION, endpoint_url=server.endpoint).create_bucket(
            Bucket=BUCKET
        )
        process = server_process(server.endpoint)
        uri = f"s3://{BUCKET}/ckpt"
        save_for_load(server.endpoint, REGION, uri, size)
        state = make_state(size, zeros=True, every=args.every)
        loaded = sum(tensor.nbytes for tensor in state.values())
        print(
            f"DCP load of {loaded / MiB:.0f} MiB ({len(state)} tensors) of a {args.size_mib} MiB "
            "checkpoint, SeaweedFS\n"
        )
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.clients.split(",")}
        for round_number in range(1, args.rounds + 1):
            for name, runs in results.items():
                adapter = ADAPTERS[name](server.endpoint, REGION)
                for tensor in state.values():
                    tensor.zero_()
                gc.collect()
                server_before = server_cpu_seconds(process) if process is not None else 0.0
                cpu, wall = cpu_seconds(), time.perf_counter()
                with ThreadCpuSampler() as sampler:
                    state_dict_loader.load(state, storage_reader=storage_reader(adapter, uri))
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
                server_cpu = (
                    server_cpu_seconds(process) - server_before if process else float("nan")
                )
                check_state(state, list(state)[::8])
                busiest = sampler.busiest()
                runs.append({"wall": wall, "cpu": cpu, "server": server_cpu, "busiest": busiest})
                threads = ", ".join(
                    f"{thread} {seconds:.2f}"
                    for thread, seconds in sorted(
                        sampler.by_name(0.02).items(), key=lambda item: -item[1]
                    )
                )
                print(
                    f"round {round_number} {name:16s} {wall:5.2f} s wall {cpu:5.2f} CPU-s, "
                    f"server {server_cpu:5.2f} CPU-s; "
                    f"busiest thread {busiest[0]} {busiest[1]:.2f} s; "
                    f"by name: {threads}",
                    flush=True,
                )
        print(
            "\n| client | wall s | MiB/s | client CPU-s | server CPU-s | busiest thread "
            "| its CPU-s | size / its CPU, MiB/s |"
        )
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        for name, runs in results.items():
            wall = statistics.median(run["wall"] for run in runs)
            busiest_cpu = statistics.median(run["busiest"][1] for run in runs)
            print(
                f"| {name} | {wall:.2f} | {loaded / MiB / wall:.0f} | "
                f"{statistics.median(run['cpu'] for run in runs):.2f} | "
                f"{statistics.median(run['server'] for run in runs):.2f} | "
                f"{runs[-1]['busiest'][0]} | {busiest_cpu:.2f} | "
                f"{loaded / MiB / busiest_cpu:.0f} |"
            )


if __name__ == "__main__":
    main()
