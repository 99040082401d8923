"""What the READMEs tell a newcomer holds: a route they name says which scope its key needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.app import create_app
from service.keys import scopes
from service.lib.settings import DatabaseSettings, RedisSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/[^`?\s]*)`")
PARAMETER = re.compile(r"\{[^}]+\}")


def _scopes_needed() -> dict[str, str]:
    """``"METHOD /path"`` of every guarded route (``{id}`` for any parameter), and the scope its key needs."""
    offline = Settings(
        db=DatabaseSettings(url="postgresql+asyncpg://offline/offline"), redis=RedisSettings("redis://x")
    )
    by_guard = {"requires_" + scope.replace(":", "_"): scope for scope in scopes.ALL}
    needed = {}
    for route in create_app(offline).routes:
        for handler in getattr(route, "route_handlers", []):
            for guard in handler.resolve_guards():
                if guard.__name__ in by_guard:
                    for method in handler.http_methods:
                        needed[f"{method} {PARAMETER.sub('{id}', route.path)}"] = by_guard[guard.__name__]
    return needed


@pytest.mark.parametrize("readme", ["README.md", "rules/README.md"])
def test_every_route_a_readme_names_comes_with_the_scope_its_key_needs(readme: str) -> None:
    needed = _scopes_needed()
    missing = []
    for paragraph in (ROOT / readme).read_text().split("\n\n"):
        for method, path in ROUTE.findall(paragraph):
            scope = needed.get(f"{method} {PARAMETER.sub('{id}', path)}")
            if scope is not None and f"`{scope}`" not in paragraph:
                missing.append(f"{method} {path} needs `{scope}`")
    assert not missing, f"{readme} does not say: {missing}"
