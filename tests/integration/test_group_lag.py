"""`group_lag`: how far a consumer group is behind, which the demo waits on."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.topics import TopicPlan, ensure_topics, group_lag

pytestmark = pytest.mark.integration


def test_lag_counts_uncommitted_records_of_every_partition(test_settings) -> None:
    bootstrap = test_settings.kafka_bootstrap
    topic = f"{test_settings.topic_prefix}.lagged"
    group = f"{test_settings.topic_prefix}-group"

    async def scenario() -> tuple[int | None, int | None, int | None]:
        await ensure_topics(test_settings, [TopicPlan(topic, 2, {})])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, b"x", partition=i % 2)  # 5 per partition
        finally:
            await producer.stop()
        before = await group_lag(bootstrap, group, [topic])  # nothing committed yet
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        try:
            await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "")})
            partly = await group_lag(bootstrap, group, [topic])  # partition 1 uncommitted
            await consumer.commit({TopicPartition(topic, 1): OffsetAndMetadata(5, "")})
        finally:
            await consumer.stop()
        return before, partly, await group_lag(bootstrap, group, [topic])

    before, partly, after = asyncio.run(scenario())
    assert before is None and partly is None
    assert after == 2  # partition 0: 5 - 3; partition 1: caught up
