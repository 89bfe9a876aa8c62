"""Real servers for the tests: Redis, loopback targets and webhook receivers, edges."""
