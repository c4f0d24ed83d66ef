"""PostgreSQL persistence: table models, repositories, the unit of work, and the embedded server."""
