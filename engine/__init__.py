"""caremsg's core: policy decisions, consent semantics, workflows, audit events and the ports they need.

Nothing in this package performs I/O itself: it talks to the outside world only through the
protocols in :mod:`engine.ports`, which ``integrations`` implements.
"""
