"""Every setting in app/config.py is documented in the README."""

from dataclasses import fields
from pathlib import Path

from app.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    text = README.read_text()
    missing = [f.name.upper() for f in fields(Config) if f"`{f.name.upper()}`" not in text]
    assert missing == []
