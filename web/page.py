"""The operators' status page at ``/``: a static shell; ``static/status.js`` fills it in
from ``/api/status`` every second without reloading. No asset comes from another site."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from . import i18n, query, runtime

bp = Blueprint("page", __name__, template_folder="templates", static_folder="static", static_url_path="/static")


@bp.get("/")
def index():
    rt = runtime(current_app)
    lang = i18n.choose(rt.settings.web_lang, request.accept_languages, query.value("lang"))
    labels = i18n.LABELS[lang]
    resp = current_app.make_response(
        render_template("status.html", lang=lang, t=labels, ring=rt.settings.ring_name, refresh_ms=1000)
    )
    resp.headers["Content-Language"] = lang
    resp.headers["Vary"] = "Accept-Language"
    return resp
