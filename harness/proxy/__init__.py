"""The WebSocket-aware chaos proxy: frame faults with seeded decisions and a fault log."""
