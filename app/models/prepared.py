"""Hot statements in one round trip each: planned once per connection (PREPARE, then
EXECUTE) instead of on every run; one that stands alone runs in autocommit (no BEGIN, no
COMMIT).

For a big statement run again and again with new values, planning costs as much as running:
the charge claim's CTEs took 0.45 ms to plan and 0.35 ms to run. The first run on a
connection prepares it; the connection's pool entry remembers that for as long as the
connection lives (a reconnect forgets it, and the next run prepares it again). PostgreSQL
replans a prepared statement by itself after a migration changes a table it reads, but
refuses to run it at all once a migration changed the type of a column it returns ("cached
plan must not change result type", until the connection closes): then, in autocommit, it is
prepared afresh. These are SQL-level PREPARE and EXECUTE: a pooler between the engine and
PostgreSQL must keep each client on one server connection (PgBouncer's session mode; its
transaction mode, even with max_prepared_statements, tracks only protocol-level prepared
statements).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from psycopg2.errors import FeatureNotSupported
from sqlalchemy import BindParameter, ClauseElement, Connection, CursorResult, Select, literal
from sqlalchemy.dialects.postgresql import psycopg2
from sqlalchemy.exc import NotSupportedError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.types import NullType

_DIALECT = psycopg2.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
_PREPARED = "prepared_statements"


class Prepared:
    """One Core statement, prepared on each connection that runs it under `name` plus a hash
    of its SQL (the same statement built again gets the same name, and never piles up on a
    connection under a new one); its bound parameters without a value are passed by name to
    `execute`."""

    def __init__(self, name: str, statement: ClauseElement) -> None:
        # Constants (enum values, numbers) go into the SQL itself: as parameters, a generic
        # plan cannot match them to a partial index's predicate, and scans the table.
        compiled = _Inlining(_DIALECT, statement)
        assert compiled.positiontup is not None
        inlined = compiled.literal_execute_params
        binds = [compiled.binds[key] for key in compiled.positiontup
                 if compiled.binds[key] not in inlined]  # the others are $1, $2, ...
        sql = str(compiled)
        for rendered, bind in compiled.binds.items():
            if bind in inlined:
                sql = sql.replace(f"__[POSTCOMPILE_{rendered}]", str(literal(
                    bind.value, bind.type).compile(dialect=_DIALECT,
                                                   compile_kwargs={"literal_binds": True})))
        assert "__[POSTCOMPILE" not in sql and f"${len(binds) + 1}" not in sql
        types = ["unknown" if isinstance(bind.type, NullType)
                 else _DIALECT.type_compiler_instance.process(bind.type) for bind in binds]
        self.name = f"{name}_{hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()}"
        self._prepare = f"PREPARE {self.name} ({', '.join(types)}) AS {sql}"
        self._execute = f"EXECUTE {self.name} ({', '.join(['%s'] * len(binds))})"
        self._params = [(bind.key, bind.type.bind_processor(_DIALECT)) for bind in binds]
        columns = statement.selected_columns if isinstance(statement, Select) else ()
        self._results = [column.type.dialect_impl(_DIALECT).result_processor(_DIALECT, None)
                         for column in columns]

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        """Run it on `connection` (preparing it there first if need be) with these values.

        In autocommit, a run PostgreSQL refused because a migration changed the type of a
        column the statement returns did nothing: the statement is prepared afresh and run
        once more. (In a transaction the refusal aborts it, and is raised.)
        """
        prepared: set[str] = connection.connection.info.setdefault(_PREPARED, set())
        if self.name not in prepared:
            connection.exec_driver_sql(self._prepare)
            prepared.add(self.name)
        params = self.bound(values)
        try:
            return connection.exec_driver_sql(self._execute, params)
        except NotSupportedError as error:  # "cached plan must not change result type"
            driver = connection.connection.dbapi_connection
            in_autocommit = driver is not None and driver.autocommit
            if not isinstance(error.orig, FeatureNotSupported) or not in_autocommit:
                raise
        prepared.discard(self.name)  # prepared again by the next run if this one fails
        connection.exec_driver_sql(f"DEALLOCATE {self.name}")
        connection.exec_driver_sql(self._prepare)
        prepared.add(self.name)
        return connection.exec_driver_sql(self._execute, params)

    def bound(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of its parameters, in order, as the driver takes them."""
        return tuple(process(values[key]) if process is not None else values[key]
                     for key, process in self._params)

    def rows(self, connection: Connection, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """A SELECT's rows, each value as SQLAlchemy's result gives it (an enum column's
        as its Python enum, ...)."""
        return [tuple(value if process is None or value is None else process(value)
                      for process, value in zip(self._results, row, strict=True))
                for row in self.execute(connection, values)]


class _Inlining(_DIALECT.statement_compiler):  # type: ignore[name-defined,misc]
    """Compiles every bound parameter that has a value (a constant) as one to render into
    the SQL, wherever it sits: in a CTE that the statement reaches only through its columns
    (an UPDATE's implicit FROM) too, which a traversal of the statement does not visit."""

    def visit_bindparam(self, bindparam: BindParameter[Any], **kw: Any) -> str:
        literal_execute = kw.pop("literal_execute", False) or not bindparam.required
        return cast(str, super().visit_bindparam(bindparam, literal_execute=literal_execute,
                                                 **kw))


@contextmanager
def autocommit(connection: PoolProxiedConnection) -> Iterator[None]:
    """Each statement on this pooled connection (new: no transaction begun) commits on its
    own while the block runs: a one-statement transaction in one round trip. Switched on the
    driver: SQLAlchemy's AUTOCOMMIT option also sends a SET each time it switches back."""
    driver = connection.dbapi_connection
    assert driver is not None
    driver.autocommit = True
    try:
        yield
    finally:
        if not driver.closed:  # a lost connection: the pool throws it away
            driver.autocommit = False
