"""Pure bookkeeping of one producer's gap-free sequence: what has been seen, which holes are open.

State: ``high_water`` (every sequence up to it was seen), ``seen`` (sorted disjoint ranges above it),
``known_last`` (the highest sequence known to exist: seen, or reported by the producer) and ``gaps`` (the
holes in ``high_water+1 .. known_last``, each with when it was first noticed and how often a replay was
asked for it). Gaps keep their history when they shrink or split, so the grace period is not restarted by
a partial heal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

__all__ = ["Gap", "SequenceState"]


@dataclass(frozen=True, slots=True)
class Gap:
    start: int
    end: int
    since: datetime
    attempts: int = 0
    last_request_at: datetime | None = None
    lost: bool = False  # the producer no longer retains (part of) it: healing stopped

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start,
            "to": self.end,
            "since": self.since.isoformat(),
            "attempts": self.attempts,
            "last_request_at": None if self.last_request_at is None else self.last_request_at.isoformat(),
            "lost": self.lost,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Gap:
        last = doc.get("last_request_at")
        return cls(
            start=int(doc["from"]),
            end=int(doc["to"]),
            since=datetime.fromisoformat(doc["since"]),
            attempts=int(doc.get("attempts", 0)),
            last_request_at=None if last is None else datetime.fromisoformat(last),
            lost=bool(doc.get("lost", False)),
        )


def _merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _ranges_of(sequences: Iterable[int]) -> list[tuple[int, int]]:
    return _merge_ranges((s, s) for s in sequences)


@dataclass
class SequenceState:
    high_water: int = 0
    seen: list[tuple[int, int]] = field(default_factory=list)
    known_last: int = 0
    gaps: list[Gap] = field(default_factory=list)

    @property
    def max_seen(self) -> int:
        return self.seen[-1][1] if self.seen else self.high_water

    def observe(self, sequences: Iterable[int], now: datetime) -> None:
        """Record sequences as seen (duplicates and old ones are harmless)."""
        fresh = [s for s in sequences if s > self.high_water]
        if fresh:
            self.seen = _merge_ranges([*self.seen, *_ranges_of(fresh)])
            while self.seen and self.seen[0][0] <= self.high_water + 1:
                self.high_water = max(self.high_water, self.seen.pop(0)[1])
        self.known_last = max(self.known_last, self.max_seen)
        self._recompute_gaps(now)

    def report_last(self, last: int, now: datetime) -> None:
        """The producer says it has published up to ``last``: anything unseen below is a hole."""
        if last > self.known_last:
            self.known_last = last
            self._recompute_gaps(now)

    def mark_requested(self, gap: Gap, now: datetime) -> None:
        self.gaps = [
            replace(g, attempts=g.attempts + 1, last_request_at=now)
            if (g.start, g.end) == (gap.start, gap.end)
            else g
            for g in self.gaps
        ]

    def mark_lost(self, below: int) -> None:
        """Sequences below ``below`` are no longer retained by the producer: stop asking for them."""
        self.gaps = [replace(g, lost=True) if g.start < below else g for g in self.gaps]

    def settled_up_to(self) -> int:
        """The highest ``n`` such that every sequence up to ``n`` is recorded or given up as lost: the next
        event that may be appended without breaking the producer's order is ``n + 1``."""
        cursor = self.high_water
        lost = [(g.start, g.end) for g in self.gaps if g.lost]
        for start, end in _merge_ranges([*self.seen, *lost]):
            if start > cursor + 1:
                break
            cursor = max(cursor, end)
        return cursor

    def holes(self) -> list[tuple[int, int]]:
        holes: list[tuple[int, int]] = []
        cursor = self.high_water + 1
        for start, end in self.seen:
            if start > cursor:
                holes.append((cursor, start - 1))
            cursor = end + 1
        if self.known_last >= cursor:
            holes.append((cursor, self.known_last))
        return holes

    def _recompute_gaps(self, now: datetime) -> None:
        old = self.gaps
        gaps: list[Gap] = []
        for start, end in self.holes():
            overlapping = [g for g in old if g.start <= end and g.end >= start]
            if not overlapping:
                gaps.append(Gap(start, end, since=now))
                continue
            requested = [g.last_request_at for g in overlapping if g.last_request_at is not None]
            gaps.append(
                Gap(
                    start,
                    end,
                    since=min(g.since for g in overlapping),
                    attempts=max(g.attempts for g in overlapping),
                    last_request_at=max(requested) if requested else None,
                    lost=all(g.lost for g in overlapping),
                )
            )
        self.gaps = gaps

    def due(self, now: datetime, *, grace_seconds: float, retry_seconds: float) -> list[Gap]:
        """Gaps open longer than the grace period whose last replay request is old enough."""
        out = []
        for gap in self.gaps:
            if gap.lost or (now - gap.since).total_seconds() < grace_seconds:
                continue
            if (
                gap.last_request_at is not None
                and (now - gap.last_request_at).total_seconds() < retry_seconds
            ):
                continue
            out.append(gap)
        return out
