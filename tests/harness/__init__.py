"""Shared by the e2e tests, the benchmark and `make run`: a real Synapse on loopback, and clients."""
