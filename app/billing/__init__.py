"""The billing rules: pure functions of values, no I/O and no framework imports."""
