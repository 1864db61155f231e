"""The librdkafka mock cluster, in this process, through ctypes: the fault-injection peer for tests.

Uses the librdkafka shipped in the confluent-kafka wheel (``site-packages/confluent_kafka.libs/``).
Brokers have ids 1..N and listen on 127.0.0.1 at ephemeral ports. Error codes are Kafka's
(6 = NOT_LEADER_OR_FOLLOWER); api keys are Kafka's (0 = Produce).

What it is good for and what it gets wrong is in /work/shared/test-peers.md; the short version: leader
moves, NOT_LEADER, broker down/up, RTT and per-request errors work; non-transactional idempotent
producers get no sequence checks; ApiVersions v3+ answers are malformed; the Produce v5 answer is 8
bytes short.

Warning: the mock runs inside the test process, so a ctypes mistake crashes pytest. The two
variadic functions take every argument as an explicit ctypes object: a bare Python int is passed as
a 32-bit C int, which corrupts the stack for 64-bit and size_t parameters.
"""

from __future__ import annotations

import ctypes
import glob
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import confluent_kafka

_P = ctypes.c_void_p
_INT = ctypes.c_int
_I16 = ctypes.c_int16
_I32 = ctypes.c_int32
_I64 = ctypes.c_int64
_STR = ctypes.c_char_p
_SIZE = ctypes.c_size_t
_RD_KAFKA_PRODUCER = 0  # the handle only hosts the mock; its type does not matter
_ERRSTR_BYTES = 512

# rd_kafka_<name>: (restype, argtypes); argtypes None = variadic, left unset on purpose.
_SIGNATURES: dict[str, tuple[Any, list[Any] | None]] = {
    "conf_new": (_P, []),
    "conf_set": (_INT, [_P, _STR, _STR, _STR, _SIZE]),
    "new": (_P, [_INT, _P, _STR, _SIZE]),
    "destroy": (None, [_P]),
    "err2name": (_STR, [_INT]),
    "mock_cluster_new": (_P, [_P, _INT]),
    "mock_cluster_destroy": (None, [_P]),
    "mock_cluster_bootstraps": (_STR, [_P]),
    "mock_topic_create": (_INT, [_P, _STR, _INT, _INT]),
    "mock_topic_set_error": (None, [_P, _STR, _INT]),
    "mock_partition_set_leader": (_INT, [_P, _STR, _I32, _I32]),
    "mock_broker_set_down": (_INT, [_P, _I32]),
    "mock_broker_set_up": (_INT, [_P, _I32]),
    "mock_broker_set_rtt": (_INT, [_P, _I32, _INT]),
    "mock_push_request_errors_array": (None, [_P, _I16, _SIZE, ctypes.POINTER(_INT)]),
    "mock_clear_request_errors": (None, [_P, _I16]),
    "mock_set_apiversion": (_INT, [_P, _I16, _I16, _I16]),
    "mock_start_request_tracking": (None, [_P]),
    "mock_clear_requests": (None, [_P]),
    "mock_get_requests": (ctypes.POINTER(_P), [_P, ctypes.POINTER(_SIZE)]),
    "mock_request_destroy_array": (None, [_P, _SIZE]),
    "mock_request_id": (_I32, [_P]),
    "mock_request_api_key": (_I16, [_P]),
    "mock_request_timestamp": (_I64, [_P]),
    "mock_partition_push_request_errors": (_INT, None),
    "mock_broker_push_request_error_rtts": (_INT, None),
}


def _load_librdkafka() -> ctypes.CDLL:
    package_dir = os.path.dirname(confluent_kafka.__file__)
    libs_dir = os.path.join(os.path.dirname(package_dir), "confluent_kafka.libs")
    candidates = sorted(glob.glob(os.path.join(libs_dir, "librdkafka*.so*")))
    if not candidates:
        raise RuntimeError(
            f"no librdkafka*.so* in {libs_dir}: the mock cluster needs a Linux confluent-kafka wheel"
        )
    lib = ctypes.CDLL(candidates[0])
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, "rd_kafka_" + name)
        fn.restype = restype
        if argtypes is not None:
            fn.argtypes = argtypes
    return lib


_lib = _load_librdkafka()


def _fn(name: str) -> Any:
    return getattr(_lib, "rd_kafka_" + name)


def _check(err: int, what: str) -> None:
    if err:
        name = _fn("err2name")(err).decode()
        raise RuntimeError(f"rd_kafka_{what} failed: {name} ({err})")


class MockCluster:
    """A librdkafka mock cluster of ``brokers`` brokers (ids 1..N) in this process.

    ``conf`` holds extra librdkafka properties for the hosting handle (``log_level`` defaults to 3).
    Close it with :meth:`close` or a ``with`` block; every call is non-blocking unless stated.
    """

    bootstrap_servers: str
    """Comma-separated ``127.0.0.1:PORT`` list of every broker."""

    def __init__(self, brokers: int = 3, conf: Mapping[str, object] | None = None) -> None:
        errstr = ctypes.create_string_buffer(_ERRSTR_BYTES)
        cf = _fn("conf_new")()
        for key, value in {"log_level": 3, **(conf or {})}.items():
            if _fn("conf_set")(cf, key.encode(), str(value).encode(), errstr, _ERRSTR_BYTES):
                raise ValueError(f"librdkafka property {key}={value!r}: {errstr.value.decode()}")
        # rd_kafka_new takes ownership of cf, even when it fails.
        self._rk: int | None = _fn("new")(_RD_KAFKA_PRODUCER, cf, errstr, _ERRSTR_BYTES)
        if not self._rk:
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        self._mc: int | None = _fn("mock_cluster_new")(self._rk, brokers)
        if not self._mc:
            _fn("destroy")(self._rk)
            self._rk = None
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers = _fn("mock_cluster_bootstraps")(self._mc).decode()

    def _handle(self) -> int:
        if not self._mc:
            raise RuntimeError("the mock cluster is closed")
        return self._mc

    # ----------------------------------------------------------------- topology

    def create_topic(self, topic: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``topic``; its partition leaders are spread over the brokers."""
        err = _fn("mock_topic_create")(self._handle(), topic.encode(), partitions, replication_factor)
        _check(err, "mock_topic_create")

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Move a partition's leadership to ``broker_id``; -1 makes it leaderless."""
        err = _fn("mock_partition_set_leader")(self._handle(), topic.encode(), partition, broker_id)
        _check(err, "mock_partition_set_leader")

    def broker_down(self, broker_id: int) -> None:
        """Close the broker's connections, refuse new ones and drop it from Metadata.

        It stays listed as leader of its partitions until :meth:`broker_up` or :meth:`set_leader`.
        """
        _check(_fn("mock_broker_set_down")(self._handle(), broker_id), "mock_broker_set_down")

    def broker_up(self, broker_id: int) -> None:
        """Bring a broker back on the same port."""
        _check(_fn("mock_broker_set_up")(self._handle(), broker_id), "mock_broker_set_up")

    def set_rtt(self, broker_id: int, rtt_ms: int) -> None:
        """Delay every response from ``broker_id`` by ``rtt_ms`` milliseconds."""
        _check(_fn("mock_broker_set_rtt")(self._handle(), broker_id, rtt_ms), "mock_broker_set_rtt")

    def set_apiversion(self, api_key: int, min_version: int, max_version: int) -> None:
        """Change the version range advertised for ``api_key``; (-1, -1) hides the API."""
        err = _fn("mock_set_apiversion")(self._handle(), api_key, min_version, max_version)
        _check(err, "mock_set_apiversion")

    # ----------------------------------------------------------------- errors

    def set_topic_error(self, topic: str, error_code: int) -> None:
        """Return ``error_code`` for ``topic`` in Metadata responses (0 clears it)."""
        _fn("mock_topic_set_error")(self._handle(), topic.encode(), error_code)

    def push_request_errors(self, api_key: int, *error_codes: int) -> None:
        """Fail the next ``len(error_codes)`` requests of ``api_key``, to any broker, in order.

        An error code 0 lets that request through.
        """
        array = (_INT * len(error_codes))(*error_codes)
        _fn("mock_push_request_errors_array")(self._handle(), api_key, len(error_codes), array)

    def push_partition_errors(self, topic: str, partition: int, api_key: int, *error_codes: int) -> None:
        """Put the next ``len(error_codes)`` per-partition errors in ``api_key`` responses."""
        err = _fn("mock_partition_push_request_errors")(
            _P(self._handle()),
            _STR(topic.encode()),
            _I32(partition),
            _I16(api_key),
            _SIZE(len(error_codes)),
            *[_INT(e) for e in error_codes],
        )
        _check(err, "mock_partition_push_request_errors")

    def push_broker_errors_rtt(self, broker_id: int, api_key: int, *err_rtt: tuple[int, int]) -> None:
        """Queue ``(error_code, delay_ms)`` pairs for the next ``api_key`` requests to ``broker_id``.

        Error code 0 only delays the response. The mock appends a Produce *before* it delays the
        answer, so a delay longer than the client's request timeout makes a retry a duplicate.
        """
        flat = [_INT(x) for pair in err_rtt for x in pair]
        err = _fn("mock_broker_push_request_error_rtts")(
            _P(self._handle()), _I32(broker_id), _I16(api_key), _SIZE(len(err_rtt)), *flat
        )
        _check(err, "mock_broker_push_request_error_rtts")

    def clear_errors(self, api_key: int) -> None:
        """Drop every queued error for ``api_key``."""
        _fn("mock_clear_request_errors")(self._handle(), api_key)

    # ----------------------------------------------------------------- request tracking

    def start_tracking(self) -> None:
        """Start recording every request the brokers receive (see :meth:`requests`)."""
        _fn("mock_start_request_tracking")(self._handle())

    def requests(self, clear: bool = True) -> list[tuple[int, int, int]]:
        """Return ``[(broker_id, api_key, timestamp_us)]`` received since :meth:`start_tracking`.

        With ``clear`` (the default) the record is emptied afterwards.
        """
        count = _SIZE()
        array = _fn("mock_get_requests")(self._handle(), ctypes.byref(count))
        out = [
            (
                int(_fn("mock_request_id")(array[i])),
                int(_fn("mock_request_api_key")(array[i])),
                int(_fn("mock_request_timestamp")(array[i])),
            )
            for i in range(count.value)
        ]
        if array:
            _fn("mock_request_destroy_array")(ctypes.cast(array, _P), count.value)
        if clear:
            _fn("mock_clear_requests")(self._handle())
        return out

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Destroy the cluster and its hosting handle; idempotent. Blocks until its threads end."""
        if self._mc:
            _fn("mock_cluster_destroy")(self._mc)
            self._mc = None
        if self._rk:
            _fn("destroy")(self._rk)
            self._rk = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
