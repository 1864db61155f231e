"""The observed compression ratio per topic, as Java's CompressionRatioEstimator keeps it.

Owns one number per topic: compressed bytes / uncompressed bytes of the
records section, learned from every batch compressed. Batches fill to
``batch.size`` by their uncompressed size; the drain uses this ratio to
estimate how many compressed batches fit in ``max.request.size``. The
estimate worsens quickly (+0.05 per worse batch) and improves slowly
(-0.005 per better batch), so a request rarely ends up over the limit.
"""

from __future__ import annotations

__all__ = ["CompressionRatioEstimator"]

_DETERIORATE_STEP = 0.05
_IMPROVE_STEP = 0.005
_ESTIMATION_FACTOR = 1.05  # Java's COMPRESSION_RATE_ESTIMATION_FACTOR: a safety margin
_HEADER_BYTES = 61


class CompressionRatioEstimator:
    """Per-topic compression ratio estimates, starting at 1.0 (no gain assumed)."""

    __slots__ = ("_ratios",)

    def __init__(self) -> None:
        self._ratios: dict[str, float] = {}

    def ratio(self, topic: str) -> float:
        """The current estimate for ``topic`` (1.0 until a batch was compressed)."""
        return self._ratios.get(topic, 1.0)

    def ratios(self) -> dict[str, float]:
        """Every topic's current estimate."""
        return dict(self._ratios)

    def observe(self, topic: str, uncompressed_bytes: int, compressed_bytes: int) -> float:
        """Learn from one batch (sizes of the whole batch, header included); return the new estimate."""
        records = uncompressed_bytes - _HEADER_BYTES
        if records <= 0:
            return self.ratio(topic)
        observed = max(0.0, (compressed_bytes - _HEADER_BYTES) / records)
        current = self._ratios.get(topic, 1.0)
        if observed > current:
            current = max(current + _DETERIORATE_STEP, observed)
        elif observed < current:
            current = max(current - _IMPROVE_STEP, observed)
        self._ratios[topic] = current
        return current

    def estimated_size(self, topic: str, uncompressed_bytes: int) -> int:
        """Estimated wire size of a batch of ``uncompressed_bytes`` once compressed (bytes)."""
        ratio = self._ratios.get(topic)
        if ratio is None:
            return uncompressed_bytes
        records = uncompressed_bytes - _HEADER_BYTES
        return _HEADER_BYTES + int(records * ratio * _ESTIMATION_FACTOR)
