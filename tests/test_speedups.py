"""The compiled fast path (``kprod._speedups``) against its Python reference.

``PlainAppender`` must answer every call as the Python closure does (the same batch, or None, or
the same exception) and leave the same state behind, for any arguments a caller can pass; and
``FastSend`` must behave as ``Producer.send`` for every way of calling it. Both are C: these tests
also look for leaked or stolen references and for objects the garbage collector cannot free.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import sysconfig
import weakref
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import consume_all
from kprod import AsyncProducer, Producer
from kprod._core import appender as appender_module
from kprod._core.accumulator import ProducerBatch
from kprod._core.appender import compiled_fast_path_available, speedups_module
from kprod._io.engine import ProducerEngine
from kprod.broker import EmbeddedBroker
from test_io_append_path import BASE_TS, PARTITIONS, TOPIC, batches_of, make_engine_with


def test_the_compiled_fast_path_is_built_and_used() -> None:
    """CI installs kprod with its C extension: a failed build must not pass unnoticed."""
    if os.environ.get("KPROD_PURE_PYTHON", "") not in ("", "0"):
        assert speedups_module is None and not compiled_fast_path_available()
        return
    assert speedups_module is not None, "kprod._speedups was not built (see setup.py)"
    assert compiled_fast_path_available()
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "max.block.ms": 100})
    try:
        assert type(producer.send) is speedups_module.FastSend
        assert type(producer._append_plain) is speedups_module.PlainAppender
    finally:
        producer.close(1)

    # A subclass that overrides send() keeps its own.
    class Counting(Producer):
        sent = 0

        def send(self, *args: Any, **kwargs: Any) -> Any:
            Counting.sent += 1
            return super().send(*args, **kwargs)

    producer = Counting({"bootstrap.servers": "127.0.0.1:9", "max.block.ms": 100})
    try:
        assert "send" not in vars(producer)
        with pytest.raises(Exception):  # noqa: B017 - any: no broker, the topic's metadata never comes
            producer.send("t", b"v")
        assert Counting.sent == 1
    finally:
        producer.close(1)
    # Serializers other than the raw-bytes ones: send() stays the Python method.
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "value.serializer": "json"})
    try:
        assert "send" not in vars(producer)
    finally:
        producer.close(1)


ODD_VALUES: list[Any] = [
    None,
    b"",
    b"v",
    b"x" * 150,
    b"y" * 3000,
    b"z" * 8100,
    bytearray(b"ba"),
    "text",
    7,
    memoryview(b"mv"),
    type("BytesSubclass", (bytes,), {})(b"sub"),
]
ODD_PARTITIONS: list[Any] = [None, None, None, 0, 1, PARTITIONS - 1, -1, PARTITIONS, True, 2**70, "1", 1.0]
# Timestamps are ints by the fast path's contract (send() computes them); any int, bool included.
# (The C path also refuses a timestamp that is not an int, where the closure would raise:
# test_no_reference_is_leaked_or_stolen passes one.)
ODD_TIMESTAMPS: list[Any] = [0, 1, -1, 5000, 8191, 8192, -8192, -9000, 2**70, -(2**70), -(2**63), 2**63 - 1, True]
ODD_TOPICS: list[Any] = [TOPIC, TOPIC, TOPIC, TOPIC, "other", b"t", 5, None]

call_strategy = st.tuples(
    st.sampled_from(ODD_TOPICS),
    st.sampled_from(ODD_PARTITIONS),
    st.sampled_from(ODD_TIMESTAMPS),
    st.sampled_from([None, b"k1", b"k2", b"k3", *ODD_VALUES[3:]]),
    st.sampled_from(ODD_VALUES),
    st.booleans(),  # then seal every open batch (as the sender's drain does)
)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        result = fn(*args)
    except Exception as exc:  # compared by type and text
        return ("raised", (type(exc), str(exc)))
    if result is None:
        return ("none", None)
    assert isinstance(result, ProducerBatch)
    return ("batch", (result.partition, result.record_count, result.size_bytes, result.max_timestamp_ms))


def state_of(engine: ProducerEngine) -> tuple[Any, ...]:
    acc = engine.accumulator
    sticky = engine.partitioners.get(TOPIC)
    return (
        acc.used_bytes,
        acc.full_batches,
        None if sticky is None else (sticky.current, sticky.produced_bytes),
        batches_of(engine),
    )


@settings(max_examples=80, deadline=None)
@given(calls=st.lists(call_strategy, min_size=20, max_size=300), seed=st.integers(0, 2**32 - 1))
def test_any_call_gets_the_python_closures_answer_and_leaves_the_same_state(
    calls: list[tuple[Any, ...]], seed: int
) -> None:
    compiled_gen = make_engine_with(ProducerEngine, seed, "compiled", {})
    python_gen = make_engine_with(ProducerEngine, seed, "python", {})
    compiled, python = next(compiled_gen), next(python_gen)
    try:
        # The C module itself, even where KPROD_PURE_PYTHON=1 keeps producers from using it.
        compiled_module = appender_module.compiled_module
        assert compiled_module is not None, "kprod._speedups was not built (see setup.py)"
        assert type(compiled.try_append_plain) is compiled_module.PlainAppender
        assert type(python.try_append_plain) is not compiled_module.PlainAppender
        for topic, partition, ts, key, value, seal in calls:
            timestamp = BASE_TS + ts if type(ts) is int and abs(ts) < 2**40 else ts  # bool: as is
            answers = []
            for engine in (compiled, python):
                with engine.lock:
                    answer = outcome(engine.try_append_plain, topic, partition, timestamp, key, value)
                    if answer[0] == "none" and _general_path_takes(topic, partition, timestamp, key, value):
                        # As send() does: the general path places what the fast one refused.
                        engine.try_append_locked(topic, partition, timestamp, key, value, None, 10_000)
                answers.append(answer)
            assert answers[0] == answers[1], (topic, partition, timestamp, key, value)
            if seal:
                for engine in (compiled, python):
                    for batch in engine.accumulator.queued_batches():
                        batch.accepting = False
        assert state_of(compiled) == state_of(python)
    finally:
        compiled_gen.close()
        python_gen.close()


def _general_path_takes(topic: Any, partition: Any, timestamp: Any, key: Any, value: Any) -> bool:
    """A record the general path places (rather than refusing it: those are the frontend's job)."""
    return (
        topic == TOPIC
        and (partition is None or (type(partition) is int and 0 <= partition < PARTITIONS))
        and type(timestamp) is int
        and abs(timestamp - BASE_TS) < 2**40
        and (key is None or type(key) is bytes)
        and (value is None or type(value) is bytes)
    )


def test_no_reference_is_leaked_or_stolen() -> None:
    gen = make_engine_with(ProducerEngine, 5, "compiled", {"batch.size": 1_000_000})
    compiled = next(gen)
    # Objects of their own (built at run time, not constants other code shares); the topic is
    # TOPIC, a one-character string CPython shares everywhere, so its count is checked for drift.
    topic, key, value, bad = TOPIC, bytes([107, 49]), bytes(100), bytearray(b"no")
    timestamp = BASE_TS + 1
    try:
        with compiled.lock:
            # Open the batches the fast path appends to (the general path keeps references of its own).
            compiled.try_append_locked(topic, None, timestamp, None, value, None, 1000)
            compiled.try_append_locked(topic, 1, timestamp, key, value, None, 1000)
            gc.collect()
            gc.disable()  # no collection of other tests' garbage between the two counts
            before = [sys.getrefcount(x) for x in (topic, key, value, bad, timestamp)]
            for _ in range(5_000):
                assert compiled.try_append_plain(topic, None, timestamp, None, value) is not None
                assert compiled.try_append_plain(topic, 1, timestamp, key, value) is not None
                assert compiled.try_append_plain(topic, "1", timestamp, key, value) is None
                assert compiled.try_append_plain(topic, None, timestamp, bad, value) is None
                assert compiled.try_append_plain(topic, None, "ts", None, value) is None  # type: ignore[arg-type]
                assert compiled.try_append_plain(topic, 7, timestamp, None, value) is None
                with pytest.raises(TypeError):
                    compiled.try_append_plain(topic, None, timestamp, None)  # type: ignore[call-arg]
            after = [sys.getrefcount(x) for x in (topic, key, value, bad, timestamp)]
            gc.enable()
        # Keys and values are copied into the batches' buffers; nothing else keeps them. 5,000 rounds
        # of a reference taken or dropped would move a count by thousands.
        assert after[1:] == before[1:]
        assert abs(after[0] - before[0]) < 100
    finally:
        gc.enable()
        gen.close()


def test_the_compiled_objects_are_collected_with_their_producer() -> None:
    """They hold the engine's accumulator, lock and methods: cycles the garbage collector must see."""
    refs = []
    for _ in range(5):
        producer = Producer({"bootstrap.servers": "127.0.0.1:9", "max.block.ms": 100})
        refs.append(weakref.ref(producer._engine))
        producer.close(1)
        del producer
    gc.collect()
    assert [r for r in refs if r() is not None] == []


def send_calls(on_delivery: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every way of calling send()/enqueue() the compiled paths must answer as the Python ones."""
    return [
        (("fast-send", b"v"), {}),
        (("fast-send",), {"value": b"v"}),
        (("fast-send", b"v", b"k"), {}),
        (("fast-send",), {"key": b"k", "value": b"v"}),
        ((), {"topic": "fast-send", "value": b"v"}),
        (("fast-send", b"v"), {"partition": 2}),
        (("fast-send", b"v"), {"partition": None, "timestamp": None, "headers": None}),
        (("fast-send", b"v"), {"timestamp": 1_700_000_000_000}),
        (("fast-send", b"v"), {"headers": [("h", b"1")]}),
        (("fast-send", b"v"), {"on_delivery": on_delivery}),
        (("fast-send", None, b"tombstone"), {}),
        (("fast-send", "text"), {}),
        (("fast-send", b"v"), {"on_delivery": 5}),
        ((), {}),
        (("fast-send", b"v", b"k", b"x"), {}),
        (("fast-send", b"v"), {"bogus": 1}),
        (("fast-send", b"v"), {"value": b"w"}),
        (("fast-send", b"v", b"k"), {"key": b"k"}),
        ((5, b"v"), {}),
        (("fast-send", b"v"), {"partition": 3}),
        (("fast-send", b"v"), {"partition": True}),
        (("fast-send", bytearray(b"v")), {}),
        ((".", b"v"), {}),
        # The default serializers' str, and explicit timestamps: FastSend takes these itself.
        (("fast-send", "text"), {"partition": 1}),
        (("fast-send", "zoë ∑ 😀", "ключ"), {}),
        (("fast-send", "\udc80"), {}),  # a lone surrogate: not UTF-8, the serializer's error
        (("fast-send", b"v", "\ud800"), {}),
        (("fast-send", b"v"), {"timestamp": 1_700_000_000_123, "partition": 0}),
        (("fast-send", "v", "k"), {"timestamp": 0}),
        (("fast-send", b"v"), {"timestamp": -1}),
        (("fast-send", b"v"), {"timestamp": 1_700_000_000_000.0}),
        (("fast-send", b"v"), {"timestamp": 1.5}),
        (("fast-send", b"v"), {"timestamp": True}),
        (("fast-send", b"v"), {"timestamp": "now"}),
        # Headers: FastSend encodes the common forms itself, the rest goes the general way.
        (("fast-send", b"v"), {"headers": [("trace", b"abc"), ("n", None), ("s", "välue")]}),
        (("fast-send", b"v", b"k"), {"headers": (("a", b""), ("", b"x"))}),
        (("fast-send", b"v"), {"headers": {"ключ": b"1", "b": None}}),
        (("fast-send", b"v"), {"headers": [], "partition": 1}),
        (("fast-send", b"v"), {"headers": [["list-pair", b"1"]]}),
        (("fast-send", b"v"), {"headers": [("ba", bytearray(b"1"))]}),
        (("fast-send", b"v"), {"headers": [(f"h{i}", b"v") for i in range(100)]}),
        (("fast-send", b"v"), {"headers": [("bad", 5)]}),
        (("fast-send", b"v"), {"headers": [(5, b"v")]}),
        (("fast-send", b"v"), {"headers": [("x", b"1", b"2")]}),
        (("fast-send", b"v"), {"headers": "nope"}),
        (("fast-send", b"v"), {"headers": [("\udc80", b"1")]}),
    ]


def test_send_in_c_answers_every_call_as_the_python_method(fresh_broker: EmbeddedBroker) -> None:
    fresh_broker.create_topic("fast-send", partitions=3)
    producer = Producer({"bootstrap.servers": fresh_broker.bootstrap_servers, "linger.ms": 1})
    delivered: list[Any] = []

    def on_delivery(metadata: Any, error: Any) -> None:
        delivered.append((metadata, error))

    calls = send_calls(on_delivery)
    try:
        # Under KPROD_PURE_PYTHON=1 both sends are the Python method (the comparison still holds).
        if speedups_module is not None:
            assert type(producer.send) is speedups_module.FastSend
        python_send = Producer.send.__get__(producer)
        futures = []
        for args, kwargs in calls:
            answers: list[tuple[Any, str]] = []
            for send in (producer.send, python_send):
                try:
                    future = send(*args, **kwargs)
                except Exception as exc:
                    answers.append((type(exc), str(exc)))
                else:
                    futures.append(future)
                    answers.append(("future", type(future).__name__))
            assert answers[0] == answers[1], (args, kwargs)
        producer.flush(30)
        # The first 12 calls, the bytearray value, the 2 str calls, 2 timestamps and the float
        # timestamp, by each send.
        assert len(futures) == 2 * 25  # and 7 with headers
        assert all(f.exception(0) is None for f in futures)
        assert len(delivered) == 2 and all(error is None for _, error in delivered)
        assert [f.result(0).partition for f in futures[10:12]] == [2, 2]  # partition=2, twice
        results = [f.result(0) for f in futures]
        # Each pair (C, then Python) wrote the same record: same timestamp where one was given.
        assert [r.timestamp for r in results[30:36]] == [1_700_000_000_123] * 2 + [0] * 2 + [
            1_700_000_000_000
        ] * 2
    finally:
        producer.close(10)
    records = consume_all(fresh_broker.bootstrap_servers, "fast-send", 3, len(futures), timeout_s=30)
    assert len(records) == len(futures)
    stored = {(r.partition, r.offset): r for r in records}
    for c_future, py_future in zip(futures[0::2], futures[1::2], strict=True):
        c_md, py_md = c_future.result(0), py_future.result(0)
        c_rec, py_rec = stored[(c_md.partition, c_md.offset)], stored[(py_md.partition, py_md.offset)]
        assert (c_rec.key, c_rec.value, c_rec.headers) == (py_rec.key, py_rec.value, py_rec.headers)
        if c_md.partition != py_md.partition:  # keyless records may land on another sticky partition
            assert c_rec.key is None
    assert {r.value for r in records} >= {"zoë ∑ 😀".encode(), b"text"}
    assert "ключ".encode() in {r.key for r in records}


def test_enqueue_in_c_answers_every_call_as_the_python_method(fresh_broker: EmbeddedBroker) -> None:
    """AsyncProducer.enqueue with its compiled path (FastEnqueue) and without it, call by call."""
    fresh_broker.create_topic("fast-enqueue", partitions=3)
    delivered: list[Any] = []

    def on_delivery(metadata: Any, error: Any) -> None:
        delivered.append((metadata, error))

    async def run() -> list[Any]:
        async with AsyncProducer(
            {"bootstrap.servers": fresh_broker.bootstrap_servers, "linger.ms": 1}
        ) as producer:
            await producer.send("fast-enqueue", b"warm-up")
            compiled = producer._fast_enqueue
            if speedups_module is not None:
                assert type(compiled) is speedups_module.FastEnqueue
            futures: list[Any] = []
            for args, kwargs in send_calls(on_delivery):
                args = ("fast-enqueue", *args[1:]) if args and args[0] == "fast-send" else args
                if kwargs.get("topic") == "fast-send":
                    kwargs = {**kwargs, "topic": "fast-enqueue"}
                answers: list[tuple[Any, str]] = []
                for fast in (compiled, None):
                    producer._fast_enqueue = fast
                    try:
                        future = await producer.enqueue(*args, **kwargs)
                    except Exception as exc:
                        answers.append((type(exc), str(exc)))
                    else:
                        futures.append(future)
                        answers.append(("future", type(future).__name__))
                producer._fast_enqueue = compiled
                assert answers[0] == answers[1], (args, kwargs)
            await producer.flush()
            return [f.result() for f in futures]

    results = asyncio.run(run())
    assert len(results) == 2 * 25
    assert len(delivered) == 2 and all(error is None for _, error in delivered)
    records = consume_all(fresh_broker.bootstrap_servers, "fast-enqueue", 3, len(results) + 1, timeout_s=30)
    stored = {(r.partition, r.offset): r for r in records}
    for c_md, py_md in zip(results[0::2], results[1::2], strict=True):
        c_rec, py_rec = stored[(c_md.partition, c_md.offset)], stored[(py_md.partition, py_md.offset)]
        assert (c_rec.key, c_rec.value, c_rec.headers) == (py_rec.key, py_rec.value, py_rec.headers)
        assert c_md.timestamp == c_rec.timestamp_ms and py_md.timestamp == py_rec.timestamp_ms


@pytest.mark.timeout(600)
def test_the_c_code_is_clean_under_the_address_and_undefined_behaviour_sanitizers(tmp_path: Path) -> None:
    """Build _speedups.c with ``-fsanitize=address,undefined`` into a copy of the package and run
    this file's tests, the append-path tests and the murmur2 tests against it: any invalid read or
    write, use after free, overflow or undefined behaviour aborts the run."""
    root = Path(__file__).resolve().parent.parent
    package = tmp_path / "kprod"
    shutil.copytree(root / "src" / "kprod", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
            "-shared",
            "-fPIC",
            f"-I{include}",
            str(package / "_speedups.c"),
            "-o",
            str(package / f"_speedups{suffix}"),
        ],
        check=True,
    )
    runtime = [
        subprocess.run(
            ["gcc", f"-print-file-name={lib}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for lib in ("libasan.so", "libubsan.so")
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "LD_PRELOAD": " ".join(runtime),
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython's own allocations at exit are not ours
        "PYTHONMALLOC": "malloc",  # every object through the sanitizer's allocator
        "KPROD_PURE_PYTHON": "0",
    }
    tests = root / "tests"
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-m",
            "pytest",
            "-q",
            "-x",
            "-s",  # no capture: a sanitizer's report goes to stderr before it aborts the process
            "-p",
            "no:cacheprovider",
            "-k",
            "not sanitizers",
            str(tests / "test_speedups.py"),
            str(tests / "test_io_append_path.py"),
            str(tests / "test_murmur2.py"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (
        "passed" in result.stdout
        and str(package)
        in subprocess.run(
            [sys.executable, "-c", "import kprod._speedups as s; print(s.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
