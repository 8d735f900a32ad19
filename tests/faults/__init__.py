"""Fault injection: a load of keyed writes, readers and live streams against real
servers, faults injected by name, and a checker of what must hold afterwards.

See docs/reliability.md for what runs where and how to run the long version.
"""
