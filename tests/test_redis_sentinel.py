"""Redis behind Sentinels: the ``redis+sentinel://`` URL form, and what start-up says of one it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main
from service.lib.settings import SentinelURL, Settings, SettingsError, parse_sentinel_url

# --- the URL form -----------------------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_master_its_database_and_credentials() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/cache/3?sentinel_password=watch"
    assert parse_sentinel_url(url) == SentinelURL(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381)),
        service="cache",
        db=3,
        username="app",
        password="s@cret",
        sentinel_password="watch",
    )
    assert parse_sentinel_url("redis+sentinel://h/mymaster") == SentinelURL(
        sentinels=(("h", 26379),), service="mymaster"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///mymaster/0", "names no Sentinel"),
        ("redis+sentinel://h1:26379,,h2/mymaster", "empty Sentinel address"),
        ("redis+sentinel://h1:port/mymaster", "port 'port'"),
        ("redis+sentinel://h1:26379", "names no master"),
        ("redis+sentinel://h1/mymaster/zero", "database 'zero'"),
        ("redis+sentinel://h1/mymaster/0/extra", "more after the database"),
        ("redis+sentinel://:hunter2@h1/mymaster?socket_timeout=5", "options socket_timeout"),
        ("sentinel://h1:26379/mymaster", "redis://, rediss://, unix:// or redis+sentinel://"),
        ("127.0.0.1:6379", "redis://, rediss://, unix:// or redis+sentinel://"),
    ],
)
def test_a_malformed_redis_url_stops_start_up_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match="DELIGHT_REDIS_URL") as refused:
        Settings.from_env({"DELIGHT_REDIS_URL": url})
    assert says in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_serve_refuses_a_malformed_sentinel_url_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DELIGHT_REDIS_URL", "redis+sentinel://h1:26379,h2:26379")
    monkeypatch.setenv("DELIGHT_DATA_DIR", str(tmp_path / "data"))
    assert main(["serve"]) == 2
    assert "delight: DELIGHT_REDIS_URL: the Sentinel URL 'redis+sentinel://h1:26379,h2:26379' names no master" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "data").exists()
