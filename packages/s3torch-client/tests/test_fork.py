"""Fork and spawn: a client keeps working in the parent, and children get fresh ones.

Each scenario runs as a script in a fresh interpreter (spawn children import
its ``__main__``), with a timeout: a hang is a failure, not a stuck suite.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from s3torch.client import S3Client, S3ClientConfig

_PRELUDE = """
import multiprocessing, os, sys
from s3torch.client import S3Client, S3ClientConfig
ENDPOINT, BUCKET = sys.argv[1], sys.argv[2]
CLIENT = S3Client("us-east-1", endpoint=ENDPOINT, s3client_config=S3ClientConfig(max_attempts=2))

def fetch(key, client=None):
    return (client or CLIENT).get_object_stream(BUCKET, key).read()

def exit_codes(pids, seconds):
    # Wait (at most `seconds`) for the children: their exit codes, and the hung ones (killed).
    import time
    pids, codes = list(pids), {}
    deadline = time.monotonic() + seconds
    while pids and time.monotonic() < deadline:
        for pid in list(pids):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                pids.remove(pid)
        time.sleep(0.05)
    for pid in pids:                                   # hung: a deadlocked child
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return codes, pids

def exit_code(pid, seconds=60):
    codes, hung = exit_codes([pid], seconds)
    if hung:
        raise SystemExit("the forked child hung")
    return codes[pid]
"""


def _run(tmp_path: Path, body: str, s3_endpoint: str, bucket: str, timeout: float = 120) -> str:
    script = tmp_path / "scenario.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    result = subprocess.run(
        [sys.executable, str(script), s3_endpoint, bucket],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def objects(boto3_s3: Any, bucket: str) -> dict[str, bytes]:
    bodies = {f"obj{i}": f"payload {i}".encode() * 1000 for i in range(6)}
    for key, body in bodies.items():
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)
    return bodies


def test_fork_pool_workers_use_the_parents_client(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    out = _run(
        tmp_path,
        """
        def work(key):
            return os.getpid(), fetch(key)

        if __name__ == "__main__":
            before = fetch("obj0")                      # the parent's CRT client exists now
            with multiprocessing.get_context("fork").Pool(3) as pool:
                results = pool.map(work, [f"obj{i}" for i in range(6)], chunksize=1)
            assert [body for _, body in results] == [fetch(f"obj{i}") for i in range(6)]
            assert os.getpid() not in {pid for pid, _ in results}
            assert fetch("obj0") == before               # the parent still works
            print("ok", len({pid for pid, _ in results}))
    """,
        s3_endpoint,
        bucket,
    )
    assert out.startswith("ok ")


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_spawned_workers_get_the_client_by_pickle(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes], start_method: str
) -> None:
    out = _run(
        tmp_path,
        f"""
        def work(args):
            client, key = args
            return fetch(key, client)

        if __name__ == "__main__":
            fetch("obj1")
            with multiprocessing.get_context("{start_method}").Pool(2) as pool:
                results = pool.map(work, [(CLIENT, f"obj{{i}}") for i in range(4)])
            assert results == [fetch(f"obj{{i}}") for i in range(4)]
            print("ok")
    """,
        s3_endpoint,
        bucket,
    )
    assert out.strip() == "ok"


def test_a_bare_fork_child_gets_a_fresh_client_and_exits_cleanly(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    out = _run(
        tmp_path,
        """
        parent = fetch("obj4")
        stream = CLIENT.get_object_stream(BUCKET, "obj5")  # a request in flight at fork time
        pid = os.fork()
        if pid == 0:
            code = 0 if fetch("obj4") == parent else 3
            sys.stdout.flush()
            sys.exit(code)                               # a normal exit, finalizers and all
        assert exit_code(pid) == 0
        assert stream.read() == fetch("obj5")            # the parent's in-flight stream finished
        print("ok")
    """,
        s3_endpoint,
        bucket,
    )
    assert out.strip() == "ok"


def test_a_client_never_used_before_fork_works_in_the_child(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    out = _run(
        tmp_path,
        """
        if __name__ == "__main__":
            with multiprocessing.get_context("fork").Pool(2) as pool:
                assert pool.map(fetch, ["obj0", "obj1"]) == [fetch("obj0"), fetch("obj1")]
            print("ok")
    """,
        s3_endpoint,
        bucket,
    )
    assert out.strip() == "ok"


def test_pickling_a_client_carries_only_its_configuration(s3_endpoint: str) -> None:
    config = S3ClientConfig(part_size=16 * 1024 * 1024, max_attempts=3)
    client = S3Client(
        "eu-west-1", endpoint=s3_endpoint, s3client_config=config, user_agent="suffix/1"
    )
    client.list_objects("some-bucket")  # builds the CRT client
    assert client._crt is not None
    payload = pickle.dumps(client)
    assert len(payload) < 1000
    clone = pickle.loads(payload)
    assert clone._crt is None
    assert (clone.region, clone.endpoint, clone.s3client_config, clone.user_agent) == (
        client.region,
        client.endpoint,
        config,
        client.user_agent,
    )


def test_streams_and_writers_inherited_across_fork_refuse_to_be_used(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    out = _run(
        tmp_path,
        """
        import time
        stream = CLIENT.get_object_stream(BUCKET, "obj0")
        small = CLIENT.get_object_stream(  # size known: the single-GET path
            BUCKET, "obj1", object_info=CLIENT.head_object(BUCKET, "obj1")
        )
        writer = CLIENT.put_object(BUCKET, "from-parent")
        writer.write(b"parent bytes")
        listing = CLIENT.list_objects(BUCKET, max_keys=1)
        pid = os.fork()
        if pid == 0:
            messages = []
            uses = (
                stream.read, small.read, lambda: writer.write(b"x"), writer.close,
                lambda: next(listing),
            )
            for use in uses:
                try:
                    use()
                except RuntimeError as error:
                    messages.append("cannot be used in process" in str(error))
            stream.close()  # allowed, and must not touch the parent's requests
            small.close()
            listing.close()
            ended = list(listing) == []
            os._exit(0 if messages == [True] * 5 and ended else 5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        writer.close()  # the parent still owns them all
        assert stream.read() == fetch("obj0")
        assert small.read() == fetch("obj1")
        assert fetch("from-parent") == b"parent bytes"
        keys = [o.key for page in listing for o in page.objects]
        # (its first page may have been answered before or after "from-parent" was written)
        assert [key for key in keys if key != "from-parent"] == [f"obj{i}" for i in range(6)], keys
        print("ok")
        """,
        s3_endpoint,
        bucket,
    )
    assert out.strip() == "ok"


_FORK_STORM = """
import threading, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on purpose
from s3torch.client import S3Client, S3ClientConfig
expected = fetch("obj0")
LATEST = [CLIENT]
stop = threading.Event()
building = threading.Event()
built = [0]

def churn():
    # Build clients and make requests in a loop; each fork below lands while
    # this thread is about to build (or is building) a client's CRT client.
    while not stop.is_set():
        client = S3Client("us-east-1", endpoint=ENDPOINT,
                          s3client_config=S3ClientConfig(max_attempts=2))
        LATEST[0] = client
        building.set()
        client.head_object(BUCKET, "obj1")
        built[0] += 1

worker = threading.Thread(target=churn, daemon=True)
worker.start()
pids = []
for _ in range(50):
    assert building.wait(30), "the churning thread stalled"
    building.clear()
    candidate = LATEST[0]                         # its construction is under way
    pid = os.fork()
    if pid == 0:
        try:
            ok = fetch("obj0", candidate) == expected and fetch("obj0") == expected
        except BaseException as error:
            print("child failed:", repr(error), flush=True)
            ok = False
        os._exit(0 if ok else 7)
    pids.append(pid)
stop.set()
worker.join(60)
codes, hung = exit_codes(pids, 90)
failed = [code for code in codes.values() if code != 0]
print("hung", len(hung), "failed", len(failed), "ok", len(codes) - len(failed), "built", built[0])
assert fetch("obj0") == expected                   # the parent still works
"""


def test_children_forked_while_another_thread_builds_clients_never_hang(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    out = _run(tmp_path, _FORK_STORM, s3_endpoint, bucket, timeout=240)
    assert out.splitlines()[-1].startswith("hung 0 failed 0 ok 50 "), out


def test_awscrt_static_defaults_are_parked_in_a_child_not_destroyed(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    """Code outside s3torch may use awscrt's process-wide defaults from another thread.

    A forked child must get working defaults of its own (even if a parent
    thread held awscrt's lock at the fork), and must not destroy the inherited
    ones: their native threads belong to the parent.
    """
    out = _run(
        tmp_path,
        """
        import gc, threading, weakref
        from awscrt.auth import AwsCredentialsProvider
        from awscrt.io import ClientBootstrap, EventLoopGroup

        def credentials():  # made on the static default bootstrap, resolved on its threads
            provider = AwsCredentialsProvider.new_default_chain()
            return provider.get_credentials().result(timeout=30).access_key_id

        expected = credentials()
        inherited = weakref.ref(ClientBootstrap.get_or_create_static_default())
        inherited_group = weakref.ref(EventLoopGroup.get_or_create_static_default())
        fetch("obj0")
        # Another thread of the parent takes awscrt's static-default lock and is
        # inside it when we fork.
        held, release = threading.Event(), threading.Event()

        def hold():
            with ClientBootstrap._static_client_bootstrap_lock:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert held.wait(30)
        pid = os.fork()
        if pid == 0:
            gc.collect()
            alive = inherited() is not None and inherited_group() is not None
            fresh = ClientBootstrap.get_or_create_static_default() is not inherited()
            works = credentials() == expected and fetch("obj0") == fetch("obj0", CLIENT)
            print("child", alive, fresh, works, flush=True)
            os._exit(0 if alive and fresh and works else 9)
        release.set()
        holder.join(30)
        assert exit_code(pid) == 0
        assert ClientBootstrap.get_or_create_static_default() is inherited()
        assert credentials() == expected                 # the parent's defaults still work
        print("ok")
        """,
        s3_endpoint,
        bucket,
    )
    assert out.strip().splitlines()[-1] == "ok", out


def test_a_child_closes_an_inherited_small_stream_whose_lock_was_held_at_fork(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    # A CRT thread of the parent may hold a single GET's lock at the moment of
    # fork; the child must not wait for it when it closes (or collects) the stream.
    out = _run(
        tmp_path,
        """
        small = CLIENT.get_object_stream(
            BUCKET, "obj1", object_info=CLIENT.head_object(BUCKET, "obj1")
        )
        guard = small._download._guard
        guard.acquire()                      # as if a CRT callback were inside it
        pid = os.fork()
        if pid == 0:
            small.close()
            os._exit(0 if small.closed else 3)
        guard.release()
        code = exit_code(pid, 60)
        assert code == 0, code
        assert small.read() == fetch("obj1")  # the parent's stream is untouched
        print("ok")
        """,
        s3_endpoint,
        bucket,
    )
    assert out.strip() == "ok"
