"""The batch side of the stage metrics without a broker: the codec timed per call, and per record
only for the batches a request compresses (``kprod._io.stages``), recorded by ``ProducerMetrics``."""

from __future__ import annotations

import math

from kprod._core.accumulator import ProducerBatch
from kprod._core.metrics import ProducerMetrics
from kprod._core.sender import ProduceRequestPlan
from kprod._io.stages import TimedCompressor, encode_plan
from kprod.records.compression import make_compressor
from kprod.records.crc import BytesLike

NOW = 5_000


class _SlowCodec:
    """A codec (no compression) that counts its calls."""

    codec_id = 3
    name = "lz4"

    def __init__(self) -> None:
        self.calls = 0

    def compress(self, data: BytesLike) -> bytes:
        self.calls += 1
        return bytes(data)


def _batch(partition: int, records: int) -> ProducerBatch:
    batch = ProducerBatch("t", partition, 1_700_000_000_000, NOW)
    for i in range(records):
        batch.append(1_700_000_000_000, None, b"v%d" % i, None)
    return batch


def test_the_timed_compressor_compresses_as_its_codec_and_sums_its_time() -> None:
    codec = make_compressor("zstd", None)
    assert codec is not None
    timed = TimedCompressor(codec)
    data = b"abc" * 10_000
    assert timed.compress(data) == codec.compress(data)
    assert (timed.codec_id, timed.name) == (codec.codec_id, "zstd")
    first = timed.ns
    assert first > 0
    timed.compress(memoryview(data))
    assert timed.ns > first


def test_only_batches_encoded_for_the_first_time_count_as_compressed() -> None:
    codec = _SlowCodec()
    timed = TimedCompressor(codec)
    old, new = _batch(0, 3), _batch(1, 5)
    encode_plan(ProduceRequestPlan(1, [old], 1, 30_000, NOW), timed)  # old's first send
    assert codec.calls == 1
    topic_data, ns, records = encode_plan(ProduceRequestPlan(1, [old, new], 1, 30_000, NOW), timed)
    assert codec.calls == 2, "old is sent again with its cached compressed bytes"
    assert records == 5 and ns > 0
    assert [p for p, _ in topic_data[0][1]] == [0, 1]


def test_without_a_codec_nothing_is_compressed_or_timed() -> None:
    batch = _batch(0, 4)
    topic_data, ns, records = encode_plan(ProduceRequestPlan(1, [batch], 1, 30_000, NOW), None)
    assert (ns, records) == (0, 0) and topic_data[0][1][0][1] is batch.encoded


def test_stage_metrics_are_per_record_averages_with_their_sample_counts() -> None:
    metrics = ProducerMetrics()
    m = metrics.snapshot(NOW)
    for name in ("serialize", "partition", "append", "compress"):
        assert math.isnan(float(m[f"stage-{name}-time-avg-us"])), name  # type: ignore[arg-type]  # nothing recorded: NaN, as Java's avg
    assert m["stage-sample-total"] == m["stage-serialize-sample-total"] == m["stage-compress-record-total"] == 0
    metrics.record_stage_sample(3_000, 1_000, 2_000, NOW)
    metrics.record_stage_sample(-1, 3_000, 4_000, NOW)  # serialization not timed (send_batch)
    metrics.record_compression(40_000, 10, NOW)  # 40 µs for 10 records
    metrics.record_compression(0, 7, NOW)  # cached: nothing ran
    metrics.record_compression(5_000, 0, NOW)  # no record counted: ignored
    m = metrics.snapshot(NOW)
    assert m["stage-serialize-time-avg-us"] == 3.0 and m["stage-serialize-sample-total"] == 1
    assert m["stage-partition-time-avg-us"] == 2.0 and m["stage-append-time-avg-us"] == 3.0
    assert m["stage-sample-total"] == 2
    assert m["stage-compress-time-avg-us"] == 4.0 and m["stage-compress-record-total"] == 10
    assert math.isnan(float(m["stage-queue-time-avg-ms"])) and math.isnan(float(m["stage-in-flight-time-avg-ms"]))  # type: ignore[arg-type]
