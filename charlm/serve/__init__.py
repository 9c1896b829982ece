"""`charlm serve`: a trained run behind an OpenAI-compatible HTTP API with continuous
batching (engine.py), request checking (requests.py), the routes (app.py) and a
playground page (static/)."""
