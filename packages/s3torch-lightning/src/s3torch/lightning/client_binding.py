"""Which client an :class:`~s3torch.lightning.S3FsspecFileSystem` made without one uses.

The client of the most recent :class:`~s3torch.lightning.S3LightningCheckpoint`
(so that Lightning's ``s3://`` directory operations go to the plugin's endpoint
with its credentials, in every process the plugin is unpickled in too), or the
one given to :func:`use_client`; else one made from the environment
(``AWS_REGION``, else ``us-east-1``; ``AWS_ENDPOINT_URL`` is honoured by the
client).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from s3torch.client import S3Client

__all__ = ["bind_client_source", "current_client", "use_client"]

_bound_lock = threading.Lock()
_bound_source: Callable[[], S3Client] | None = None
_default_client: S3Client | None = None


def use_client(client: S3Client | None) -> None:
    """Make ``client`` the one every :class:`S3FsspecFileSystem` made without a client uses.

    ``None`` goes back to a client from the environment. (Making an
    :class:`~s3torch.lightning.S3LightningCheckpoint` binds its client the
    same way, until another plugin or this function binds another one.)
    """
    if client is not None and not isinstance(client, S3Client):
        raise TypeError(f"client must be an s3torch.client.S3Client, got {client!r}")
    bind_client_source(None if client is None else lambda: client)


def bind_client_source(source: Callable[[], S3Client] | None) -> None:
    """Bind a callable that gives the client to use at each call (a plugin's ``client``).

    A source, rather than a client, lets the plugin close its client at
    ``teardown`` and make a new one on next use without rebinding.
    """
    global _bound_source
    with _bound_lock:
        _bound_source = source


def current_client() -> S3Client:
    """The bound client, else the one made from the environment (made once)."""
    global _default_client
    with _bound_lock:
        source = _bound_source
        if source is None:
            if _default_client is None:
                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                _default_client = S3Client(region or "us-east-1")
            return _default_client
    return source()
