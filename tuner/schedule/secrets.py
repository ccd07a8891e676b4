"""A schedule's study store without its password, and the password back at run time.

The schedule table is read by anyone who can read the store (`tuner schedule
show`, the dashboard's database), so a password never goes in it. At run time
the daemon supplies it: from TUNER_STORAGE_PASSWORD_FILE (a Docker or
Kubernetes secret, read by the store itself), or from its own store's URL when
the study store is the same server and user.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def without_password(url: str) -> str:
    if url.startswith("sqlite"):
        return url
    return _render(make_url(url), None)


def _render(url: URL, password: str | None) -> str:
    # URL.set() takes None as "unchanged", so the URL is made anew.
    return URL.create(url.drivername, url.username, password, url.host, url.port, url.database,
                      url.query).render_as_string(hide_password=False)


def study_storage(stored: str | None, daemon_url: str) -> str:
    """The URL a run opens: the schedule's (its password from the daemon where it has one), else the daemon's."""
    if not stored:
        return daemon_url
    url = make_url(stored)
    if url.password is not None or stored.startswith("sqlite") or daemon_url.startswith("sqlite"):
        return stored
    own = make_url(daemon_url)
    if own.password is not None and (url.host, url.port, url.username) == (own.host, own.port, own.username):
        return _render(url, own.password)
    return stored
