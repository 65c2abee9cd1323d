"""Date shifting and age capping that always yield valid DICOM values.

Each patient has one offset in days; shifting by whole days keeps intervals and weekdays-free
ordering within the patient, and leaves times of day as they were. Values that cannot be read as
dates are not guessed at: callers blank them.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(.*)")
_AS = re.compile(r"(\d{3})([DWMY])")
_DAYS_PER_UNIT = {"D": 1, "W": 7, "M": 365.25 / 12, "Y": 365.25}


def _shifted(year: int, month: int, day: int, days: int) -> date | None:
    try:
        return date(year, month, day) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None


def shift_date(value: str, days: int) -> str | None:
    """A DA value (YYYYMMDD, or the old YYYY.MM.DD) moved by `days`; None if it is not a date."""
    match = _DA.fullmatch(value.strip())
    if match is None:
        return None
    moved = _shifted(*(int(g) for g in match.groups()), days)
    return moved.strftime("%Y%m%d") if moved else None


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value moved by `days`, keeping its precision, time, fraction and UTC offset."""
    match = _DT.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, rest = match.groups()
    if rest and not (month and day):
        return None
    moved = _shifted(int(year), int(month or 1), int(day or 1), days)
    if moved is None:
        return None
    text = f"{moved.year:04d}"
    text += f"{moved.month:02d}" if month else ""
    text += f"{moved.day:02d}" if day else ""
    return text + rest


def age_in_years(value: str) -> float | None:
    match = _AS.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / 365.25


def cap_age(value: str, max_years: int) -> str:
    """HIPAA Safe Harbor: every age above `max_years` becomes the one category max_years + 1."""
    years = age_in_years(value)
    if years is not None and years > max_years:
        return f"{max_years + 1:03d}Y"
    return value
