"""The HTTP API under /v1: schemas, routes, views, OpenAPI."""
