"""The HTTP service (FastAPI; needs the ``serve`` extra): classify an uploaded video or a URL.

``app`` builds the application (routes, the web page ``page.html``, jobs for long videos); ``settings`` holds
``vidtempo serve``'s settings; ``guards`` (upload limits, API keys), ``fetch`` (URLs, checked before and while
downloading), ``jobs`` (the job table and disk budget) and ``observe`` (metrics, request logs) are its parts.
"""
