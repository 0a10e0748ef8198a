"""S3CheckpointError crosses processes whole (torch gathers rank failures by pickling them)."""

from __future__ import annotations

import pickle
import threading

from s3torch.dcp import S3CheckpointError


def _raised(cause: BaseException) -> S3CheckpointError:
    try:
        raise S3CheckpointError("rank 1 could not load s3://b/k", rank=1, uri="s3://b/k") from cause
    except S3CheckpointError as error:
        return error


def test_a_pickled_error_keeps_its_rank_uri_message_and_cause() -> None:
    copy = pickle.loads(pickle.dumps(_raised(ValueError("item 'embedding' is damaged"))))
    assert (type(copy), str(copy), copy.rank, copy.uri) == (
        S3CheckpointError,
        "rank 1 could not load s3://b/k",
        1,
        "s3://b/k",
    )
    assert isinstance(copy.__cause__, ValueError)
    assert str(copy.__cause__) == "item 'embedding' is damaged"


class _UnpicklableError(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def test_a_cause_that_cannot_be_pickled_is_left_out_not_fatal() -> None:
    copy = pickle.loads(pickle.dumps(_raised(_UnpicklableError())))
    assert (str(copy), copy.rank, copy.__cause__) == ("rank 1 could not load s3://b/k", 1, None)
