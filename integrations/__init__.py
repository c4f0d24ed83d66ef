"""caremsg's driven edge: adapters that implement the engine's ports over real technology.

PostgreSQL repositories, the Sendbird chat client and its emulator, the policy adapter and the
audit sink live here; the engine only sees them through :mod:`engine.ports`.
"""
