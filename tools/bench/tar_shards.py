"""Tar-shard benchmark: ``uv run --group bench python tools/bench/tar_shards.py --help``."""

from s3bench.tar_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
