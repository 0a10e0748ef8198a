"""Run the s3torch benchmarks: ``uv run --group bench python tools/bench/run.py --help``."""

from s3bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
