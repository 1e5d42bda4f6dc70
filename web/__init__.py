"""The monitoring web process: JSON API, Prometheus metrics and the operators' status page.

Reads the ring read-only through ``pipeline.common.telemetry`` (the one read path it
shares with ``pipeline status``); imports from ``pipeline`` only the shared
plumbing in ``pipeline.common``. ``create_app()`` is the Flask application factory;
``python -m web`` serves it with waitress (``web.__main__``).
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from pipeline.common import telemetry
from pipeline.common.settings import load_settings, settings_names

from .monitor import Monitor, Sampler

EXTENSION = "tagpipe"


def _settings_from(test_config: Mapping[str, Any] | None) -> Any:
    """Settings from the environment, or from a test mapping of SETTING_NAME -> value."""
    if test_config is None:
        return load_settings()
    if "SETTINGS" in test_config:
        return test_config["SETTINGS"]
    known = set(settings_names())
    env = {k: str(v) for k, v in test_config.items() if k in known}
    return load_settings(env=env, env_file=None)


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` maps setting names (``RING_NAME``, ``WEB_LANG`` ...)
    to values, or ``SETTINGS`` to a loaded settings object; ``SAMPLE_INTERVAL_S`` (default
    1.0; 0 = no background sampler) sets the history sampling.

    Starts the history sampler thread (daemon); ``app.extensions["tagpipe"].close()``
    stops it and unmaps the ring. Raises ConfigError for a bad setting.
    """
    settings = _settings_from(test_config)
    app = Flask(__name__)
    app.json.sort_keys = False
    app.json.compact = True
    monitor = Monitor(settings.ring_name, telemetry.Thresholds.from_settings(settings), settings.web_history_s)
    interval = float((test_config or {}).get("SAMPLE_INTERVAL_S", 1.0))
    sampler = Sampler(monitor, interval).start() if interval > 0 else None
    app.extensions[EXTENSION] = _Runtime(monitor, sampler, settings)

    from . import api, gaps, page, prom, query

    app.register_blueprint(api.bp)
    app.register_blueprint(gaps.bp)
    app.register_blueprint(prom.make_blueprint(monitor))
    app.register_blueprint(page.bp)
    api.install_error_handlers(app)
    query.install(app, api.wants_json)

    from . import tags  # issue 15: live tag values (/api/tags)

    tags_bp, tags_reader = tags.make_blueprint(settings.ring_name)
    app.register_blueprint(tags_bp)
    app.extensions[EXTENSION].on_close.append(tags_reader.close)

    @app.after_request
    def _headers(resp):
        # Nothing here is secret, but nothing should be cached or framed either.
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        return resp

    return app


class _Runtime:
    """What the app owns beyond Flask: the monitor and its sampler."""

    def __init__(self, monitor: Monitor, sampler: Sampler | None, settings: Any) -> None:
        self.monitor = monitor
        self.sampler = sampler
        self.settings = settings
        self.on_close: list = []  # more mappings to drop (the live-values reader)

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.monitor.close()
        for close in self.on_close:
            close()


def runtime(app: Flask) -> _Runtime:
    return app.extensions[EXTENSION]
