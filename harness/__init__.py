"""relay-harness: fault injection and load simulation for serverless WebSocket relays."""

__version__ = "0.1.0"
