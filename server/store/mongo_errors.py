"""What a PyMongo error means to the caller of a store call: pure, tested as data.

The client is created with a client-side operation timeout (``timeoutMS``): every
operation (server selection, connection checkout, the command, the wait for the
``w: "majority"`` acknowledgement) ends by that deadline with an error whose ``timeout``
is true. With retryable writes on (the default), the driver retries a write that failed
on the network or on a primary stepping down until that deadline, and raises the error
of the first attempt that may have written: a :class:`ServerSelectionTimeoutError`
raised by a write means no attempt reached a server.

- Nothing can have been applied: no server could be selected (no primary, unreachable),
  the server refused our credentials (a connection authenticates before it carries any
  command; while a new replica set is initialised, the application's user may not exist
  yet), the driver says so (``NoWritesPerformed``), or the call only read; for a read,
  also no pooled connection free or a server that is not primary.
  :class:`~server.store.port.StoreUnavailable`: a condition that passes.
- A write that may have been applied: the deadline passed or the connection failed after
  it was sent, the majority did not acknowledge it (a write-concern error: applied on
  the primary, maybe rolled back later), or it failed with an error the driver would
  retry (``RetryableWriteError``) and it ran out of time. Also "not primary" and "no
  pooled connection" on a write: the driver retries a write until the deadline and
  raises the last attempt's error, which may follow an earlier attempt that was sent.
  :class:`~server.store.port.StoreTimeout`: the outcome is unknown; the client retries
  with the same ``Idempotency-Key``.
- Anything else (a refused command, a document MongoDB cannot store, a bug):
  :class:`~server.store.port.StoreError`.
"""

from __future__ import annotations

from pymongo.errors import (
    ConnectionFailure,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WaitQueueTimeoutError,
    WriteConcernError,
)

from server.store.port import StoreError, StoreTimeout, StoreUnavailable

# Never sent, whichever attempt raised it (the driver keeps the error of an attempt that
# was sent over a later server selection failure).
_NEVER_SENT = (ServerSelectionTimeoutError,)
# Not sent by the attempt that raised it; on a write an earlier attempt may have been.
_NOT_SENT_THIS_TIME = (WaitQueueTimeoutError, NotPrimaryError)
AUTHENTICATION_FAILED = 18


def store_error(exc: Exception, *, write: bool) -> StoreError:
    """The store error to raise for ``exc``, raised by a MongoDB call.

    Args:
        exc: what the driver (or BSON encoding) raised.
        write: whether the call was a write (``insert_one``, ``update_one``); a read or
            an index creation changes nothing the caller could lose.

    Returns:
        :class:`StoreUnavailable`, :class:`StoreTimeout` or :class:`StoreError`, whose
        message names the driver's error.
    """
    message = f"MongoDB error: {type(exc).__name__}: {exc}"
    if (
        isinstance(exc, _NEVER_SENT)
        or (isinstance(exc, OperationFailure) and exc.code == AUTHENTICATION_FAILED)
        or (isinstance(exc, PyMongoError) and exc.has_error_label("NoWritesPerformed"))
        or (not write and isinstance(exc, _NOT_SENT_THIS_TIME))
    ):
        return StoreUnavailable(message)
    if isinstance(exc, ConnectionFailure | WriteConcernError | WaitQueueTimeoutError) or (
        isinstance(exc, PyMongoError)
        and (exc.timeout or exc.has_error_label("RetryableWriteError"))
    ):
        return StoreTimeout(message) if write else StoreUnavailable(message)
    return StoreError(message)
