"""Which store error each PyMongo error becomes: nothing applied, outcome unknown, or other.

The exception objects are built as the driver builds them; no server is involved.
"""

from __future__ import annotations

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from server.store.mongo_errors import store_error
from server.store.port import StoreError, StoreTimeout, StoreUnavailable

RETRYABLE = {"errorLabels": ["RetryableWriteError"]}

# (error, what a write that raised it means, what a read that raised it means)
CASES: dict[str, tuple[Exception, type[StoreError], type[StoreError]]] = {
    # Never reached a server: no primary elected, unreachable, pool exhausted.
    "server-selection": (
        ServerSelectionTimeoutError("No primary available for writes, Timeout: 5s"),
        StoreUnavailable,
        StoreUnavailable,
    ),
    # The driver retries a write until the deadline and raises the last attempt's error:
    # "no pooled connection" or "not primary" may follow an attempt that was sent.
    "pool-checkout": (
        WaitQueueTimeoutError("timed out waiting for a connection"),
        StoreTimeout,
        StoreUnavailable,
    ),
    "not-primary": (
        NotPrimaryError("not primary", {"code": 10107, "errmsg": "not primary"}),
        StoreTimeout,
        StoreUnavailable,
    ),
    # ... unless the driver knows no attempt wrote.
    "not-primary-no-writes": (
        NotPrimaryError(
            "not primary",
            {"code": 10107, "errmsg": "not primary", "errorLabels": ["NoWritesPerformed"]},
        ),
        StoreUnavailable,
        StoreUnavailable,
    ),
    # Credentials are checked when a connection opens, before it carries a command (a new
    # replica set's init Job creates the application's user after the primary is up).
    "authentication-failed": (
        OperationFailure("Authentication failed.", 18),
        StoreUnavailable,
        StoreUnavailable,
    ),
    # Sent, then the deadline passed or the connection broke: a write may have been applied.
    "network-timeout": (NetworkTimeout("timed out"), StoreTimeout, StoreUnavailable),
    "connection-lost": (AutoReconnect("connection reset by peer"), StoreTimeout, StoreUnavailable),
    "max-time-expired": (
        ExecutionTimeout("operation exceeded time limit", 50),
        StoreTimeout,
        StoreUnavailable,
    ),
    "code-50": (OperationFailure("MaxTimeMSExpired", 50), StoreTimeout, StoreUnavailable),
    # Applied on the primary, not acknowledged by a majority (may be rolled back).
    "majority-timeout": (
        WTimeoutError("waiting for replication timed out", 64, {"errInfo": {"wtimeout": True}}),
        StoreTimeout,
        StoreUnavailable,
    ),
    "write-concern": (
        WriteConcernError("write concern failed", 64),
        StoreTimeout,
        StoreUnavailable,
    ),
    "retryable-out-of-time": (
        OperationFailure("host unreachable", 6, RETRYABLE),
        StoreTimeout,
        StoreUnavailable,
    ),
    # Anything else: not a passing condition the client can wait out.
    "unauthorized": (OperationFailure("not authorized", 13), StoreError, StoreError),
    "validation": (WriteError("Document failed validation", 121), StoreError, StoreError),
    "unencodable": (InvalidDocument("cannot encode object"), StoreError, StoreError),
    "too-large-int": (
        OverflowError("MongoDB can only handle up to 8-byte ints"),
        *[StoreError] * 2,
    ),
    "other": (PyMongoError("something else"), StoreError, StoreError),
}


@pytest.mark.parametrize("case", CASES)
def test_each_driver_error_becomes_the_store_error_that_says_what_to_do(case: str) -> None:
    exc, on_write, on_read = CASES[case]
    for write, expected in ((True, on_write), (False, on_read)):
        error = store_error(exc, write=write)
        assert type(error) is expected, (case, write)
        assert type(exc).__name__ in str(error)
