"""An atomic-overwrite DCP save that test_atomic_overwrite SIGKILLs at a chosen moment.

Run as a script (not collected): ``kill_job.py MOMENT ENDPOINT URI``. It saves
:func:`state` with ``fill=2.0`` to ``URI`` with ``atomic_overwrite=True``, one
file per item, one file at a time. At ``MOMENT`` it prints ``AT <moment>``
(flushed) and waits for the test's SIGKILL:

- ``files``: after two of the four data files are complete;
- ``metadata``: every data file complete, before ``.metadata`` is written;
- ``cleanup``: after ``.metadata`` is written, before the replaced files are deleted;
- ``none``: never (the save completes and the script prints ``DONE``).
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from s3torch.dcp import S3StorageWriter, storage_writer

REGION = "us-east-1"


def state(fill: float) -> dict[str, torch.Tensor]:
    """Four tensors of 256 KiB, each in its own file, every value ``fill``."""
    return {f"layer{i}": torch.full((64 * 1024,), fill + i) for i in range(4)}


def pause(moment: str) -> None:
    print(f"AT {moment}", flush=True)
    time.sleep(120)  # the test kills us well before this ends
    sys.exit(3)


def main() -> None:
    moment, endpoint, uri = sys.argv[1:4]
    warnings.filterwarnings("ignore")
    if moment == "files":
        completed: list[Any] = []
        original = storage_writer.FileJob

        class PausingJob(original):  # type: ignore[misc, valid-type]
            def __call__(self, stop: Any) -> Any:
                results = super().__call__(stop)
                completed.append(self)
                if len(completed) == 2:
                    pause(moment)
                return results

        storage_writer.FileJob = PausingJob  # type: ignore[misc]
    elif moment == "metadata":
        finish = S3StorageWriter.finish

        def paused_finish(self: S3StorageWriter, *args: Any, **kwargs: Any) -> None:
            pause(moment)
            finish(self, *args, **kwargs)

        S3StorageWriter.finish = paused_finish  # type: ignore[method-assign]
    elif moment == "cleanup":
        S3StorageWriter._remove_replaced = lambda self, metadata: pause(moment)  # type: ignore[method-assign]
    writer = S3StorageWriter(
        REGION,
        uri,
        endpoint=endpoint,
        thread_count=1,
        single_file_per_rank=False,
        atomic_overwrite=True,
    )
    dcp.save(state(2.0), storage_writer=writer)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
