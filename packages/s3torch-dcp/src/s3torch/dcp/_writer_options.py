"""The options of S3StorageWriter that torch's FileSystemWriter takes, and its client's settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from s3torch.client import S3Client, S3ClientConfig

__all__ = ["SAVE_MEMORY_LIMIT", "check_torch_options", "save_config"]

SAVE_MEMORY_LIMIT = 256 * 1024 * 1024
"""The memory budget of the client a writer makes when given no settings.

A save is bound by the server's PUT rate, not by parts in flight: 256 MiB
(the least the CRT takes) keeps 32 parts of 8 MiB in flight over the
``thread_count`` files, where the client's 1 GiB default let a 1 GiB save's
peak RSS grow by over a GiB.
"""


def check_torch_options(kwargs: dict[str, Any], accepted: Mapping[str, Any]) -> None:
    """Refuse keyword options torch's ``FileSystemWriter`` does not take, or that we cannot honour.

    Raises:
        TypeError: a name the installed torch's ``FileSystemWriter`` does not take.
        ValueError: a ``serialization_format`` other than ``TORCH_SAVE``.
    """
    unknown = sorted(name for name in kwargs if name not in accepted)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(
            f"S3StorageWriter got unexpected keyword argument(s) {names}: neither it nor "
            f"torch {torch.__version__}'s FileSystemWriter takes them"
        )
    form = kwargs.get("serialization_format")
    if form is not None and getattr(form, "name", form) != "TORCH_SAVE":
        raise ValueError(
            f"S3StorageWriter writes items with torch.save only: serialization_format={form!r} "
            "is not supported"
        )


def save_config(config: S3ClientConfig | None, client: S3Client | None) -> S3ClientConfig | None:
    """The settings of the client a writer makes: ``config``, or the save's defaults."""
    if config is not None or client is not None:
        return config
    return S3ClientConfig(memory_limit=SAVE_MEMORY_LIMIT)
