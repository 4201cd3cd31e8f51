"""HTTP service (FastAPI) for classifying videos; needs the ``serve`` extra."""
