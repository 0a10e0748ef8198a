"""Sharing one :class:`S3Client` between the objects built on it.

Datasets, checkpointers and DCP storage each take either the settings of a
client (``region``, ``endpoint``, ``s3client_config``) or an existing
``client`` to share: one connection pool and one memory budget for all of
them. :func:`check_shared_client` is the one rule they all apply to what they
were given, so every layer refuses the same mistakes with the same words.
"""

from __future__ import annotations

from .client import S3Client
from .config import S3ClientConfig

__all__ = ["check_shared_client"]


def check_shared_client(
    client: S3Client | None,
    *,
    region: str,
    endpoint: str | None = None,
    s3client_config: S3ClientConfig | None = None,
) -> None:
    """Refuse a shared ``client`` that does not fit the other arguments.

    Nothing is checked when ``client`` is None (the caller makes its own).

    Raises:
        TypeError: ``client`` is not an :class:`S3Client`.
        ValueError: ``endpoint`` or ``s3client_config`` given as well (the
            client already has both, and they would be silently ignored), or
            a client for another region than ``region``.
    """
    if client is None:
        return
    if not isinstance(client, S3Client):
        raise TypeError(f"client must be an S3Client or None, got {type(client).__name__}")
    if endpoint is not None or s3client_config is not None:
        raise ValueError(
            "pass either client or endpoint/s3client_config, not both: the client "
            f"given ({client!r}) already has its endpoint and configuration"
        )
    if client.region != region:
        raise ValueError(f"region is {region!r} but the client given is for {client.region!r}")
