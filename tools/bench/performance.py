"""Write docs/performance.md and its plots: see ``performance.py --help``."""

from s3bench.perf_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
