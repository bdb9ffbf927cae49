"""The shop's demo and eval suite are found by the shop's name, as the installed
package registers them, and an application that carries its own keeps it."""

from __future__ import annotations

from agentbus.app import Application, DemoOptions, demo_of, eval_suite_of
from consumers.app import app as shop
from evals.demo import run_demo
from evals.run import run_eval


def test_the_shop_finds_its_demo_and_eval_suite_registered_under_its_name() -> None:
    # The shop does not name them.
    assert shop.demo is None
    assert shop.evaluate is None
    assert demo_of(shop) is run_demo
    assert eval_suite_of(shop) is run_eval


def test_an_application_without_a_registered_demo_has_none() -> None:
    other = Application(name="no-such-shop", catalog={})
    assert demo_of(other) is None
    assert eval_suite_of(other) is None


def test_a_demo_the_application_carries_comes_first() -> None:
    async def own(options: DemoOptions) -> int:
        return 0

    carried = Application(name=shop.name, catalog={}, demo=own)
    assert demo_of(carried) is own
