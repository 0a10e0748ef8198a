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


_TESTS = str(Path(__file__).resolve().parent)

_CHURN_STORM = f"""
import gc, threading, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on purpose
sys.path.insert(0, {_TESTS!r})
from native_threads import managed_threads
expected = fetch("obj0")
stop = threading.Event()
dropped = [0]

def churn():
    # Build a client, use it and let it go, again and again: each one let go
    # ends its CRT threads on CRT threads, whenever the fork below happens.
    while not stop.is_set():
        client = S3Client("us-east-1", endpoint=ENDPOINT,
                          s3client_config=S3ClientConfig(max_attempts=2))
        client.head_object(BUCKET, "obj1")
        del client
        gc.collect()
        dropped[0] += 1

workers = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
for worker in workers:
    worker.start()
while dropped[0] < 2:
    time.sleep(0.01)
pids = []
for _ in range(30):
    pid = os.fork()
    if pid == 0:
        state = managed_threads()  # what the fork left, before this child makes a thread
        if state.awaiting_join or state.lock_word:
            print("child inherited", state, flush=True)
            os._exit(11)
        try:
            ok = fetch("obj0", S3Client("us-east-1", endpoint=ENDPOINT)) == expected
        except BaseException as error:
            print("child failed:", repr(error), flush=True)
            ok = False
        os._exit(0 if ok else 7)
    pids.append(pid)
    time.sleep(0.02)
stop.set()
for worker in workers:
    worker.join(60)
codes, hung = exit_codes(pids, 60)
inherited = sum(1 for code in codes.values() if code == 11)
failed = sum(1 for code in codes.values() if code not in (0, 11))
print("hung", len(hung), "inherited", inherited, "failed", failed, "dropped", dropped[0])
assert fetch("obj0") == expected                   # the parent still works
"""


def test_children_forked_while_other_threads_let_clients_go_inherit_quiet_crt_threads(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    """Fork window A: a fork during a client's teardown on CRT threads.

    aws-c-common guards its managed-thread bookkeeping with one native mutex,
    and keeps finished threads in a list until the next one to finish joins
    them. A child forked while a CRT thread held that mutex hangs at its first
    thread launch (seen once in 30 forks on a loaded machine); a child that
    inherits a finished thread of the parent in the list joins it later (see
    the next test). A fork therefore first waits for teardowns to end and
    joins what finished: every child starts with an empty list and a free mutex.
    """
    out = _run(tmp_path, "import time\n" + _CHURN_STORM, s3_endpoint, bucket, timeout=240)
    assert out.splitlines()[-1].startswith("hung 0 inherited 0 failed 0 "), out


_CHILDREN_EXIT = f"""
import gc, threading, time
sys.path.insert(0, {_TESTS!r})
from native_threads import managed_threads

def busy(index):
    client = S3Client("us-east-1", endpoint=ENDPOINT)
    for round in range(3):
        client.head_object(BUCKET, "obj1")
        assert client.get_object_stream(BUCKET, f"obj{{index}}").read() == fetch(f"obj{{index}}")
        with client.put_object(BUCKET, f"written-{{index}}-{{round}}") as writer:
            writer.write(b"x" * 1000)
        list(client.list_objects(BUCKET))

def use_a_client_and_let_it_go(key):
    client = S3Client("us-east-1", endpoint=ENDPOINT)
    body = client.get_object_stream(BUCKET, key).read()
    del client
    gc.collect()  # its CRT threads end here, in this process
    return body

def grandchild(queue):
    queue.put((managed_threads(), len(use_a_client_and_let_it_go("obj2"))))

def rank(queue):
    inherited = managed_threads()  # before this process makes any thread
    body = use_a_client_and_let_it_go("obj1")
    # A DataLoader worker of this rank: a fork of a fork.
    context = multiprocessing.get_context("fork")
    inner = context.Queue()
    worker = context.Process(target=grandchild, args=(inner,))
    worker.start()
    nested = inner.get(timeout=60)
    worker.join(60)
    queue.put((inherited, len(body), nested, worker.exitcode))

if __name__ == "__main__":
    # Earlier work of the parent: clients in several threads, all let go.
    threads = [threading.Thread(target=busy, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    gc.collect()
    time.sleep(0.2)  # their teardown is over: finished threads await their join
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    ranks = [context.Process(target=rank, args=(queue,)) for _ in range(3)]
    for process in ranks:
        process.start()
    results = [queue.get(timeout=120) for _ in ranks]
    for process in ranks:
        process.join(60)
    codes = [process.exitcode for process in ranks]
    print("codes", codes)
    for inherited, size, (nested, nested_size), worker_code in results:
        print("inherited", inherited.awaiting_join, inherited.lock_word,
              "nested", nested.awaiting_join, nested.lock_word, worker_code, size, nested_size)
        assert (inherited.awaiting_join, inherited.lock_word) == (0, 0), inherited
        assert (nested.awaiting_join, nested.lock_word) == (0, 0), nested
        assert (worker_code, size, nested_size) == (0, len(fetch("obj1")), len(fetch("obj2")))
    assert codes == [0, 0, 0], codes             # none died of a signal at exit
    print("ok")
"""


def test_children_of_a_process_that_let_clients_go_exit_cleanly(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    """Fork window B: ranks forked after the parent's clients were torn down died of SIGSEGV.

    The reference's e2e suite, run whole, lost fork cases of
    test_distributed_training that way: the parent (pytest) had torn down
    clients in earlier tests, so a finished CRT thread of the parent awaited
    its join in aws-c-common's list. Each forked rank inherited that entry, and
    the first thread of the rank to finish (a client of the rank torn down, at
    the latest in multiprocessing's finalizers at exit) joined it: a thread
    that does not exist in the child, whose stack glibc had already handed to
    the child's own threads as free memory. The fork now joins it first.
    """
    out = _run(tmp_path, _CHILDREN_EXIT, s3_endpoint, bucket, timeout=300)
    assert out.strip().splitlines()[-1] == "ok", out


def test_a_teardown_that_never_ends_delays_one_fork_by_the_bound_and_no_other(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    """A fork waits for the clients let go of, within FORK_QUIESCE_SECONDS, once.

    A teardown that never ends is played by a shutdown event nobody sets, for
    a client that is gone (the wait's own logic: the CRT always sets it).
    """
    out = _run(
        tmp_path,
        """
        import logging, threading, time, weakref
        from s3torch.client import _fork_quiesce
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s", stream=sys.stdout)
        fetch("obj0")                                   # this process made a client
        class Gone: pass
        _fork_quiesce.FORK_QUIESCE_SECONDS = 0.5
        _fork_quiesce._clients.append((weakref.ref(Gone()), threading.Event()))
        took = []
        for _ in range(2):
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:
                os._exit(0 if fetch("obj0") == fetch("obj0", CLIENT) else 3)
            took.append(time.monotonic() - started)
            assert exit_code(pid) == 0
        print("took", 0.5 <= took[0] < 5, took[1] < 0.4)
        """,
        s3_endpoint,
        bucket,
    )
    lines = out.strip().splitlines()
    assert lines[-1] == "took True True", out
    warnings = [line for line in lines if "still shutting down" in line]
    assert len(warnings) == 1, out
    assert warnings[0].startswith(
        "s3torch.client._fork_quiesce CRT clients were still shutting down"
    )


def test_a_ctrl_c_while_a_fork_waits_for_teardowns_reaches_the_parent_after_the_fork(
    tmp_path: Path, s3_endpoint: str, bucket: str, objects: dict[str, bytes]
) -> None:
    """CPython discards what an at-fork hook raises: our hook must not eat a Ctrl-C.

    A DataLoader forks its workers at every epoch, and each fork of a process
    that made a client runs our before-fork hook. A SIGINT whose handler ran
    in it used to be printed as "Exception ignored" and lost: the job went on.
    Here the hook waits (a teardown that never ends, as above) and Ctrl-C
    comes during the wait: the fork completes, the child is fine, and the
    parent gets KeyboardInterrupt right after ``os.fork`` returns.
    """
    out = _run(
        tmp_path,
        """
        import signal, threading, time, weakref
        from s3torch.client import _fork_quiesce
        fetch("obj0")                                   # this process made a client
        class Gone: pass
        _fork_quiesce.FORK_QUIESCE_SECONDS = 2.0
        _fork_quiesce._clients.append((weakref.ref(Gone()), threading.Event()))
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        started, pid, outcome = time.monotonic(), None, "no interrupt"
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if fetch("obj1") == fetch("obj1", CLIENT) else 3)
            for _ in range(200):                        # 2 s of plain Python work
                time.sleep(0.01)
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt"
        took = time.monotonic() - started
        forked = pid is not None
        print(outcome, forked, forked and exit_code(pid) == 0, took < 2.5)
        """,
        s3_endpoint,
        bucket,
    )
    assert out.strip().splitlines()[-1] == "KeyboardInterrupt True True True", out
