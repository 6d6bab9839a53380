"""The asyncio shell: the host loop, its transport, the daemon, status counters."""
