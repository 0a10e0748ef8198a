"""s3bench: the s3torch benchmark harness (dev-only, never published).

``tools/bench/run.py`` runs every (client, case) pair in its own worker
process (``tools/bench/worker.py``) against a local S3 server and prints a
table comparing s3torch with s3torchconnector, boto3 and obstore. See
``docs/benchmarks.md``.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
