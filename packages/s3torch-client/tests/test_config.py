"""S3ClientConfig: the seed's fields and defaults, validated at construction."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from s3torch.client import S3ClientConfig

MiB = 1024**2
GiB = 1024**3


def test_defaults_follow_the_seed() -> None:
    config = S3ClientConfig()
    assert config.throughput_target_gbps == 10.0
    assert config.part_size == 8 * MiB
    assert config.unsigned is False
    assert config.force_path_style is False
    assert config.max_attempts == 10
    assert config.profile is None
    assert config.requester_pays is False
    assert config.memory_limit == 1 * GiB
    assert config.checksum_algorithm == "CRC64NVME"
    assert config.stall_timeout == 10.0
    assert config.request_timeout is None
    assert config.connect_timeout == 5.0


def test_is_frozen() -> None:
    config = S3ClientConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.part_size = 16 * MiB  # type: ignore[misc]


def test_takes_the_seven_seed_fields_positionally_in_the_seeds_order() -> None:
    positional = S3ClientConfig(2.5, 16 * MiB, False, True, 3, "train", True)
    by_keyword = S3ClientConfig(
        throughput_target_gbps=2.5,
        part_size=16 * MiB,
        unsigned=False,
        force_path_style=True,
        max_attempts=3,
        profile="train",
        requester_pays=True,
    )
    assert positional == by_keyword
    assert (
        positional.throughput_target_gbps,
        positional.part_size,
        positional.unsigned,
        positional.force_path_style,
        positional.max_attempts,
        positional.profile,
        positional.requester_pays,
    ) == (2.5, 16 * MiB, False, True, 3, "train", True)
    # A prefix of them, with the rest by keyword, as s3torchconnector users write it.
    assert S3ClientConfig(1.0, 32 * MiB, memory_limit=512 * MiB) == S3ClientConfig(
        throughput_target_gbps=1.0, part_size=32 * MiB, memory_limit=512 * MiB
    )
    # Validation names the field whichever way it was given.
    with pytest.raises(ValueError, match=r"S3ClientConfig\.part_size"):
        S3ClientConfig(10.0, 1024)
    with pytest.raises(TypeError, match=r"S3ClientConfig\.unsigned must be a bool"):
        S3ClientConfig(10.0, 8 * MiB, "yes")  # type: ignore[arg-type]


def test_the_fields_beyond_the_seeds_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        S3ClientConfig(10.0, 8 * MiB, False, False, 10, None, False, GiB)  # type: ignore[misc]
    assert S3ClientConfig(checksum_algorithm=None, memory_limit=GiB).checksum_algorithm is None
    limits = S3ClientConfig(stall_timeout=None, request_timeout=600, connect_timeout=0.25)
    assert (limits.stall_timeout, limits.request_timeout, limits.connect_timeout) == (
        None,
        600,
        0.25,
    )


def test_compares_hashes_and_pickles_by_value() -> None:
    a = S3ClientConfig(part_size=16 * MiB, profile="train")
    b = S3ClientConfig(part_size=16 * MiB, profile="train")
    assert a == b
    assert hash(a) == hash(b)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != S3ClientConfig(part_size=32 * MiB, profile="train")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("throughput_target_gbps", 0, "throughput_target_gbps must be a finite number > 0"),
        ("throughput_target_gbps", -1.5, "throughput_target_gbps must be a finite number > 0"),
        ("throughput_target_gbps", float("inf"), "throughput_target_gbps must be a finite"),
        ("throughput_target_gbps", float("nan"), "throughput_target_gbps must be a finite"),
        ("part_size", 5 * MiB - 1, "part_size must be between 5242880 (5 MiB) and"),
        ("part_size", 5 * GiB + 1, "part_size must be between 5242880 (5 MiB) and 5368709120"),
        ("max_attempts", 0, "max_attempts must be between 1 and 100"),
        ("max_attempts", 101, "max_attempts must be between 1 and 100"),
        ("profile", "", "profile must be a non-empty string or None"),
        ("profile", "   ", "profile must be a non-empty string or None"),
        ("memory_limit", 255 * MiB, "memory_limit must be at least 268435456 bytes (256 MiB)"),
        ("checksum_algorithm", "MD5", "checksum_algorithm must be one of CRC64NVME, CRC32C, CRC32"),
        ("checksum_algorithm", "crc64nvme", "checksum_algorithm must be one of"),
        ("stall_timeout", 0, "stall_timeout must be a number of seconds > 0"),
        ("stall_timeout", -1.0, "stall_timeout must be a number of seconds > 0"),
        ("stall_timeout", float("nan"), "stall_timeout must be a number of seconds > 0"),
        ("request_timeout", float("inf"), "request_timeout must be a number of seconds > 0"),
        ("request_timeout", 8 * 24 * 3600, "request_timeout must be a number of seconds > 0"),
        ("connect_timeout", 0.0, "connect_timeout must be a number of seconds > 0"),
    ],
)
def test_rejects_out_of_range_values_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(
        ValueError, match="S3ClientConfig\\." + message.replace("(", "\\(").replace(")", "\\)")
    ):
        S3ClientConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("part_size", 8.0 * MiB),
        ("part_size", "8MiB"),
        ("part_size", True),
        ("max_attempts", 2.5),
        ("memory_limit", None),
        ("throughput_target_gbps", "10"),
        ("throughput_target_gbps", True),
        ("unsigned", 1),
        ("force_path_style", "yes"),
        ("requester_pays", None),
        ("stall_timeout", "10"),
        ("stall_timeout", True),
        ("request_timeout", "1m"),
        ("connect_timeout", None),
    ],
)
def test_rejects_wrong_types_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"S3ClientConfig.{field} must be"):
        S3ClientConfig(**{field: value})  # type: ignore[arg-type]


def test_accepts_the_bounds() -> None:
    assert S3ClientConfig(part_size=5 * MiB).part_size == 5 * MiB
    assert S3ClientConfig(part_size=5 * GiB, memory_limit=10 * GiB).part_size == 5 * GiB
    assert S3ClientConfig(max_attempts=1).max_attempts == 1
    assert S3ClientConfig(memory_limit=256 * MiB).memory_limit == 256 * MiB
    assert S3ClientConfig(throughput_target_gbps=1).throughput_target_gbps == 1
    assert S3ClientConfig(checksum_algorithm=None).checksum_algorithm is None
    assert S3ClientConfig(checksum_algorithm="CRC32C").checksum_algorithm == "CRC32C"


def test_memory_limit_must_hold_two_parts() -> None:
    with pytest.raises(ValueError, match="memory_limit must hold at least two parts"):
        S3ClientConfig(part_size=200 * MiB, memory_limit=256 * MiB)


def test_unsigned_excludes_credentials_and_requester_pays() -> None:
    with pytest.raises(ValueError, match="profile cannot be combined with unsigned=True"):
        S3ClientConfig(unsigned=True, profile="train")
    with pytest.raises(ValueError, match="requester_pays cannot be combined with unsigned=True"):
        S3ClientConfig(unsigned=True, requester_pays=True)


def test_derived_concurrency_grows_with_throughput_and_stays_in_budget() -> None:
    small = S3ClientConfig(throughput_target_gbps=1.0)
    default = S3ClientConfig()
    large = S3ClientConfig(throughput_target_gbps=100.0, memory_limit=8 * GiB)
    assert small.max_connections == 10
    assert default.max_connections == 25
    assert large.max_connections == 250
    assert small.readahead_parts <= default.readahead_parts <= large.readahead_parts
    tight = S3ClientConfig(memory_limit=256 * MiB, part_size=64 * MiB)
    assert tight.readahead_parts * tight.part_size <= tight.memory_limit
    assert tight.upload_parts_in_flight * tight.part_size <= tight.memory_limit
