"""require_int: the one way every package refuses a bad integer setting."""

from __future__ import annotations

import re

import pytest

from s3torch.client import require_int


@pytest.mark.parametrize(
    ("value", "minimum", "optional"),
    [(0, 0, False), (7, 1, False), (1, 1, True), (None, 1, True), (2**70, 0, False)],
)
def test_accepts_an_int_in_range_and_none_when_optional(
    value: int | None, minimum: int, optional: bool
) -> None:
    assert require_int("count", value, minimum=minimum, optional=optional) is None


@pytest.mark.parametrize(
    ("value", "minimum", "optional", "message"),
    [
        (-1, 0, False, "count must be an int >= 0, got -1"),
        (0, 1, False, "count must be an int >= 1, got 0"),
        (0, 1, True, "count must be None or an int >= 1, got 0"),
        (None, 0, False, "count must be an int >= 0, got None"),
        (True, 0, False, "count must be an int >= 0, got True"),
        (False, 0, True, "count must be None or an int >= 0, got False"),
        (1.0, 0, False, "count must be an int >= 0, got 1.0"),
        ("3", 0, False, "count must be an int >= 0, got '3'"),
    ],
)
def test_refuses_anything_else_naming_the_setting_and_the_value(
    value: object, minimum: int, optional: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        require_int("count", value, minimum=minimum, optional=optional)
