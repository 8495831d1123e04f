"""Simulators of Kontur's APIs on 127.0.0.1, for tests and the local stack."""
