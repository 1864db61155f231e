"""Plain snapshots of a Metadata response, free of kio types.

This module owns the shape in which the rest of kprod sees cluster metadata: frozen,
slotted dataclasses of plain ints, strings, tuples and dicts, whatever Metadata
version was spoken. It does not know how metadata is fetched, cached or refreshed
(that is ``kprod._core``'s job) and imports nothing but the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MetadataSnapshot", "PartitionSnapshot", "TopicSnapshot"]


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """One partition: its leader (-1 if none), the leader epoch (-1 before Metadata v7), its error code."""

    leader_id: int
    leader_epoch: int
    error_code: int
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicSnapshot:
    """One topic: its error code (e.g. 3 UNKNOWN_TOPIC_OR_PARTITION) and partitions by index."""

    error_code: int
    partitions: dict[int, PartitionSnapshot] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetadataSnapshot:
    """A Metadata response: brokers by node id as (host, port), controller (-1 if unknown),
    cluster id (None before v2) and topics by name."""

    brokers: dict[int, tuple[str, int]]
    controller_id: int
    cluster_id: str | None
    topics: dict[str, TopicSnapshot]
