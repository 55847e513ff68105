"""The HTTP API: ASGI routes, JSON and base64 at the edge, errors mapped to statuses once."""
