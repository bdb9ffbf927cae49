"""Forecasting engines: demand per day over a horizon, with its uncertainty.

What a series shows decides the model, each part tested before it is used:

- a few days only: their mean;
- mostly days without a sale: ADIDA, for intermittent demand;
- nothing but a level (no trend, no weekly pattern beyond chance): the mean of the
  last four weeks, the estimate a buyer checks on paper;
- a trend (a log-linear Poisson regression whose slope stands TREND_T standard
  errors from zero) or days of the week that differ (an analysis of variance at
  the 1% level): statsforecast's AutoETS, with a trend where the test found one;
  should its forecast head the other way from the regression's trend, the two
  readings disagree and the level above stands.

`statsforecast` (the `forecast` extra) runs AutoETS and ADIDA when installed.
Without it a small fallback in numpy stands in: the regression's own trend carried
ahead, damped Holt with weekly indices, and the mean of four weeks for intermittent
demand. Both answer in the same form, so the tool and the policy do not know which
one ran; `engine()` says which.

Neither handles a calendar: cycles of a month or a year, and promotions, are
memory's (`tools.demand_patterns`). So is a fall too slow to show in eight weeks:
`fall` looks for a steady one over sixteen.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

import numpy as np

INTERMITTENT = 0.5  # share of days without a sale from which demand counts as intermittent
MIN_MODEL_DAYS = 7  # fewer days than this: their mean, as no model fits a handful of points
WEEK = 7
TREND_T = 2.0
LEVEL_DAYS = 28
Z_80 = 1.2816
FALL_WEEKS = 16  # how far back memory is searched for a steady fall
SLOPE_PRIOR = 0.02  # sd of the daily log-slope demand is expected to have, before the data
STEADY = 1.5  # the most scatter around a fall, against Poisson counts', that reads as one


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
    found = _fit(np.asarray(series, dtype=float), horizon)
    # Plain floats: forecasts are checkpointed and quoted to the model as JSON.
    return Fit(found.method, tuple(map(float, found.mean)), tuple(map(float, found.sd)))


def _fit(y: np.ndarray, horizon: int) -> Fit:
    horizon = max(1, horizon)
    if len(y) < MIN_MODEL_DAYS:
        mean = float(y.mean())
        # Counts of sales: at least Poisson's spread, and more for what a few days cannot tell.
        sd = math.sqrt(max(mean, float(y.var()))) * (1 + 1 / math.sqrt(len(y)))
        return Fit(f"mean of {len(y)} day(s)", (mean,) * horizon, (sd,) * horizon)
    if float((y == 0).mean()) >= INTERMITTENT:
        return _intermittent(y, horizon)
    found = trend(y)
    sloped = found is not None and abs(found.z) >= TREND_T
    seasonal = weekly(y)
    if not sloped and not seasonal:
        # Nothing but a level: the mean of the last weeks is as good an estimate as any
        # model's, and the one a buyer can check on paper.
        return _level(y, horizon)
    if sloped and not seasonal and found is not None and _models() is None:
        # Without the library, the regression's own trend is carried ahead.
        return _projected(found, horizon)
    models = _models()
    if models is not None:
        try:
            fitted = _ets(models, y, horizon)
        except Exception:  # a series the library cannot fit gets the fallback
            return _holt(y, horizon)
        if sloped and found is not None and _against(fitted, found):
            # The model was chosen for the trend the weeks show, and its own runs the
            # other way (its smoothing reads a lull after a rise as a fall): two readings
            # of the weeks that disagree on the direction say no more than the level.
            level = _level(y, horizon)
            return replace(level, method=f"{level.method} (the trends disagreed)")
        return fitted
    return _holt(y, horizon)


def _level(y: np.ndarray, horizon: int) -> Fit:
    recent = y[-LEVEL_DAYS:]
    mean, sd = float(recent.mean()), float(recent.std())
    return Fit(f"mean of the last {len(recent)} days", (mean,) * horizon, (sd,) * horizon)


def _against(fitted: Fit, found: Trend) -> bool:
    """Whether a forecast heads the other way from a trend found in the data."""
    if len(fitted.mean) < 2:
        return False
    heading = float(np.polyfit(np.arange(len(fitted.mean)), fitted.mean, 1)[0])
    return heading * found.slope < 0


def weekly(y: Sequence[float] | np.ndarray) -> bool:
    """Days of the week that differ beyond chance: a one-way analysis of variance of the
    last whole weeks by weekday, at the 1% level."""
    weeks = len(y) // WEEK
    if weeks < 3:
        return False
    block = np.asarray(y[len(y) - weeks * WEEK :], dtype=float).reshape(weeks, WEEK)
    within = float(block.var(axis=0, ddof=1).mean())
    between = float(block.mean(axis=0).var(ddof=1)) * weeks
    if within <= 0:
        return between > 0
    # F(6, 7(weeks - 1)) at 1%: 4.0 for three weeks, 3.3 for eight.
    return between / within > (3.3 if weeks >= 6 else 4.0)


@dataclass(frozen=True)
class Trend:
    """A log-linear trend of a Poisson rate fitted over whole weeks of days."""

    intercept: float  # log of the rate at the middle of the days fitted
    slope: float  # per day, on the log scale
    z: float  # the slope over its standard error
    dispersion: float  # variance over mean around the trend (1 for Poisson)
    covariance: np.ndarray  # of (intercept, slope)
    middle: float  # the day (counted back from the last, negative) the intercept is at


def trend(y: Sequence[float] | np.ndarray) -> Trend | None:
    """The log-linear Poisson regression of the last whole weeks (at least four, so a
    weekly pattern cannot tilt it), by iteratively reweighted least squares."""
    weeks = len(y) // WEEK
    if weeks < 4:
        return None
    days = np.asarray(y[len(y) - weeks * WEEK :], dtype=float)
    if days.sum() <= 0:
        return None
    t = np.arange(len(days), dtype=float) - (len(days) - 1) / 2
    a, b = math.log(days.mean()), 0.0
    for _ in range(30):
        mu = np.exp(a + b * t)
        gradient = np.array([np.sum(days - mu), np.sum((days - mu) * t)])
        hessian = np.array([[mu.sum(), (mu * t).sum()], [(mu * t).sum(), (mu * t * t).sum()]])
        step = np.linalg.solve(hessian, gradient)
        a, b = a + float(step[0]), b + float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    mu = np.exp(a + b * t)
    dispersion = max(1.0, float(np.sum((days - mu) ** 2 / mu) / (len(days) - 2)))
    covariance = np.linalg.inv(hessian) * dispersion
    z = b / math.sqrt(float(covariance[1, 1]))
    return Trend(a, b, z, dispersion, covariance, -(len(days) - 1) / 2 - 1)


def trending(y: Sequence[float] | np.ndarray) -> bool:
    """A trend clear of the noise: the log-linear slope over TREND_T standard errors."""
    found = trend(y)
    return found is not None and abs(found.z) >= TREND_T


def fall(series: Sequence[float], horizon: int) -> Fit | None:
    """A steady fall over up to FALL_WEEKS whole weeks, carried ahead; None where none shows.

    What memory adds to the eight weeks the models see: a fall too slow to tell from noise
    in eight weeks stands out over sixteen. It is the log-linear Poisson regression of the
    whole weeks (`trend`), taken where its slope stands TREND_T standard errors below flat
    and the days scatter around it no more than STEADY times as Poisson counts would (the
    end of a season or a step down fits a line badly, and is left to the patterns and the
    level). The slope is shrunk toward flat by its own uncertainty (a normal prior of sd
    SLOPE_PRIOR a day) before it is carried ahead. Only falls: a rise is the models', whose
    additive trend does not compound.
    """
    y = np.asarray(series, dtype=float)[-FALL_WEEKS * WEEK :]
    if float((y[-2 * LEVEL_DAYS :] == 0).mean()) >= INTERMITTENT:
        return None
    found = trend(y)
    if found is None or found.z > -TREND_T or found.dispersion > STEADY:
        return None
    uncertainty = float(found.covariance[1, 1])
    slope = found.slope * SLOPE_PRIOR**2 / (SLOPE_PRIOR**2 + uncertainty)
    projected = _projected(replace(found, slope=slope), horizon)
    weeks = len(y) // WEEK
    return Fit(
        f"a fall of {-slope:.1%} a day over {weeks} weeks (log-linear)",
        projected.mean,
        projected.sd,
    )


def _projected(found: Trend, horizon: int) -> Fit:
    """The trend carried ahead (at most tripling or thirding the rate of the last day), with
    the spread of the days' counts and of the trend itself."""
    last = math.exp(found.intercept + found.slope * -found.middle)
    mean, sd = [], []
    for h in range(1, horizon + 1):
        t = -found.middle + h  # days after the middle of the days fitted
        rate = min(max(last * math.exp(found.slope * h), last / 3), last * 3)
        var_log = float(
            found.covariance[0, 0] + t * t * found.covariance[1, 1] + 2 * t * found.covariance[0, 1]
        )
        mean.append(rate)
        sd.append(math.sqrt(found.dispersion * rate + rate * rate * var_log))
    return Fit("log-linear trend", tuple(mean), tuple(sd))


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
    """ADIDA: the days summed into buckets as long as the mean gap between sales,
    smoothed, and spread back over the days; without the library, the mean of the last
    four weeks (which is unbiased where Croston's variants lean one way or the other)."""
    models = _models()
    rate: float | None = None
    method = "ADIDA (intermittent)"
    if models is not None:
        try:
            rate = float(models.ADIDA().forecast(y=y, h=1)["mean"][0])
        except Exception:  # the mean answers instead
            rate = None
    if rate is None or not math.isfinite(rate):
        rate = float(y[-LEVEL_DAYS:].mean())
        method = f"mean of the last {len(y[-LEVEL_DAYS:])} days (intermittent)"
    # Day to day the units come in lumps: the spread is the lumps', not Poisson's.
    sd = math.sqrt(max(float(y.var()), rate))
    return Fit(method, (rate,) * horizon, (sd,) * horizon)


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
