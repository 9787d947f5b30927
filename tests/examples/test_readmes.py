"""The examples' READMEs: each app its own database, endpoints described in plain words."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ["fastapi_app", "flask_app", "django_app"]


def test_each_app_readme_uses_its_own_database() -> None:
    """Following one app's README after another never reuses the same database."""
    urls = {}
    for app in APPS:
        text = (ROOT / "examples" / app / "README.md").read_text()
        found = set(re.findall(r"SPAKTOK_DATABASE_URL=([^\s`]+)", text))
        assert len(found) == 1, (app, found)
        urls[app] = found.pop()
    assert len(set(urls.values())) == len(APPS), urls
    local_env = (ROOT / "examples" / "common" / "local.env").read_text()
    assert not re.search(r"^SPAKTOK_DATABASE_URL=", local_env, re.M)


def test_no_reader_needs_to_know_the_plan() -> None:
    """'the plan's seven endpoints' meant nothing to a newcomer: the docs say what they do."""
    pages = [ROOT / "README.md", ROOT / "examples" / "README.md"]
    pages += [ROOT / "examples" / app / "README.md" for app in APPS]
    for page in pages:
        assert "plan's" not in page.read_text(), page
