"""Webhooks out: merchants' endpoints, fed from the Kafka topics by the dispatcher
(`python -m app.webhooks`) and sent by the worker fleet."""
