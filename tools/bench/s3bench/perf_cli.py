"""``performance.py``: measure the sweeps, write the results JSON, render the page and plots.

``--render-only JSON`` re-renders a page from a results file without
measuring; otherwise one SeaweedFS server is started for the whole run
(:func:`s3bench.server.s3_server`) and each latency is a relay put in
front of it in turn.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from locals3.pytest_plugin import isolate_aws_environment

from .machine import load_average, machine_info
from .perf_page import render_page
from .perf_plan import SWEEPS, Plan, make_plan
from .perf_plots import plot_all
from .perf_run import run_plan
from .server import SERVERS, s3_server

log = logging.getLogger("s3bench")

REPO_ROOT = Path(__file__).resolve().parents[3]
PAGE = REPO_ROOT / "docs" / "performance.md"
IMAGES = REPO_ROOT / "docs" / "images" / "performance"


def _latencies(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--latency-ms: {error}") from error
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"--latency-ms needs values >= 0, got {text!r}")
    return values


def _sweeps(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SWEEPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown sweep {', '.join(unknown) or '(none given)'}; choose from {', '.join(SWEEPS)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    """The command line of ``tools/bench/performance.py``."""
    result = argparse.ArgumentParser(
        prog="performance.py",
        description="Measure s3torch against s3torchconnector, boto3 and obstore over object "
        "sizes, DataLoader workers and checkpoint sizes, at each added latency, and write "
        "docs/performance.md with its PNG plots.",
    )
    result.add_argument(
        "--latency-ms",
        type=_latencies,
        default=[0.0, 10.0],
        help="comma-separated added response latencies, each a full pass (default 0,10)",
    )
    result.add_argument(
        "--sweeps",
        type=_sweeps,
        default=SWEEPS,
        help=f"comma-separated subset of {','.join(SWEEPS)}",
    )
    result.add_argument("--repeat", type=int, help="timed repetitions per point (default 2)")
    result.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small sizes (objects up to 16 MiB, state dicts of 16 and 64 MiB), "
        "0 and 2 DataLoader workers, 1 repetition",
    )
    result.add_argument(
        "--server", choices=sorted(SERVERS), default="seaweedfs", help="server to start"
    )
    result.add_argument(
        "--json", type=Path, help="results file (default bench-results/perf-<time>.json)"
    )
    result.add_argument(
        "--render-only",
        type=Path,
        metavar="JSON",
        help="measure nothing: render the page and plots from this results file",
    )
    result.add_argument("--page", type=Path, default=PAGE, help=f"page to write (default {PAGE})")
    result.add_argument(
        "--images", type=Path, default=IMAGES, help=f"folder of the PNGs (default {IMAGES})"
    )
    result.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return result


def render(document: dict[str, Any], page: Path, images: Path) -> None:
    """Write the plots into ``images`` and the page to ``page``."""
    written = plot_all(document["records"], document["latencies"], images)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_page(document, written, page))
    log.info("wrote %s and %d plots", page, len(written))


def _plan_facts(plan: Plan) -> dict[str, Any]:
    facts = dataclasses.asdict(plan)
    del facts["groups"]
    return facts


def measure(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the sweeps; the results document the page is rendered from."""
    if args.repeat is not None and args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    plan = make_plan(quick=args.quick, repeat=args.repeat, sweeps=args.sweeps)
    isolate_aws_environment()  # fake credentials, no metadata lookups; children inherit it
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine = machine_info()
    with s3_server(args.server, None) as server:
        records, failures = run_plan(server, plan, args.latency_ms, args.log_level)
    return {
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "arguments": argv,
        "machine": machine,
        "load_average_at_end": load_average(),
        "server": dataclasses.asdict(server),
        "latencies": args.latency_ms,
        "plan": _plan_facts(plan),
        "records": records,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(arguments)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s [performance] %(levelname)s %(message)s",
    )
    if args.render_only is not None:
        document = json.loads(args.render_only.read_text())
    else:
        # A plain `kill` must still stop the server and remove the bucket.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        document = measure(args, arguments)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = args.json or REPO_ROOT / "bench-results" / f"perf-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1))
        log.info("wrote %s", path)
    render(document, args.page, args.images)
    return 1 if document.get("failures") else 0
