"""What every fault seam shares: seeded decisions and the fault log."""
