"""What tests share: the database helpers, polling, the API client, the messaging scenario helpers
and the fakes for every engine port. Test modules import from here, never from each other.

- ``tests.support.database``: asyncpg connection arguments and throwaway migrated databases.
- ``tests.support.polling``: ``eventually`` (poll with a deadline; never a fixed sleep).
- ``tests.support.api``: ``Api`` and ``Person``, the test's view of the HTTP API.
- ``tests.support.messaging``: a care team with a consented external participant, sends, deliveries.
- ``tests.support.fakes``: in-memory fakes of the engine's ports for workflow tests without I/O.
"""
