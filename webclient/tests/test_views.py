"""The page at / as HTTP sees it: the shell, its Content-Security-Policy, its static files, and
the rules its JavaScript keeps (no HTML parsing of data, no eval)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

STATIC = Path(__file__).resolve().parents[1] / "static" / "webclient"
NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


@pytest.fixture
def page(client: Client):
    return client.get("/")


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_root_serves_the_html_shell(page) -> None:
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    body = page.content.decode()
    assert '<div id="app"' in body
    assert page["Cache-Control"] == "no-cache"


def test_csp_allows_only_own_scripts_and_connections(page) -> None:
    directives = csp_directives(page["Content-Security-Policy"])
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    everything = " ".join(value for values in directives.values() for value in values)
    assert "unsafe" not in everything  # No 'unsafe-inline', no 'unsafe-eval'.
    assert "*" not in everything and "http" not in everything


def test_csp_names_the_host_the_request_came_to(client: Client, settings) -> None:
    settings.ALLOWED_HOSTS = ["chat.example.test"]
    page = client.get("/", HTTP_HOST="chat.example.test")
    connect = csp_directives(page["Content-Security-Policy"])["connect-src"]
    assert connect == ["'self'", "ws://chat.example.test", "wss://chat.example.test"]


def test_shell_has_no_inline_script_or_style(page) -> None:
    body = page.content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", body, flags=re.S)
    assert scripts, "the page loads its module"
    for attributes, content in scripts:
        assert 'type="module"' in attributes and 'src="/static/webclient/js/main' in attributes
        assert content.strip() == ""
    assert "<style" not in body and "style=" not in body
    assert not re.search(r"\son[a-z]+=", body)  # No inline event handler.


def test_shell_assets_are_served(client: Client, page) -> None:
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.content.decode())
    assert {Path(asset).suffix for asset in assets} == {".svg", ".css", ".js"}
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        response.close()


def test_root_answers_only_get_and_head(client: Client) -> None:
    assert client.head("/").status_code == 200
    assert client.post("/").status_code == 405


def test_api_paths_still_answer_json_404(client: Client) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def javascript_files() -> list[Path]:
    files = sorted(STATIC.rglob("*.js"))
    assert files
    return files


@pytest.mark.parametrize(
    "forbidden",
    ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"],
)
def test_javascript_never_parses_strings_as_html_or_code(forbidden: str) -> None:
    """Text from the server is inserted with text nodes only (dom.js); nothing is evaluated."""
    for path in javascript_files():
        assert forbidden not in path.read_text(encoding="utf-8"), f"{forbidden} in {path.name}"


def test_javascript_requests_only_relative_urls() -> None:
    """Every fetch and WebSocket goes to this page's own origin: no absolute URL in the code."""
    for path in javascript_files():
        source = path.read_text(encoding="utf-8")
        for literal in re.findall(r"[\"'`](\w+://[^\"'`]*)", source):
            assert literal.startswith("${scheme}://${window.location.host}"), (path.name, literal)


def test_compose_nginx_sends_the_page_and_its_static_files_to_the_service() -> None:
    """deploy/nginx.conf has one location, `/`, proxied to the instances: `/` and `/static/`
    reach daphne (whitenoise serves the files), nothing is served from nginx's own root."""
    conf = NGINX_CONF.read_text(encoding="utf-8")
    locations = re.findall(r"^\s*location\s+([^{]+?)\s*\{", conf, flags=re.M)
    assert locations == ["/"]
    block = conf[conf.index("location / {") :]
    assert re.search(r"proxy_pass\s+http://chat_instances;", block)
    assert "root " not in conf and "alias " not in conf


def test_production_modules_import_each_other_by_their_hashed_names(static_root) -> None:
    """A new `main.js` never runs with cached older modules after a deploy."""
    import re

    hashed = re.compile(r"\.[0-9a-f]{12}\.js$")
    modules = [
        path
        for path in (static_root / "webclient" / "js").rglob("*.js")
        if hashed.search(path.name)
    ]
    imports = [
        target
        for path in modules
        for target in re.findall(r'(?:from|import)\s*"([^"]+\.js)"', path.read_text())
    ]

    assert len(modules) >= 5 and imports
    assert [target for target in imports if not hashed.search(target)] == []
