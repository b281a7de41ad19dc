"""Events: the transactional outbox, its Kafka relay and the event schemas."""
