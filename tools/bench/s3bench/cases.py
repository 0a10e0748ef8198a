"""Every benchmark case, by name, in table order.

The cases live in modules of their own (:mod:`s3bench.data_cases`,
:mod:`s3bench.checkpoint_cases`, :mod:`s3bench.dcp_cases`,
:mod:`s3bench.lightning_cases`), each built on :mod:`s3bench.case`; this
module only gathers them, and none of them imports it.
"""

from __future__ import annotations

from .case import Case
from .checkpoint_cases import CHECKPOINT_CASES
from .data_cases import DATA_CASES
from .dcp_cases import DCP_CASES
from .lightning_cases import LIGHTNING_CASES

__all__ = ["CASES"]

CASES: dict[str, type[Case]] = {**DATA_CASES, **CHECKPOINT_CASES, **DCP_CASES, **LIGHTNING_CASES}
"""Every case, by name, in table order."""
