"""The pure pipeline core: events, values, the plant model, the context store, enrichment.

No I/O, no asyncio, no clocks: every function here is a function of its inputs
(tests/test_architecture.py checks the imports).
"""
