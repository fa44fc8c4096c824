"""Plain SQL on the hottest paths (the start stampede) without giving up model instances.

A queryset costs more CPU to compile and to turn into objects than a short statement costs PostgreSQL
(measured on the Start button: docs/benchmarks.md). `select_list` names a model's columns for a
hand-written statement, and `from_row` builds the instance the way Django's own iterator does
(`Model.from_db`, with each field's database converter), so the object behaves like a queried one;
columns left out are deferred.
"""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import Model


@cache
def _fields(model: type[Model], exclude: tuple[str, ...]) -> tuple:
    return tuple(f for f in model._meta.concrete_fields if f.name not in exclude)


def select_list(model: type[Model], alias: str, *, exclude: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in _fields(model, exclude))


def from_row(model: type[Model], row, *, exclude: tuple[str, ...] = ()) -> Model:
    fields = _fields(model, exclude)
    values = [f.from_db_value(v, None, connection) if v is not None and hasattr(f, "from_db_value") else v
              for f, v in zip(fields, row, strict=True)]
    return model.from_db(connection.alias, [f.attname for f in fields], values)
