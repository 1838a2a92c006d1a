"""Who may open the manager console: every route under /manage, found from the app's own URL map, so a route
added later is covered without touching this file.

A cashier gets 403 on every one of them, GET and POST alike, and so does a signed-in member; someone not signed in
is sent to the staff sign-in; a manager gets 403 on the admin-only ones. Runs on SQLite and PostgreSQL.
"""
from __future__ import annotations

import pytest

from portal.extensions import db

from . import factories


def manage_routes(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route of the manager area, with 1 for each row id in the URL."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("manage."):
            continue
        url = rule.build({name: 1 for name in rule.arguments}, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, url))
    return routes


def level_of(app, endpoint: str) -> str:
    return app.view_functions[endpoint].access_level


def test_the_console_has_routes_and_each_declares_manager_or_admin(app):
    routes = manage_routes(app)
    assert len(routes) >= 20
    assert {level_of(app, endpoint) for endpoint, _method, _url in routes} == {"manager", "admin"}


def test_a_cashier_gets_403_everywhere_in_the_console(app, client, login):
    login(client, "cashier")
    for endpoint, method, url in manage_routes(app):
        for htmx in (False, True):
            response = client.open(url, method=method, htmx=htmx)
            assert response.status_code == 403, (endpoint, method, url, htmx, response.status_code)


def test_a_signed_in_member_gets_403_everywhere_in_the_console(app, client):
    with app.app_context():
        member = factories.member(name="Zhou Li", activated=True)
        db.session.commit()
        phone = member.phone
    assert client.post("/member/login", data={"phone": phone[3:], "password": factories.PASSWORD}).status_code == 303
    for endpoint, method, url in manage_routes(app):
        response = client.open(url, method=method)
        assert response.status_code == 403, (endpoint, method, url, response.status_code)


def test_nobody_signed_in_is_sent_to_the_staff_sign_in(app, client):
    for endpoint, method, url in manage_routes(app):
        response = client.open(url, method=method)
        assert response.status_code == 302, (endpoint, method, url, response.status_code)
        assert response.headers["Location"].startswith("/login?next="), (endpoint, response.headers["Location"])
        htmx = client.open(url, method=method, htmx=True)
        assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login?next=")


@pytest.mark.parametrize("role", ["manager"])
def test_a_manager_gets_403_on_the_admin_only_routes(app, client, login, role):
    login(client, role)
    admin_only = [route for route in manage_routes(app) if level_of(app, route[0]) == "admin"]
    assert admin_only, "the console has admin-only routes (register tokens at least)"
    for endpoint, method, url in admin_only:
        response = client.open(url, method=method)
        assert response.status_code == 403, (endpoint, method, url, response.status_code)
