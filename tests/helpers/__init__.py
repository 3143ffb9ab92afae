"""Helpers shared by the test modules: running the CLI, reading Kafka with an
independent client, relays and waiting, and the worker tests' application.
Test modules import from here, never from each other."""
