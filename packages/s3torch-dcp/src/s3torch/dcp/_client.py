"""The S3 client a DCP object uses: one it was given (left open) or one it made (closed by it)."""

from __future__ import annotations

from s3torch.client import S3Client, S3ClientConfig, check_shared_client

from ._version import __version__

__all__ = ["resolve_client"]


def resolve_client(
    region: str,
    *,
    endpoint: str | None,
    s3client_config: S3ClientConfig | None,
    client: S3Client | None,
    reader_type: str,
) -> tuple[S3Client, bool]:
    """``(client, owned)``: ``client`` itself (not owned), or a new one for the settings.

    Raises:
        TypeError: ``client`` is not an :class:`~s3torch.client.S3Client`.
        ValueError: ``client`` combined with ``endpoint`` or ``s3client_config``
            (the client already has its own), or a ``client`` for another region.
    """
    if client is None:
        made = S3Client(
            region,
            endpoint=endpoint,
            s3client_config=s3client_config,
            user_agent=f"dcp/{__version__} md/reader_type#{reader_type}",
        )
        return made, True
    check_shared_client(client, region=region, endpoint=endpoint, s3client_config=s3client_config)
    return client, False
