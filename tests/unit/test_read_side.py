"""The API reads only through app.services.queries: no view module holds a model."""

from __future__ import annotations

import importlib
import pkgutil

import app.api
from app.models.base import Base


def test_no_api_module_imports_a_model() -> None:
    holders = []
    for info in pkgutil.iter_modules(app.api.__path__):
        module = importlib.import_module(f"app.api.{info.name}")
        holders += [f"{info.name}.{name}" for name, value in vars(module).items()
                    if isinstance(value, type) and issubclass(value, Base)]
    assert holders == []
