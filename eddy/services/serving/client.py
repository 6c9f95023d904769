"""A small client for applications: send a prediction request, await its answer.

    client = PredictionClient(Settings.from_env())
    answer = client.predict("customer-42", {"amount": 12.5}, timeout_s=5)
    answer.prediction, answer.model_version

It reads the answers topic without a consumer group, from the end as of its creation,
and matches answers by request id; answers to other requests are skipped. Any Kafka
client can do the same with the contract in ``eddy/streams/messages/schemas/``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import TopicPartition

from eddy.services.config.settings import Settings
from eddy.streams.messages.contracts import Prediction, PredictionRequest
from eddy.streams.messages.validation import decode, encode
from eddy.streams.transport.clients import make_consumer, make_producer
from eddy.streams.transport.topics import Topic, topic_name

POLL_MS = 50


class AnswerTimeout(TimeoutError):
    """No answer for the request within the timeout."""


class PredictionClient:
    def __init__(self, settings: Settings, reply_topic: str | None = None) -> None:
        prefix = settings.topic_prefix
        self.requests_topic = topic_name(Topic.PREDICTION_REQUESTS, prefix)
        self.reply_topic = reply_topic
        answers = reply_topic or topic_name(Topic.PREDICTIONS, prefix)
        self._producer = make_producer(settings, linger_ms=0)
        self._consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=POLL_MS)
        assigned = [
            TopicPartition(answers, p)
            for p in sorted(self._consumer.partitions_for_topic(answers) or [])
        ]
        self._consumer.assign(assigned)
        self._consumer.seek_to_end(*assigned)
        for tp in assigned:
            self._consumer.position(tp)  # resolve "end" now, before any request is sent

    def predict(
        self, entity_id: str, features: dict[str, Any], *, timeout_s: float = 10.0
    ) -> Prediction:
        request = PredictionRequest(
            request_id=f"req-{uuid.uuid4()}",
            entity_id=entity_id,
            features=features,
            reply_topic=self.reply_topic,
        )
        self._producer.send(self.requests_topic, key=entity_id.encode(), value=encode(request)).get(
            timeout=timeout_s
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in self._consumer.poll(timeout_ms=POLL_MS).values():
                for record in records:
                    answer = decode(Prediction, record.value)
                    if answer.request_id == request.request_id:
                        return answer
        raise AnswerTimeout(f"no answer to {request.request_id} within {timeout_s}s")

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()
