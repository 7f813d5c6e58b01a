"""Deterministic simulation of the whole engine on in-memory ports."""
