"""The driving edge: aiohttp routes, request/response schemas, middlewares, the app factory and the CLI."""
