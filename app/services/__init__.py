"""Use cases: one function each, taking a unit of work and plain values."""
