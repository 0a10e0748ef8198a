"""Which client an :class:`~s3torch.lightning.S3FsspecFileSystem` made without one uses.

The client of the most recent :class:`~s3torch.lightning.S3LightningCheckpoint`
(bound here with :func:`use_client`), so that Lightning's ``s3://`` directory
operations go to the plugin's endpoint with its credentials; else one made
from the environment (``AWS_REGION``, else ``us-east-1``; ``AWS_ENDPOINT_URL``
is honoured by the client).
"""

from __future__ import annotations

import os
import threading

from s3torch.client import S3Client

__all__ = ["current_client", "use_client"]

_bound_lock = threading.Lock()
_bound_client: S3Client | None = None
_default_client: S3Client | None = None


def use_client(client: S3Client | None) -> None:
    """Make ``client`` the one every :class:`S3FsspecFileSystem` made without a client uses.

    :class:`~s3torch.lightning.S3LightningCheckpoint` calls this with its own
    client when it is made; ``None`` goes back to a client from the environment.
    """
    global _bound_client
    if client is not None and not isinstance(client, S3Client):
        raise TypeError(f"client must be an s3torch.client.S3Client, got {client!r}")
    with _bound_lock:
        _bound_client = client


def current_client() -> S3Client:
    """The bound client, else the one made from the environment (made once)."""
    global _default_client
    with _bound_lock:
        if _bound_client is not None:
            return _bound_client
        if _default_client is None:
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            _default_client = S3Client(region or "us-east-1")
        return _default_client
