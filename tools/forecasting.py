"""Forecasting engines: demand per day over a horizon, with its uncertainty.

`statsforecast` (the `forecast` extra) does the modelling when it is installed:
AutoETS (level, damped trend, weekly seasonality when the series is long enough,
chosen by information criterion) for regular demand, Croston SBA for intermittent
demand. Without it a small fallback in numpy stands in: damped Holt with fixed
smoothing and weekly indices, and SBA. Both answer in the same form, so the tool
and the policy do not know which one ran; `ENGINE` says which.

Neither handles a calendar: cycles of a month or a year are the caller's (the
same phase of earlier cycles, in `tools.forecast`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

INTERMITTENT = 0.5  # share of days without a sale from which demand counts as intermittent
MIN_MODEL_DAYS = 7  # fewer days than this: their mean, as no model fits a handful of points
WEEK = 7
TREND_T = 2.5
Z_80 = 1.2816


@dataclass(frozen=True)
class Fit:
    """Expected units per day ahead and the standard deviation of each day's demand."""

    method: str
    mean: tuple[float, ...]
    sd: tuple[float, ...]


def _library() -> Any:
    try:
        from statsforecast import models
    except ImportError:
        return None
    return models


_MODELS: Any = None
_LOADED = False


def _models() -> Any:
    # Imported on first use: the library takes seconds to import, and most processes
    # that import the restock tools never forecast.
    global _MODELS, _LOADED
    if not _LOADED:
        _MODELS, _LOADED = _library(), True
    return _MODELS


def engine() -> str:
    if _models() is None:
        return "fallback"
    return f"statsforecast {metadata.version('statsforecast')}"


def fit(series: Sequence[float], horizon: int) -> Fit:
    """Forecast `horizon` days after `series` (units per day, oldest first, at least one day)."""
    y = np.asarray(series, dtype=float)
    horizon = max(1, horizon)
    if len(y) < MIN_MODEL_DAYS:
        mean = float(y.mean())
        # Counts of sales: at least Poisson's spread, and more for what a few days cannot tell.
        sd = math.sqrt(max(mean, float(y.var()))) * (1 + 1 / math.sqrt(len(y)))
        return Fit(f"mean of {len(y)} day(s)", (mean,) * horizon, (sd,) * horizon)
    if float((y == 0).mean()) >= INTERMITTENT:
        return _intermittent(y, horizon)
    models = _models()
    if models is not None:
        try:
            return _ets(models, y, horizon)
        except Exception:  # a series the library cannot fit gets the fallback
            pass
    return _holt(y, horizon)


def trending(y: Sequence[float] | np.ndarray) -> bool:
    """A trend clear of the noise: the slope of weekly totals over TREND_T standard errors."""
    weeks = len(y) // WEEK
    if weeks < 4:
        return False
    totals = np.asarray(y[len(y) - weeks * WEEK :], dtype=float).reshape(weeks, WEEK).sum(axis=1)
    x = np.arange(weeks, dtype=float)
    slope, intercept = np.polyfit(x, totals, 1)
    residuals = totals - (intercept + slope * x)
    spread = float(np.sqrt(residuals.var(ddof=2) / ((x - x.mean()) ** 2).sum()))
    return bool(abs(slope) > TREND_T * spread) if spread > 0 else bool(slope != 0)


def _ets(models: Any, y: np.ndarray, horizon: int) -> Fit:
    season = WEEK if len(y) >= 3 * WEEK else 1
    # A trend only where the weeks show one: chosen by information criterion alone, a
    # trend follows a burst of demand and multiplies it over the horizon.
    trend = trending(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A trend the weeks show clearly is taken at its slope: damping it is a bet that it
        # ends within the horizon, which a few weeks cannot tell.
        model = (
            models.AutoETS(season_length=season, model="AAZ", damped=False)
            if trend
            else (models.AutoETS(season_length=season, model="ANZ"))
        )
        out = model.forecast(y=y, h=horizon, level=[80])
    mean = np.clip(out["mean"], 0.0, None)
    sd = np.maximum((out["hi-80"] - out["mean"]) / Z_80, math.sqrt(max(float(y.mean()), 0.0)) / 2)
    label = "AutoETS" + (" with a trend" if trend else "")
    return Fit(label, tuple(float(v) for v in mean), tuple(float(v) for v in sd))


def _intermittent(y: np.ndarray, horizon: int) -> Fit:
    models = _models()
    rate: float | None = None
    if models is not None:
        try:
            rate = float(models.CrostonSBA().forecast(y=y, h=1)["mean"][0])
        except Exception:  # the fallback's SBA answers instead
            rate = None
    if rate is None or not math.isfinite(rate):
        rate = _sba(y)
    # Day to day the units come in lumps: the spread is the lumps', not Poisson's.
    sd = math.sqrt(max(float(y.var()), rate))
    return Fit("Croston SBA (intermittent)", (rate,) * horizon, (sd,) * horizon)


def _sba(y: np.ndarray, alpha: float = 0.1) -> float:
    """Croston's method with the Syntetos-Boylan correction."""
    sizes = y[y > 0]
    if len(sizes) == 0:
        return 0.0
    gaps = np.diff(np.concatenate(([-1], np.flatnonzero(y > 0)))).astype(float)
    size, gap = float(sizes[0]), float(gaps[0])
    for s, g in zip(sizes[1:], gaps[1:], strict=True):
        size += alpha * (float(s) - size)
        gap += alpha * (float(g) - gap)
    return (1 - alpha / 2) * size / gap


def _holt(y: np.ndarray, horizon: int, alpha: float = 0.2, phi: float = 0.9) -> Fit:
    """Damped additive Holt with weekly indices: the fallback for regular demand."""
    beta = 0.05 if trending(y) else 0.0
    seasonal = len(y) >= 3 * WEEK
    index = np.zeros(WEEK)
    if seasonal:
        weeks = len(y) // WEEK * WEEK
        block = y[-weeks:].reshape(-1, WEEK)
        index = block.mean(axis=0) - block.mean()
    offset = len(y) % WEEK
    level, trend = float(y[:WEEK].mean()), 0.0
    errors = []
    for t, value in enumerate(y):
        season = index[(t - offset) % WEEK] if seasonal else 0.0
        predicted = level + phi * trend + season
        errors.append(float(value) - predicted)
        previous = level
        level = alpha * (float(value) - season) + (1 - alpha) * (level + phi * trend)
        trend = beta * (level - previous) + (1 - beta) * phi * trend
    sigma = float(np.std(errors[WEEK:])) if len(errors) > WEEK else float(np.std(errors))
    mean, sd, damp = [], [], 0.0
    for h in range(1, horizon + 1):
        damp += phi**h
        t = len(y) + h - 1
        season = index[(t - offset) % WEEK] if seasonal else 0.0
        mean.append(max(0.0, level + damp * trend + season))
        sd.append(sigma * math.sqrt(1 + (h - 1) * alpha**2))
    return Fit("damped Holt (fallback)", tuple(mean), tuple(sd))
