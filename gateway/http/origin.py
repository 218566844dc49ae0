"""Whether a browser says a request comes from another site's page (cross-site request forgery).

Used by every state-changing form of our pages: the widget's confirmation and the console.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request


def cross_site(request: Request) -> bool:
    """A browser's word that the request comes from another site's page: Fetch Metadata, or
    else an Origin whose host is not the one the request was sent to. (Under our pages'
    no-referrer policy a browser sends `Origin: null` even for our own form; Fetch Metadata
    is what tells then.)"""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False  # not a browser's form, or a browser too old to say
    return urlsplit(origin).netloc != request.headers.get("host", "")
