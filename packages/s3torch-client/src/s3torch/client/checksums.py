"""The CRCs S3 stores, for code that sums downloaded bytes itself.

A download split across processes (the ranks of a job, each fetching a share
of one object) cannot be validated by one response: each process sums its
bytes with the algorithm of the checksum the server stored
(:meth:`S3Client.head_object_checksum`), and the sums combine, in order, into
the whole object's CRC, which is compared with the stored ``FULL_OBJECT``
value.

>>> crc = crc_for("CRC64NVME")
>>> first, second = crc.of(b"hello "), crc.of(b"world")
>>> crc.encode(crc.combine(first, second, 5)) == crc.encode(crc.of(b"hello world"))
True
"""

from __future__ import annotations

from ._checksums import ALGORITHMS, Crc

__all__ = ["Crc", "crc_for"]


def crc_for(algorithm: str) -> Crc | None:
    """The CRC named ``algorithm`` as S3 names it (``"CRC64NVME"``, ``"CRC32C"``, ``"CRC32"``).

    ``None`` for an algorithm whose sums do not combine (``"SHA1"``,
    ``"SHA256"``) or that S3 does not know.

    The :class:`Crc` has ``of(data)``, ``update(data, crc)``,
    ``combine(first, second, second_length)`` (the CRC of ``a + b`` from the
    CRCs of ``a`` and ``b`` and the length of ``b``) and ``encode(crc)`` (the
    base64 form S3 returns).
    """
    return ALGORITHMS.get(algorithm)
