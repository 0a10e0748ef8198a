"""Client configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import Literal, get_args

__all__ = ["ChecksumAlgorithm", "S3ClientConfig"]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MIN_MEMORY_LIMIT = 256 * MiB  # awscrt refuses anything smaller
MAX_ATTEMPTS_CEILING = 100
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: anything longer is a mistake (ms overflow, units)

ChecksumAlgorithm = Literal["CRC64NVME", "CRC32C", "CRC32"]
CHECKSUM_ALGORITHMS: tuple[str, ...] = get_args(ChecksumAlgorithm)


@dataclass(frozen=True)
class S3ClientConfig:
    """Settings of an :class:`~s3torch.client.S3Client`.

    Every field is validated when the config is built; a bad value raises
    :class:`ValueError` (or :class:`TypeError` for a wrong type) naming the field
    and what it accepts.

    The first seven fields may also be given positionally, in the order of
    s3torchconnector's ``S3ClientConfig`` (``throughput_target_gbps``,
    ``part_size``, ``unsigned``, ``force_path_style``, ``max_attempts``,
    ``profile``, ``requester_pays``); the others are keyword-only.

    Attributes:
        throughput_target_gbps: Throughput the client aims for, in gigabits per
            second. It sizes the connection pool (about one connection per
            0.4 Gbps, at least 10) and how far a download reads ahead.
        part_size: Size of one upload part and of one ranged GET, in bytes
            (5 MiB to 5 GiB). Objects no larger than this are uploaded with a
            single PUT.
        unsigned: Send anonymous (unsigned) requests, for public buckets.
        force_path_style: Address buckets as ``endpoint/bucket/key`` instead of
            ``bucket.endpoint/key``. Endpoints given as an IP address or
            ``localhost`` always use path style.
        max_attempts: Attempts per request, first try included (``1`` disables
            retries). Throttling, 5xx and connection failures are retried with
            exponential backoff; other 4xx errors never are.
        profile: Named profile from the shared AWS config/credentials files.
            ``None`` uses the default credential chain (environment variables,
            ``AWS_PROFILE``, shared files, container and instance metadata).
        requester_pays: Accept the charges of a requester-pays bucket.
        memory_limit: Bytes the client may hold in flight or buffered for
            downloads and uploads together (at least 256 MiB, the CRT's minimum,
            and at least two parts).
        checksum_algorithm: Checksum sent with every upload, so the server
            rejects a corrupted body, and used to validate downloads against the
            server's full-object checksum. ``None`` turns both off.
        stall_timeout: Seconds a request may go without progress, per 4 MiB it
            has to move (at least one period), before it is cancelled: sent once
            more on a fresh connection, then failed with
            :class:`~s3torch.client.S3TimeoutError`. Progress is a response
            arriving on this client (awscrt hands over a response whole, so
            nothing finer is seen); a request waiting behind others that are
            progressing is not stalled, but one that requests sent after it
            keep overtaking is. ``None`` turns it off.
        request_timeout: Seconds one request may take in all, queueing,
            retries and re-sends included, before it fails with
            :class:`~s3torch.client.S3TimeoutError`. ``None`` (the default):
            no limit, since how long a healthy request takes grows with the
            part size, the load and the link, and ``stall_timeout`` already
            ends requests that stop moving.
        connect_timeout: Seconds to establish a connection (awscrt's
            ``connect_timeout_ms``); a connection that times out is retried
            like any connection failure.
        enable_s3express: Treat buckets named ``<base>--<zone-id>--x-s3`` as
            S3 Express One Zone directory buckets (awscrt's
            ``enable_s3express``): their zonal endpoint, session signing, a
            CRC32 upload checksum in place of CRC64NVME, serial listing (see
            :mod:`s3torch.client.express`). On by default, as in
            s3torchconnector; ``False`` treats such names as any other
            bucket (an S3-compatible server's bucket that happens to be
            named so).
    """

    throughput_target_gbps: float = 10.0
    part_size: int = 8 * MiB
    unsigned: bool = False
    force_path_style: bool = False
    max_attempts: int = 10
    profile: str | None = None
    requester_pays: bool = False
    _: KW_ONLY
    memory_limit: int = 1 * GiB
    checksum_algorithm: ChecksumAlgorithm | None = "CRC64NVME"
    stall_timeout: float | None = 10.0
    request_timeout: float | None = None
    connect_timeout: float = 5.0
    enable_s3express: bool = True

    def __post_init__(self) -> None:
        _require_number("throughput_target_gbps", self.throughput_target_gbps)
        if not (math.isfinite(self.throughput_target_gbps) and self.throughput_target_gbps > 0):
            raise ValueError(
                "S3ClientConfig.throughput_target_gbps must be a finite number > 0, "
                f"got {self.throughput_target_gbps!r}"
            )
        _require_int("part_size", self.part_size)
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"S3ClientConfig.part_size must be between {MIN_PART_SIZE} (5 MiB) and "
                f"{MAX_PART_SIZE} (5 GiB) bytes, got {self.part_size!r}"
            )
        for name in ("unsigned", "force_path_style", "requester_pays", "enable_s3express"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"S3ClientConfig.{name} must be a bool, got {getattr(self, name)!r}"
                )
        _require_int("max_attempts", self.max_attempts)
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CEILING:
            raise ValueError(
                f"S3ClientConfig.max_attempts must be between 1 and {MAX_ATTEMPTS_CEILING}, "
                f"got {self.max_attempts!r}"
            )
        if self.profile is not None and (
            not isinstance(self.profile, str) or not self.profile.strip()
        ):
            raise ValueError(
                f"S3ClientConfig.profile must be a non-empty string or None, got {self.profile!r}"
            )
        if self.unsigned and self.profile is not None:
            raise ValueError(
                "S3ClientConfig.profile cannot be combined with unsigned=True "
                "(unsigned requests use no credentials)"
            )
        if self.unsigned and self.requester_pays:
            raise ValueError(
                "S3ClientConfig.requester_pays cannot be combined with unsigned=True "
                "(S3 bills requester-pays requests to a signed identity)"
            )
        _require_int("memory_limit", self.memory_limit)
        if self.memory_limit < MIN_MEMORY_LIMIT:
            raise ValueError(
                f"S3ClientConfig.memory_limit must be at least {MIN_MEMORY_LIMIT} bytes "
                f"(256 MiB), got {self.memory_limit!r}"
            )
        if self.memory_limit < 2 * self.part_size:
            raise ValueError(
                "S3ClientConfig.memory_limit must hold at least two parts "
                f"(2 * part_size = {2 * self.part_size}), got {self.memory_limit!r}"
            )
        if self.checksum_algorithm is not None and self.checksum_algorithm not in (
            CHECKSUM_ALGORITHMS
        ):
            raise ValueError(
                "S3ClientConfig.checksum_algorithm must be one of "
                f"{', '.join(CHECKSUM_ALGORITHMS)} or None, got {self.checksum_algorithm!r}"
            )
        _require_seconds("stall_timeout", self.stall_timeout, optional=True)
        _require_seconds("request_timeout", self.request_timeout, optional=True)
        _require_seconds("connect_timeout", self.connect_timeout, optional=False)

    @property
    def max_connections(self) -> int:
        """Connections the CRT opens at most (its own rule: one per 0.4 Gbps, at least 10)."""
        return max(10, math.ceil(self.throughput_target_gbps / 0.4))

    @property
    def readahead_parts(self) -> int:
        """Ranged GETs one download keeps in flight or buffered ahead of its reader."""
        by_memory = self.memory_limit // (4 * self.part_size)
        return max(2, min(by_memory, self.max_connections // 2, 16))

    @property
    def upload_parts_in_flight(self) -> int:
        """Parts one upload keeps in flight before ``write`` waits."""
        by_memory = self.memory_limit // (4 * self.part_size)
        return max(2, min(by_memory, self.max_connections // 2, 16))


def _require_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"S3ClientConfig.{name} must be an int, got {value!r}")


def _require_seconds(name: str, value: object, *, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        allowed = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(f"S3ClientConfig.{name} must be {allowed}, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise ValueError(
            f"S3ClientConfig.{name} must be a number of seconds > 0 and at most "
            f"{MAX_TIMEOUT:.0f} (a week){' or None' if optional else ''}, got {value!r}"
        )


def _require_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"S3ClientConfig.{name} must be a number, got {value!r}")
