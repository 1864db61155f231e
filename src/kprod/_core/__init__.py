"""The pure producer brain: partitioning, accumulation, metadata, sender state, idempotence, transactions.

Decides *what* to send; the ``_io`` layer decides *when* and over which socket.
Pure: no module here imports asyncio, socket, ssl, threading, select or time.
Time arrives as integer milliseconds (``now_ms``) and randomness is injected.
"""
