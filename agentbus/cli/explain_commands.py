"""`explain EVENT_ID`: where an event went, what it caused, and where it stopped."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.tree import Tree

from agentbus.bootstrap import transport_for
from agentbus.cli.common import application, codec, fail, print_json, run_async, settings
from agentbus.deadletters import DeadLetter, list_dead_letters
from agentbus.explain import Explanation, Node, explain
from agentbus.settings import Settings
from agentbus.store import Database, open_database
from agentbus.store.database import sqlite_path


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def explain_command(
    event_id: Annotated[str, typer.Argument(help="The id of the event to follow.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    amqp_url: Annotated[
        str | None,
        typer.Option("--amqp-url", help="Overrides AMQP_URL; dead letters are read from there."),
    ] = None,
) -> None:
    """The fate of one event: who applied it and when, what it caused, dead letters, trace."""
    config = settings()
    app = application()
    names = list(app.services)
    broker = amqp_url or config.amqp_url

    async def go() -> tuple[Explanation | None, str | None]:
        databases: dict[str, Database] = {}
        for name in names:
            if config.database_url or sqlite_path(name, config.data_dir).exists():
                databases[name] = open_database(
                    name,
                    codec(app),
                    url=config.database_url,
                    data_dir=config.data_dir,
                    outage_limit=0,
                )
        letters: list[DeadLetter] = []
        note = None
        if broker:
            queues = [service.queue for service in app.resolve(["all"])]
            # RabbitMQ's dead-letter queues, even beside Kafka: there is where they are read.
            rabbit = replace(config, amqp_url=broker, kafka_bootstrap_servers=None)
            letters, note = await _dead_letters(rabbit, queues)
        else:
            note = "no AMQP_URL: dead-letter queues not searched"
        try:
            return await explain(event_id, databases, letters), note
        finally:
            for database in databases.values():
                await database.close()

    found, note = run_async(go)
    if found is None:
        where = (config.database_url and "DATABASE_URL") or str(config.data_dir)
        fail(f"no service here has seen event {event_id!r} (looked in {where})")
    if as_json:
        print_json({**found.to_json(), "note": note})
        return
    console = Console()
    console.print(_tree(found.root))
    if found.truncated:
        console.print("[yellow]the flow is larger than shown: cut at 500 events[/]")
    if note:
        console.print(f"[dim]{note}[/]")


async def _dead_letters(config: Settings, queues: list[str]) -> tuple[list[DeadLetter], str | None]:
    transport = transport_for(config, name="agentbus explain", embedded=False)
    try:
        await transport.start()
    except Exception as exc:  # the databases still tell most of the story
        return [], f"dead-letter queues not searched: {type(exc).__name__}: {exc}"
    try:
        return await list_dead_letters(transport, queues), None
    finally:
        await transport.close()


def _tree(root: Node) -> Tree:
    tree = Tree(_label(root, head=True))
    _fill(tree, root)
    return tree


def _label(node: Node, *, head: bool = False) -> str:
    kind = node.type or "event of unknown type (not emitted by a service here)"
    text = f"[bold]{kind}[/] {node.event_id}"
    if node.produced_by:
        published = (
            f", published {node.published_at}" if node.published_at else ", not published yet"
        )
        text += f" [dim](from {node.produced_by}{published})[/]"
    if head and node.trace_id:
        text += f"\ntrace {node.trace_id}"
    return text


def _fill(tree: Tree, node: Node) -> None:
    for applied in node.applied_by:
        tree.add(f"[green]applied by {applied['consumer']}[/] at {applied['at']}")
    for letter in node.dead_letters:
        tree.add(
            f"[red]dead-lettered in {letter['queue']}[/]: {letter['error_code']}"
            f" - {letter['detail']} (attempts {letter['attempts']})"
        )
    for run in node.agent_runs:
        text = f"[cyan]{run['agent']} run {run['status']}[/]"
        if run["suggestion_id"]:
            text += f" -> suggestion {run['suggestion_id']}"
        if run["model"]:
            text += f" by {run['model']}"
        tree.add(text)
    if node.suggestion:
        tree.add(f"[magenta]suggestion {node.suggestion['status']}[/]")
    for child in node.caused:
        _fill(tree.add(_label(child)), child)
