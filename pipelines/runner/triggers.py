"""Schedules of the runner: APScheduler triggers for a crontab (UTC) or a fixed interval,
and the latest slot a trigger had at a given time (the slot a run is recorded under).

`--every` intervals are anchored at 2000-01-01T00:00Z, so every runner with the same
interval shares the same slots (every 30 s: :00 and :30) and the lease decides which one
runs each slot. Crontab days of week are numbered as cron numbers them (0 or 7 = Sunday).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


def make_trigger(*, cron: str | None = None, every: float | None = None):
    """An APScheduler trigger for a 5-field crontab (UTC) or a fixed interval in seconds."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if (cron is None) == (every is None):
        raise ValueError("give exactly one of cron or every")
    if cron is not None:
        fields = cron.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields in crontab {cron!r}; need 5")
        minute, hour, day, month, dow = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_cron_day_of_week(dow),
            timezone=UTC,
        )
    if every <= 0:
        raise ValueError("the interval must be positive")
    return IntervalTrigger(seconds=every, start_date=INTERVAL_ANCHOR, timezone=UTC)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day_of_week(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as day names: APScheduler 3 numbers days from
    Monday = 0, so `CronTrigger.from_crontab("0 3 * * 1")` would fire on Tuesdays.
    """
    days: list[int] = []
    for token in field.lower().split(","):
        if not re.fullmatch(r"[\d*/-]+", token):
            return field  # names (mon-fri) already mean the same in both
        rng, _, step = token.partition("/")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (int(x) for x in rng.split("-", 1))
        else:
            lo = hi = int(rng)
            if step:
                hi = 6
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"bad day of week {field!r}")
        days.extend(d % 7 for d in range(lo, hi + 1, int(step) if step else 1))
    return ",".join(_DAY_NAMES[d] for d in sorted(set(days)))


def latest_slot(trigger, now: datetime, lookback: timedelta = timedelta(days=8)) -> datetime | None:
    """The latest fire time of `trigger` at or before `now` (None if none in `lookback`)."""
    from apscheduler.triggers.interval import IntervalTrigger

    if isinstance(trigger, IntervalTrigger):
        step = trigger.interval.total_seconds()
        n = (now - trigger.start_date).total_seconds() // step
        return trigger.start_date + timedelta(seconds=n * step) if n >= 0 else None
    # Cron: walk forward from the lookback; day-by-day first so yearly crons stay cheap.
    start = now - lookback
    t = trigger.get_next_fire_time(None, start)
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return last
