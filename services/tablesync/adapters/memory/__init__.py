"""In-memory adapters of the ports, for the simulator and the contract suites."""
