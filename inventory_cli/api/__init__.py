"""The HTTP API (`inv serve`): FastAPI over any backend.  See `server.create_app`."""
