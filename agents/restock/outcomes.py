"""What an order of Q units costs the shop, in expectation over what demand may do.

The shop's economics, as the policy weighs them:

- the order arrives after the lead time; until then the shop sells what it has
  and turns away what it cannot serve (lost sales, no backorders);
- over the review period after the arrival, a unit short costs three times a
  unit left over; stock up to the safety stock the shop keeps for ordinary
  variation is not "left over";
- stock still under the reorder point once the order is in silences the SKU
  (inventory.low fires once per downward crossing): no signal comes, and the
  next review period's demand beyond what is left goes unserved until the
  weekly review notices.

Demand over each stretch (the lead time, the review period, the period after)
is drawn from gamma distributions with the forecast's mean and spread, with a
shared factor for how far the forecast's level itself may be off, so that a
level set too low shows over all three stretches at once. The draws are the
same for every call (a fixed seed): the same facts give the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHORT_COST = 3.0  # a unit short against a unit left over
DRAWS = 2000


@dataclass(frozen=True)
class Stretch:
    """Expected units over a stretch of days and their standard deviation."""

    mean: float
    sd: float


@dataclass(frozen=True)
class Situation:
    position: float  # available plus on order (what is on order arrives first)
    lead: Stretch
    review: Stretch
    after: Stretch  # the review period after, if the SKU is silenced
    safety: float  # left at the end of the review period without counting as over
    reorder_point: int
    level_error: float  # relative sd of the forecast's level


@dataclass(frozen=True)
class Choice:
    quantity: int
    expected_cost: float
    short: float  # expected units short over the review period (and after, if silenced)
    over: float  # expected units left over
    silenced: float  # chance the stock is still under the reorder point on arrival
    on_arrival: float  # expected stock once the order is in


class Outcomes:
    """Draws of demand for a situation, and what each order quantity would cost."""

    def __init__(self, situation: Situation) -> None:
        self.situation = situation
        rng = np.random.default_rng(20)
        shared = _factor(rng, situation.level_error)
        self.lead = shared * _draw(rng, situation.lead)
        self.review = shared * _draw(rng, situation.review)
        self.after = shared * _draw(rng, situation.after)
        # What is left when the order arrives: the shop sells what it has meanwhile.
        self.arrival = np.maximum(0.0, situation.position - self.lead)

    def on_arrival(self) -> float:
        """Expected stock when the order arrives, before it is put away."""
        return float(self.arrival.mean())

    def silencing(self, quantity: int) -> float:
        """The chance the stock is still under the reorder point once the order is in."""
        return float((self.arrival + quantity < self.situation.reorder_point).mean())

    def left_after_review(self, quantity: int) -> float:
        """Expected stock at the end of the review period after the arrival."""
        return float(np.maximum(0.0, self.arrival + quantity - self.review).mean())

    def clear_of_silence(self, at_least: int, risk: float) -> int:
        """The least quantity from `at_least` up that leaves the stock under the reorder
        point on arrival with a chance of `risk` at most."""
        needed = np.quantile(self.situation.reorder_point - self.arrival, 1 - risk)
        return max(at_least, math.ceil(float(needed)))

    def best(self, at_least: int = 0) -> Choice:
        """The quantity from `at_least` up with the least expected cost."""
        s = self.situation
        top = s.reorder_point + s.review.mean + s.after.mean + 4 * (s.review.sd + s.after.sd)
        top = max(at_least + 1, math.ceil(top - self.on_arrival()) + 1)
        quantities = np.arange(at_least, top + 1)
        stock = self.arrival[None, :] + quantities[:, None]
        short = np.maximum(0.0, self.review[None, :] - stock)
        left = np.maximum(0.0, stock - self.review[None, :])
        over = np.maximum(0.0, left - s.safety)
        silenced = stock < s.reorder_point
        unserved = np.where(silenced, np.maximum(0.0, self.after[None, :] - left), 0.0)
        cost = SHORT_COST * (short + unserved) + over
        expected = cost.mean(axis=1)
        best = int(np.argmin(expected))
        return Choice(
            quantity=int(quantities[best]),
            expected_cost=float(expected[best]),
            short=float((short[best] + unserved[best]).mean()),
            over=float(over[best].mean()),
            silenced=float(silenced[best].mean()),
            on_arrival=float(stock[best].mean()),
        )


def _draw(rng: np.random.Generator, stretch: Stretch) -> np.ndarray:
    if stretch.mean <= 0:
        return np.zeros(DRAWS)
    if stretch.sd <= 0:
        return np.full(DRAWS, stretch.mean)
    shape = (stretch.mean / stretch.sd) ** 2
    return rng.gamma(shape, stretch.mean / shape, DRAWS)


def _factor(rng: np.random.Generator, error: float) -> np.ndarray:
    if error <= 0:
        return np.ones(DRAWS)
    shape = 1 / error**2
    return rng.gamma(shape, 1 / shape, DRAWS)
