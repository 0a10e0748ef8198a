"""Job-scale benchmark: ``uv run --group bench python tools/bench/job_scale.py --help``."""

from s3bench.job_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
