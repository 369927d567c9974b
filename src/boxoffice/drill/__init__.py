"""Failover drills against deploy/ha's cluster (`./scripts/drill NAME`; docs/deploy.md)."""
