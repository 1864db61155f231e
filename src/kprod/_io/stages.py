"""Timing the batch side of the stage metrics: the codec's calls when a request's batches are closed.

The caller-side stages (serialize, partition, append) are sampled in ``send_path.SendPath`` and
``RecordAppender.try_append_timed``; queue and in-flight times are Java's metrics, recorded by the
core. Compression is timed here, in the I/O layer, around each call of the codec (the core and
``records/`` read no clock): :class:`TimedCompressor` wraps the producer's compressor, and
:func:`encode_plan` closes a request's batches and says how long the codec took for how many records.
It runs once per request, never per record.
"""

from __future__ import annotations

import time

from kprod._core.sender import ProduceRequestPlan
from kprod.records.compression import Compressor
from kprod.records.crc import BytesLike

__all__ = ["TimedCompressor", "encode_plan"]

_perf_counter_ns = time.perf_counter_ns


class TimedCompressor:
    """A :class:`Compressor` that adds the time of each :meth:`compress` call to :attr:`ns`.

    Used by the sender loop only (one thread), so the sum needs no lock."""

    __slots__ = ("_codec", "codec_id", "name", "ns")

    def __init__(self, codec: Compressor) -> None:
        self._codec = codec
        self.codec_id = codec.codec_id
        self.name = codec.name
        self.ns = 0
        """ns spent in the codec so far (monotonic: read it before and after)."""

    def compress(self, data: BytesLike) -> bytes:
        """The codec's ``compress``, timed."""
        started_ns = _perf_counter_ns()
        try:
            return self._codec.compress(data)
        finally:
            self.ns += _perf_counter_ns() - started_ns

    def __repr__(self) -> str:
        return f"TimedCompressor({self._codec!r})"


def encode_plan(
    plan: ProduceRequestPlan, compressor: TimedCompressor | None
) -> tuple[list[tuple[str, list[tuple[int, bytes | bytearray]]]], int, int]:
    """``plan.encode_batches(compressor)`` and ``(its result, ns in the codec, records compressed)``.

    A batch is compressed when it is first encoded; sent again (a retry, an epoch bump) it reuses its
    compressed bytes, so only the records of batches encoded for the first time are counted. Without
    a compressor: ``(result, 0, 0)``.
    """
    if compressor is None:
        return plan.encode_batches(None), 0, 0
    records = 0
    for batch in plan.batches:
        if batch.encoded is None:
            records += batch.record_count
    before_ns = compressor.ns
    topic_data = plan.encode_batches(compressor)
    return topic_data, compressor.ns - before_ns, records
