"""The monitor stage: prints every message on the bus, one line each."""
