"""One process per SQLite file: stores of one process share the file, another process is
refused until they all closed it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.domain.increments import IncrementPolicy
from server.store.file_lock import LOCK_SUFFIX, FileInUse, ProcessFileLock
from server.store.sqlite import SqliteStore
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

POLICY = IncrementPolicy(rate_limit_per_minute=0)

# Another process opening a store on the file; prints what happened.
OTHER_PROCESS = """
import asyncio, sys
from server.domain.increments import IncrementPolicy
from server.store.sqlite import SqliteStore
from server.store.port import StoreError

async def main():
    store = SqliteStore(sys.argv[1], IncrementPolicy(rate_limit_per_minute=0))
    try:
        await store.open()
    except StoreError as exc:
        print(type(exc).__name__, exc)
        return
    await store.close()
    print("opened")

asyncio.run(main())
"""


def other_process_opens(path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(path)],
        capture_output=True,
        text=True,
        timeout=scaled(20),
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    return done.stdout.strip()


async def test_a_second_process_is_refused_while_any_store_of_this_one_is_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scores.db"
    one, two = SqliteStore(str(path), POLICY), SqliteStore(str(path), POLICY)
    await one.open()
    await two.open()  # a second store object of this process: shared
    answer = other_process_opens(path)
    assert answer.startswith("FileInUse"), answer
    assert str(path) in answer and "another process" in answer
    await one.close()
    assert other_process_opens(path).startswith("FileInUse")  # two still has it
    await two.close()
    assert other_process_opens(path) == "opened"
    reopened = SqliteStore(str(path), POLICY)
    await reopened.open()  # this process again, after the other let go
    await reopened.close()


async def test_a_store_that_fails_to_open_lets_go_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not SQLite" * 100)
    store = SqliteStore(str(path), POLICY)
    with pytest.raises(Exception, match="cannot open SQLite store"):
        await store.open()
    await store.close()
    assert other_process_opens(path).startswith("StoreError")  # its own error, not the lock


async def test_memory_stores_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SqliteStore(":memory:", POLICY)
    await store.open()
    await store.close()
    assert os.listdir(tmp_path) == []


def test_the_lock_object_is_shared_per_process_and_released_once_per_holder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    first, second = ProcessFileLock(str(db)), ProcessFileLock(str(db))
    first.acquire()
    first.acquire()  # holding already: no second count
    second.acquire()
    assert Path(first.lock_path) == tmp_path / f"x.db{LOCK_SUFFIX}"
    first.release()
    first.release()  # idempotent
    assert other_process_opens(db).startswith("FileInUse")
    second.release()
    assert other_process_opens(db) == "opened"


def test_a_lock_file_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    lock = ProcessFileLock(str(tmp_path / "missing-dir" / "x.db"))
    with pytest.raises(Exception, match="cannot open the lock file") as caught:
        lock.acquire()
    assert not isinstance(caught.value, FileInUse)
