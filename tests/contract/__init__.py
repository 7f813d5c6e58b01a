"""Contract suites: each port's tests, run on every adapter that implements it."""
