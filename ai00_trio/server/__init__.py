"""The HTTP server: OpenAI and AI00 routes over the actor graph in `actors.py`."""
