"""``python -m s3torch.datasets manifest s3://bucket/prefix s3://bucket/manifest.jsonl.gz``.

Writes a dataset manifest (see :func:`s3torch.datasets.write_manifest`),
showing progress on stderr. Exit status: 0 written; 1 failed (the message
names what, and nothing was written); 2 bad arguments; 130 interrupted
(nothing was written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from s3torch.client import S3Client, S3Exception

from ._manifest_writer import write_manifest

__all__ = ["main"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 5.0  # a progress line at most this often when stderr is not a terminal


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s3torch.datasets",
        description="Tools for s3torch datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    manifest = commands.add_parser(
        "manifest",
        help="list a prefix once and write its keys, sizes and ETags to one S3 object",
        description=(
            "List PREFIX (s3://bucket/prefix) and write the keys, sizes and ETags of its "
            "objects to MANIFEST (s3://bucket/key), a gzip-compressed JSON-lines object "
            "that S3IterableDataset.from_manifest and S3MapDataset.from_manifest read "
            "with no LIST request. Nothing is written unless the whole listing is."
        ),
    )
    manifest.add_argument("prefix", metavar="PREFIX", help="s3://bucket/prefix to list")
    manifest.add_argument("manifest", metavar="MANIFEST", help="s3://bucket/key to write")
    manifest.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        help="the buckets' region (default: $AWS_REGION, then $AWS_DEFAULT_REGION)",
    )
    manifest.add_argument("--endpoint", help="an S3-compatible endpoint URL")
    manifest.add_argument(
        "--quiet", "-q", action="store_true", help="no progress on stderr, only errors"
    )
    return parser


def _progress(stream: TextIO) -> Callable[[int], None]:
    """A progress reporter: a line rewritten in place on a terminal, else one every few seconds.

    The first page is always shown, so a pipe learns at once that the listing runs.
    """
    started = time.monotonic()
    shown = [-_PROGRESS_EVERY_S]
    tty = stream.isatty()

    def report(count: int) -> None:
        now = time.monotonic()
        if not tty and now - shown[0] < _PROGRESS_EVERY_S:  # the first page: always shown
            return
        shown[0] = now
        rate = count / max(now - started, 1e-9)
        end = "\r" if tty else "\n"
        stream.write(f"listed {count:,} objects ({rate:,.0f}/s){end}")
        stream.flush()

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    err = sys.stderr
    if not args.region:
        err.write("error: no region: pass --region, or set AWS_REGION\n")
        return 2
    try:
        with S3Client(args.region, endpoint=args.endpoint) as client:
            summary = write_manifest(
                args.prefix,
                args.manifest,
                client=client,
                progress=None if args.quiet else _progress(err),
            )
    except KeyboardInterrupt:
        err.write("\ninterrupted: no manifest was written\n")
        return 130
    except (S3Exception, ValueError) as error:
        err.write(f"\nerror: {error}\nno manifest was written\n")
        return 1
    if not args.quiet:
        err.write(
            f"\nwrote {summary.uri}: {summary.count:,} objects of {summary.prefix}, "
            f"{summary.compressed_bytes:,} bytes\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
