"""The soak test's parts (tools/soak.py runs them): worker operations, a plot, the fault mix."""
