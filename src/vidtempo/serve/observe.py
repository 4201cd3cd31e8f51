"""What the service tells its operators: Prometheus metrics and one JSON log line per request."""

from __future__ import annotations

import json
import logging
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.routing import Match

access_log = logging.getLogger("vidtempo.access")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The service's metrics in a registry of its own; ``gauges`` is read at each scrape."""

    def __init__(self, gauges: Callable[[], dict[str, float | dict[str, float]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vidtempo_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("vidtempo_http_request_duration_seconds", "Time to answer a request, by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.inference = Histogram(
            "vidtempo_inference_seconds", "Time to classify one video (decode, CNN, ensemble); videos that could "
            "not be classified are not counted", buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.registry.register(_GaugeCollector(gauges))


class _GaugeCollector:
    """Current values straight from the service's state, so they never drift from it."""

    HELP = {
        "vidtempo_inference_queue_depth": "Videos waiting for or in inference",
        "vidtempo_jobs": "Background jobs in the job table, by state",
        "vidtempo_downloads_in_flight": "URL downloads running or waiting for a download slot",
        "vidtempo_video_bytes_held": "Bytes of videos on disk waiting to be classified",
    }

    def __init__(self, gauges) -> None:
        self.gauges = gauges

    def collect(self):
        for name, value in self.gauges().items():
            if isinstance(value, dict):
                family = GaugeMetricFamily(name, self.HELP[name], labels=["state"])
                for label, count in value.items():
                    family.add_metric([label], count)
            else:
                family = GaugeMetricFamily(name, self.HELP[name], value=value)
            yield family


class Observe:
    """ASGI middleware: counts and times each request by its route template and logs it as one JSON line."""

    def __init__(self, app, metrics: Metrics, routes: list) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        answer = {"status": 500, "bytes": 0}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self._record(scope, answer, time.perf_counter() - started)

    def _record(self, scope, answer: dict, elapsed_s: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        route = self._route(scope)
        self.metrics.requests.labels(method, route, str(answer["status"])).inc()
        self.metrics.latency.labels(method, route).observe(elapsed_s)
        client = scope.get("client")
        access_log.info("request", extra={"fields": {
            "method": scope["method"], "path": scope["path"], "route": route, "status": answer["status"],
            "duration_ms": round(elapsed_s * 1000, 2), "response_bytes": answer["bytes"],
            "client": f"{client[0]}:{client[1]}" if client else None,
            "user_agent": _user_agent(scope)}})


    def _route(self, scope) -> str:
        """The matched route's template (``/jobs/{job_id}``), also for requests answered before routing (401)."""
        if "route" in scope:
            return getattr(scope["route"], "path", "unmatched")
        for route in self.routes:
            if route.matches(scope)[0] == Match.FULL:
                return route.path
        return "unmatched"


def _user_agent(scope) -> str:
    for key, value in scope.get("headers") or ():
        if key == b"user-agent":
            return value.decode("latin-1")[:200]
    return ""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "event": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(level: str = "info") -> dict:
    """logging.dictConfig for uvicorn.run: the service's and uvicorn's own lines as JSON on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {"vidtempo": logger, "uvicorn": logger, "uvicorn.error": {"level": level.upper()},
                    "uvicorn.access": {"handlers": [], "propagate": False}},
    }
