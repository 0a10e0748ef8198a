"""One benchmark worker process; started by ``run.py``, not meant to be run by hand."""

from s3bench.worker import main

if __name__ == "__main__":
    raise SystemExit(main())
