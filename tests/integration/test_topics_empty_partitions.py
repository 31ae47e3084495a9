"""Which partitions of a real topic are empty: those with no record, and only those."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from streams.topics import (
    EmptyPartitions,
    TopicPlan,
    delete_topics,
    empty_partitions,
    ensure_topics,
)

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, partitions: list[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for p in partitions:
            await producer.send_and_wait(topic, b"x", key=b"k", partition=p)
    finally:
        await producer.stop()


def test_the_partitions_without_a_record_are_found_empty(test_settings) -> None:
    topic, other = f"{test_settings.topic_prefix}.three", f"{test_settings.topic_prefix}.none"
    plans = [TopicPlan(topic, 3, {}), TopicPlan(other, 2, {})]
    asyncio.run(ensure_topics(test_settings, plans))
    bootstrap = test_settings.kafka_bootstrap
    try:
        asyncio.run(_produce(bootstrap, topic, [0, 2, 2]))
        found = asyncio.run(empty_partitions(bootstrap, [topic, other]))
        # a topic without any record has not started: none of its partitions is left out
        assert found == {topic: {1}, other: set()}

        watch = EmptyPartitions(bootstrap, [topic, other], idle_s=0)
        assert asyncio.run(watch.refresh()) is True
        assert watch.empty(topic) == {1} and watch.empty(other) == frozenset()
        asyncio.run(_produce(bootstrap, topic, [1]))
        assert asyncio.run(watch.refresh()) is True, "partition 1 holds a record now"
        assert watch.empty(topic) == frozenset()
        assert asyncio.run(watch.refresh()) is False, "nothing changed"
    finally:
        asyncio.run(delete_topics(test_settings, [topic, other]))
