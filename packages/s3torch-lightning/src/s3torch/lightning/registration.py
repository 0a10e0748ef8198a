"""Registering :class:`~s3torch.lightning.S3FsspecFileSystem` for ``s3://`` in fsspec.

Without s3fs, nothing else can serve ``s3://``: importing ``s3torch.lightning``
registers it. With s3fs installed, s3fs keeps ``s3://`` unless you ask
(``override=True``).
"""

from __future__ import annotations

import logging

import fsspec

from .filesystem import PROTOCOLS, S3FsspecFileSystem

__all__ = ["register_s3_filesystem"]

log = logging.getLogger(__name__)


def register_s3_filesystem(*, override: bool = False) -> bool:
    """Register :class:`S3FsspecFileSystem` for ``s3://`` and ``s3a://`` in fsspec.

    Args:
        override: Replace an installed s3fs (or any other implementation) for
            the whole process. Without it, the registration happens only where
            nothing else can serve ``s3://``.

    Returns:
        Whether ``s3://`` is now served by :class:`S3FsspecFileSystem`.
    """
    for protocol in PROTOCOLS:
        current = fsspec.registry.get(protocol)
        if current is S3FsspecFileSystem:
            continue
        if not override and (current is not None or _importable_elsewhere(protocol)):
            continue
        fsspec.register_implementation(protocol, S3FsspecFileSystem, clobber=True)
        log.debug("fsspec: %s:// is served by s3torch", protocol)
    return fsspec.registry.get("s3") is S3FsspecFileSystem


def _importable_elsewhere(protocol: str) -> bool:
    """Whether fsspec knows another implementation of ``protocol`` that can be imported."""
    from fsspec.registry import known_implementations

    known = known_implementations.get(protocol)
    if known is None:
        return False
    module = str(known["class"]).rsplit(".", 1)[0]
    try:
        from importlib.util import find_spec

        return find_spec(module.split(".", 1)[0]) is not None
    except (ImportError, ValueError):
        return False
