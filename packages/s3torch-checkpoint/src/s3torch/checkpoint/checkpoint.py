"""S3Checkpoint: ``torch.save`` into S3 and ``torch.load`` out of it."""

from __future__ import annotations

import logging

from s3torch.client import S3Client, S3ClientConfig, check_shared_client
from s3torch.readers import S3Reader, S3ReaderConstructorProtocol

from ._exchange import Group
from ._uri import parse_object_uri
from .reader import S3CheckpointReader
from .writer import S3CheckpointWriter

__all__ = ["S3Checkpoint"]

log = logging.getLogger(__name__)


class S3Checkpoint:
    """Save and load ``torch.save`` checkpoints on S3.

    ::

        checkpoint = S3Checkpoint("us-east-1")
        with checkpoint.writer("s3://my-bucket/ckpt/epoch-3.pt") as writer:
            torch.save(model.state_dict(), writer)
        with checkpoint.reader("s3://my-bucket/ckpt/epoch-3.pt") as reader:
            model.load_state_dict(torch.load(reader))

    ``region``, ``endpoint`` and ``s3client_config`` may be given by position,
    in s3torchconnector's order; the rest by keyword.

    Args:
        region: The bucket's AWS region (``"us-east-1"``).
        endpoint: Where to send requests (``"http://127.0.0.1:9000"``); default
            the AWS endpoint of ``region`` (or ``AWS_ENDPOINT_URL``).
        s3client_config: Client settings: part size, memory budget, retries,
            checksum algorithm.
        reader_constructor: The kind of reader :meth:`reader` opens, from
            :class:`~s3torch.readers.S3ReaderConstructor`. Default: an
            :class:`S3CheckpointReader`, which validates the whole checkpoint
            before ``torch.load`` reads any of it and frees memory as the load
            proceeds.
        client: An existing client to use instead of making one (one connection
            pool and memory budget shared with datasets or other
            checkpointers). It is never closed by the checkpoint; pass either
            ``client`` or ``endpoint``/``s3client_config``, not both.

    Raises:
        ValueError: a malformed region or endpoint, a ``client`` for another
            region, or ``client`` together with ``endpoint``/``s3client_config``.
        TypeError: ``client`` is not an :class:`~s3torch.client.S3Client`.
    """

    def __init__(
        self,
        region: str,
        endpoint: str | None = None,
        s3client_config: S3ClientConfig | None = None,
        *,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        client: S3Client | None = None,
    ) -> None:
        check_shared_client(
            client, region=region, endpoint=endpoint, s3client_config=s3client_config
        )
        if reader_constructor is not None and not callable(reader_constructor):
            raise TypeError(
                "reader_constructor must come from S3ReaderConstructor (or be None), "
                f"got {reader_constructor!r}"
            )
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else S3Client(region, endpoint=endpoint, s3client_config=s3client_config)
        )
        self._endpoint = endpoint
        self._reader_constructor = reader_constructor

    # ---------------------------------------------------------------- settings
    @property
    def region(self) -> str:
        """The region requests are signed for."""
        return self._client.region

    @property
    def endpoint(self) -> str | None:
        """The endpoint given, or the given client's; None means AWS's for the region."""
        return self._client.endpoint if not self._owns_client else self._endpoint

    @property
    def s3client_config(self) -> S3ClientConfig:
        """The configuration of the client in use."""
        return self._client.s3client_config

    @property
    def reader_constructor(self) -> S3ReaderConstructorProtocol | None:
        """The reader constructor given (None: :class:`S3CheckpointReader`)."""
        return self._reader_constructor

    @property
    def client(self) -> S3Client:
        """The client this checkpoint reads and writes through: the one given, or its own."""
        return self._client

    # -------------------------------------------------------------- operations
    def writer(self, s3_uri: str) -> S3CheckpointWriter:
        """A file to ``torch.save`` the checkpoint ``s3_uri`` into.

        The object appears, complete, when ``torch.save`` returns; an exception
        in between leaves no object and no open multipart upload.

        Raises:
            ValueError: ``s3_uri`` is not ``s3://bucket/key``; the message quotes it.
        """
        bucket, key = parse_object_uri(s3_uri)
        return S3CheckpointWriter(self._client.put_object(bucket, key))

    def reader(self, s3_uri: str, *, process_group: Group | None = None) -> S3Reader:
        """A seekable file to ``torch.load`` the checkpoint ``s3_uri`` from.

        Nothing is requested until the first read.

        Args:
            s3_uri: ``s3://bucket/key`` of the checkpoint.
            process_group: Every rank of this ``torch.distributed`` group
                loads the same checkpoint (a data-parallel job): the object is
                then read from S3 about once for the whole group, each rank
                fetching a share and the ranks exchanging them (gloo: CPU
                tensors; NCCL: through the current CUDA device). Every rank
                must ``torch.load`` it. ``None``: this process reads it alone.

        Raises:
            ValueError: ``s3_uri`` is not ``s3://bucket/key`` (the message
                quotes it); a ``process_group`` with a ``reader_constructor``
                (only the default reader shares a load), or before
                ``torch.distributed`` is initialized.
        """
        bucket, key = parse_object_uri(s3_uri)
        if process_group is not None and self._reader_constructor is not None:
            raise ValueError(
                f"process_group needs the default reader; this S3Checkpoint has "
                f"reader_constructor={self._reader_constructor!r} ({s3_uri})"
            )
        if self._reader_constructor is None:
            return S3CheckpointReader(self._client, bucket, key, process_group=process_group)
        return self._reader_constructor(self._client, bucket, key)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Close the client this checkpoint made (a client given is left open). Idempotent."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> S3Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"S3Checkpoint(region={self.region!r}, endpoint={self._client.endpoint!r})"
