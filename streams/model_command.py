"""`rtscore model`: list and show versions; change what serves (promote, rollback, challenger,
A/B split, shadow) in the registry and then on the model-events topic, which every running
worker follows.

A change is checked whole before anything is written: every version it would serve must load
(its artifact's sha256 checks out) and be trained on the pipeline's feature spec. A refused
change writes nothing and publishes nothing; the serving versions stay.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.registry import Registry
    from streams.codecs import RecordCodec
    from streams.pipeline import Pipeline
    from streams.serving_state import ServingState
    from streams.settings import Settings

ACTIONS = ("list", "show", "serving", "promote", "rollback", "challenger", "split", "shadow")
OFF = "off"

USAGE = {
    "promote": "rtscore model promote NAME VERSION",
    "challenger": "rtscore model challenger NAME VERSION|off",
    "split": "rtscore model split NAME ALIAS=WEIGHT [ALIAS=WEIGHT …] | off",
    "shadow": "rtscore model shadow NAME ALIAS=SHARE [ALIAS=SHARE …] | off",
}


def add_parser(sub: Any) -> None:
    """The `model` command on the CLI's subparsers."""
    model = sub.add_parser(
        "model",
        help="list and show versions; promote, roll back, challenger, A/B split, shadow",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model.add_argument("action", choices=ACTIONS)
    model.add_argument("name", nargs="?", help="model name (default: the pipeline's)")
    model.add_argument(
        "values",
        nargs="*",
        metavar="VALUE",
        help="show/promote/challenger: version or alias; split: ALIAS=WEIGHT …; "
        "shadow: ALIAS=SHARE … (share of events, 0-1); `off` clears",
    )
    model.set_defaults(handler=model_command)


def model_command(settings: Settings, args: argparse.Namespace) -> int:
    from models.registry import Registry
    from streams.pipeline import load_pipeline

    registry = Registry(settings.registry_root)
    pipeline = load_pipeline(settings.pipeline, settings.schemas_dir)
    name = args.name or pipeline.model_name
    values: list[str] = list(args.values)
    if args.action == "list":
        _list(registry, name)
    elif args.action == "show":
        from models.lineage import render

        print(render(registry.describe(name, values[0] if values else "champion")))
    elif args.action == "serving":
        _serving(settings, registry, name)
    else:
        state = change(settings, registry, pipeline, args.action, name, values)
        print(state.detail)
        print(f"serving: {state.describe()}")
        print(f"published to {settings.topics.model_events}: running workers switch within seconds")
    return 0


def change(
    settings: Settings,
    registry: Registry,
    pipeline: Pipeline,
    action: str,
    name: str,
    values: list[str],
) -> ServingState:
    """Apply ``action`` to ``name``'s serving state: check, write the registry, publish.

    Returns the published :class:`~streams.serving_state.ServingState`.
    """
    from streams import model_events
    from streams.errors import ConfigError
    from streams.hot_swap import checked_version, load_routing
    from streams.serving_state import (
        CHALLENGER,
        CHAMPION,
        parse_weights,
        with_alias,
        with_shadows,
        with_split,
        without_alias,
    )

    codec = model_events.codec(settings.schemas_dir)
    current = asyncio.run(_current(settings, registry, pipeline, name, codec))
    alias_writes: list[tuple[str, int]] = []
    if action in ("promote", "challenger"):
        alias = CHAMPION if action == "promote" else CHALLENGER
        if len(values) != 1:
            raise ConfigError(f"{action} takes one version", hint=USAGE[action])
        if action == "challenger" and values[0] == OFF:
            new, detail = without_alias(current, CHALLENGER), f"{name}: challenger cleared"
        else:
            version = registry.resolve(name, values[0]).version
            checked_version(registry, pipeline, name, version)
            new = with_alias(current, alias, version)
            was = current.aliases.get(alias)
            detail = f"{name} v{version} is now the {alias}" + (f" (was v{was})" if was else "")
            alias_writes.append((alias, version))
    elif action in ("split", "shadow"):
        if not values:
            raise ConfigError(f"{action} needs weights or `off`", hint=USAGE[action])
        try:
            unit = "WEIGHT" if action == "split" else "SHARE"
            weights = {} if values == [OFF] else parse_weights(values, unit)
        except ValueError as exc:
            raise ConfigError(str(exc), hint=USAGE[action]) from None
        new = (with_split if action == "split" else with_shadows)(current, weights)
        detail = f"{name}: {action} " + (
            ", ".join(f"{a}={w:g}" for a, w in weights.items()) if weights else "off"
        )
    elif action == "rollback":
        new, detail = _rollback(registry, pipeline, current, name)
    else:
        raise ConfigError(f"unknown model action {action!r}", hint=", ".join(ACTIONS))
    new = dataclasses.replace(
        new,
        feature_spec_hash=pipeline.feature_spec_hash,
        action="clear_challenger" if action == "challenger" and values == [OFF] else action,
        detail=detail,
        actor=_actor(),
        time_ms=int(time.time() * 1000),
    )
    problems = new.problems()
    if problems:
        raise ConfigError(
            f"{detail}: cannot serve: " + "; ".join(problems),
            hint="set the alias first (`rtscore model challenger NAME VERSION`)",
        )
    load_routing(registry, pipeline, new)  # every version it serves loads and fits
    for alias, version in alias_writes:
        registry.set_alias(name, alias, version)
    asyncio.run(_publish(settings, new, codec))
    return new


def _rollback(
    registry: Registry, pipeline: Pipeline, current: ServingState, name: str
) -> tuple[ServingState, str]:
    from streams.hot_swap import ServingRefused, checked_version
    from streams.serving_state import CHAMPION, with_alias

    was = registry.aliases(name).get(CHAMPION)
    version = registry.rollback(name, CHAMPION).version
    try:
        checked_version(registry, pipeline, name, version)
    except ServingRefused:
        if was is not None:  # the registry's champion stays what serves
            registry.set_alias(name, CHAMPION, was)
        raise
    return with_alias(current, CHAMPION, version), f"{name} champion rolled back to v{version}"


async def _current(
    settings: Settings, registry: Registry, pipeline: Pipeline, name: str, codec: RecordCodec
) -> ServingState:
    from streams import model_events
    from streams.serving_state import CHAMPION, ServingState
    from streams.topics import ensure_topics

    await ensure_topics(settings)
    state, _ = await model_events.read_latest(
        settings.kafka_bootstrap, settings.topics.model_events, name, codec
    )
    if state is not None:
        return state
    champion = registry.aliases(name).get(CHAMPION)
    aliases = {} if champion is None else {CHAMPION: champion}
    return ServingState(name, aliases, pipeline.feature_spec_hash)


async def _publish(settings: Settings, state: ServingState, codec: RecordCodec) -> None:
    from streams import model_events

    await model_events.publish_state(
        settings.kafka_bootstrap, settings.topics.model_events, state, codec
    )


def _list(registry: Registry, name: str) -> None:
    aliases = registry.aliases(name)
    for v in registry.versions(name):
        held = ",".join(a for a, ver in aliases.items() if ver == v.version)
        auc = v.metadata.get("metrics", {}).get("auc_roc")
        print(
            f"{v.name} v{v.version}  {v.metadata.get('created_at', '')}  "
            f"auc_roc={auc if auc is None else round(auc, 4)}  {held}"
        )


def _serving(settings: Settings, registry: Registry, name: str) -> None:
    from streams import model_events
    from streams.topics import ensure_topics

    codec = model_events.codec(settings.schemas_dir)
    topic = settings.topics.model_events

    async def read() -> tuple[ServingState | None, int]:
        await ensure_topics(settings)
        return await model_events.read_latest(settings.kafka_bootstrap, topic, name, codec)

    state, _ = asyncio.run(read())
    if state is None:
        champion = registry.aliases(name).get("champion")
        print(f"nothing published on {topic}; workers serve the registry's champion v{champion}")
        return
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.time_ms / 1000))
    print(state.describe())
    print(f"last change: {state.detail} ({state.action} by {state.actor} at {when})")


def _actor() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):
        return "unknown"
