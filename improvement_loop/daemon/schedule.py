"""When the next cycle is due: a cron expression in a time zone (croniter over zoneinfo, so 02:00 stays 02:00
local across daylight-saving changes).

`due` compares the latest scheduled time at or before now with the last one that ran: after downtime
that spans several scheduled times, only the latest runs, once. The first time a daemon ever starts
nothing is due: it waits for the next scheduled time instead of running at once. When clocks go back,
croniter yields a wall-clock time twice (02:00 CEST, then 02:00 CET); it runs once.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter


def latest(cron: str, zone: ZoneInfo, now: float) -> float:
    """The latest scheduled time at or before `now` (epoch seconds)."""
    at = datetime.fromtimestamp(now, zone)
    if at.second == 0 and at.microsecond == 0 and croniter.match(cron, at):
        return now
    return croniter(cron, at).get_prev(float)


def upcoming(cron: str, zone: ZoneInfo, now: float) -> float:
    """The first scheduled time after `now`."""
    return croniter(cron, datetime.fromtimestamp(now, zone)).get_next(float)


def due(cron: str, zone: ZoneInfo, last_scheduled: float | None, now: float) -> tuple[float | None, float]:
    """(the scheduled time to run now or None, the new last_scheduled to record)."""
    newest = latest(cron, zone, now)
    if last_scheduled is None:
        return None, newest
    if newest > last_scheduled and _wall(newest, zone) != _wall(last_scheduled, zone):
        return newest, newest
    return None, max(newest, last_scheduled)


def _wall(at: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at, zone).replace(tzinfo=None)
