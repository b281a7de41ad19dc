"""The unit of work: one transaction, committed explicitly, rolled back by default.

The one transaction convention: the entry point (view, actor, scheduler job, CLI command)
opens the unit of work and commits it; services only use it. `commit()` writes the new
objects `insert` kept and the outbox events the transaction recorded, then commits, then
sends the messages `enqueue` deferred and runs the other callbacks that waited for the
commit: nothing leaves before the commit that made it true, and no event or message is lost
or kept from a transaction that rolled back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache, partial
from types import TracebackType
from typing import Any, NoReturn, Protocol

from sqlalchemy import (
    Engine,
    Exists,
    Insert,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    inspect,
    select,
    union_all,
)
from sqlalchemy import column as column_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapper, Session, sessionmaker
from sqlalchemy.sql.schema import ColumnDefault

from app.events import outbox
from app.models.base import Base
from app.models.prepared import Prepared

Row = dict[str, Any]

log = logging.getLogger(__name__)


class Send(Protocol):
    """Sends a message to an actor by name, now (the composition root's `Container.enqueue`)."""

    def __call__(self, actor_name: str, /, *args: Any, delay_ms: int | None = None) -> None: ...


@dataclass(frozen=True)
class Requirement:
    """What must hold for a flush to write: `condition`, an EXISTS whose values are bound by
    name from `params` (names that do not start with "p"), else `otherwise` raises why."""

    condition: Exists
    params: Row
    otherwise: Callable[[], NoReturn]


class UnitOfWork:
    """A session plus the messages and callbacks that may leave only once its transaction
    has committed."""

    def __init__(self, session_factory: sessionmaker[Session], send: Send | None = None) -> None:
        """`send` is how `enqueue` sends after commit; None for a unit of work that only
        writes (a tool's), where `enqueue` raises."""
        self._session_factory = session_factory
        self._send = send
        self._after_commit: list[Callable[[], None]] = []
        self._inserts: list[Base] = []
        self._requirement: Requirement | None = None
        self.committed = False  # whether anything was committed (the API remembers writes)

    @property
    def engine(self) -> Engine:
        """The engine its sessions are bound to, for a statement that needs no Session (one
        in autocommit: the worker's claim), without a Session's begin, rollback and close."""
        bind = self._session_factory.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()
        self.session.close()

    def enqueue(self, actor_name: str, *args: Any) -> None:
        """Send `actor_name(*args)` right after the next successful commit; never if the
        transaction rolls back."""
        if self._send is None:
            raise RuntimeError("this unit of work was made without a sender: it cannot enqueue")
        self.after_commit(partial(self._send, actor_name, *args))

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` right after the next successful commit (e.g. drop a cache entry);
        actors are sent with `enqueue`."""
        self._after_commit.append(callback)

    def insert(self, obj: Base) -> None:
        """Insert the new object `obj` at the commit, in one statement with the other objects
        kept here and the outbox events: no ORM flush and no round trip of its own. Unlike
        `session.add`, later changes to `obj` are not written."""
        self._inserts.append(obj)

    def require(self, requirement: Requirement) -> None:
        """Write the objects `insert` keeps and their events only if `requirement.condition`
        holds, checked by their one statement (no round trip of its own); else they are
        dropped, nothing is written, and `requirement.otherwise` raises."""
        self._requirement = requirement

    def flush(self) -> None:
        """Write, in the transaction, the objects `insert` kept and the recorded outbox
        events: in one statement (WITH ... INSERT) when there is one object of each kind or
        a requirement guards them, else one statement per table (a renewal round's
        payments, attempts and events), and the events alone in one."""
        objects, self._inserts = self._inserts, []
        requirement, self._requirement = self._requirement, None
        assert requirement is None or objects, "a requirement guards the inserts of objects"
        rows = [_row(o) for o in objects] + [(outbox.TABLE, e) for e in outbox.take(self.session)]
        one_each = len({table for table, _ in rows[:len(objects)]}) == len(objects)
        if objects and (one_each or requirement is not None):
            statement, params = _insert_all(rows, requirement)
            connection = self.session.connection()
            written = (statement.execute(connection, params) if isinstance(statement, Prepared)
                       else connection.execute(statement, params)).rowcount
            if requirement is not None and not written:
                requirement.otherwise()
            return
        connection = self.session.connection()
        for table, batch in _batches(rows):
            _rows_insert(table, tuple(batch[0])).execute(connection, {"rows": json.dumps(
                [{ORDINAL: n, **{column: value.isoformat() if isinstance(value, datetime)
                                 else value for column, value in row.items()}}
                 for n, row in enumerate(batch)])})

    def commit(self) -> None:
        """Write the kept objects and the recorded outbox events, commit, then send the
        enqueued messages and run the after-commit callbacks, in the order they were added."""
        self.flush()
        self.session.commit()
        self.committed = True
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def rollback(self) -> None:
        """Discard the transaction, its recorded events and the messages and callbacks that
        waited for it."""
        self._after_commit.clear()
        self._inserts.clear()
        self._requirement = None
        outbox.take(self.session)
        self.session.rollback()


def _row(obj: Base) -> tuple[Table, Row]:
    """The table of a new object and its row: the attributes set, and the Python-side
    defaults of the others as a flush would apply them."""
    state = inspect(obj)
    table, columns, defaults = _layout(state.mapper)
    values = state.dict
    row = {column: values[attribute] for attribute, column in columns if attribute in values}
    for column, default in defaults:
        if column not in row:
            row[column] = default.arg if default.is_scalar else default.arg(None)
    return table, row


@cache
def _layout(mapper: Mapper[Any]) -> tuple[Table, tuple[tuple[str, str], ...],
                                           tuple[tuple[str, ColumnDefault], ...]]:
    """A mapped class's table, its (attribute, column) pairs and its columns' Python-side
    defaults (a scalar or a callable): looked up once, not for every new object."""
    table = mapper.local_table
    assert isinstance(table, Table)
    columns = tuple((prop.key, prop.columns[0].key) for prop in mapper.column_attrs)
    defaults = tuple((column.key, column.default) for column in table.columns
                     if isinstance(column.default, ColumnDefault)
                     and (column.default.is_scalar or column.default.is_callable))
    return table, columns, defaults


def _batches(rows: list[tuple[Table, Row]]) -> list[tuple[Table, list[Row]]]:
    """`rows` as executemany batches, one per table and set of columns, in the order their
    first rows came (a payment before its attempts)."""
    batches: dict[tuple[Table, tuple[str, ...]], list[Row]] = {}
    for table, row in rows:
        batches.setdefault((table, tuple(row)), []).append(row)
    return [(table, batch) for (table, _), batch in batches.items()]


#: Each row's place in its batch, in the JSON `_rows_insert` takes: the rows go in in order.
ORDINAL = "_n"


@lru_cache(maxsize=64)
def _rows_insert(table: Table, columns: tuple[str, ...]) -> Prepared:
    """The INSERT of any number of rows of `table` setting `columns`, in their order, given
    as one JSON array (`rows`; timestamps as ISO 8601 text, each row's place as ORDINAL)
    that PostgreSQL reads with jsonb_to_recordset: one prepared statement whatever their
    number. As VALUES, each length was another statement to parse and plan, and
    SQLAlchemy's executemany cost the settle of a batch of payments a tenth of its worker's
    CPU (bench/pay.py)."""
    rows = (func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
            .table_valued(*(column_(name, table.c[name].type) for name in columns),
                          column_(ORDINAL, Integer))
            .render_derived(name="row", with_types=True))
    return Prepared("uow_rows", insert(table).from_select(
        list(columns), select(*(rows.c[name] for name in columns)).order_by(rows.c[ORDINAL])))


def _insert_all(rows: list[tuple[Table, Row]],
                requirement: Requirement | None) -> tuple[Insert | Prepared, Row]:
    """One INSERT of `rows` and its parameters: WITH ... INSERT when they go to several
    tables, each table's rows in the order given; each row only if the requirement holds."""
    tables: dict[Table, list[Row]] = {}
    for table, row in rows:
        tables.setdefault(table, []).append(row)
    shape = tuple((table, tuple(tuple(row) for row in batch)) for table, batch in tables.items())
    params = {f"p{t}_{r}_{column}": value for t, batch in enumerate(tables.values())
              for r, row in enumerate(batch) for column, value in row.items()}
    if requirement is None:
        return _statement(shape, None), params
    return _statement(shape, requirement.condition), {**params, **requirement.params}


@lru_cache(maxsize=256)
def _statement(shape: tuple[tuple[Table, tuple[tuple[str, ...], ...]], ...],
               condition: Exists | None) -> Insert | Prepared:
    """The INSERT of rows of this shape (per table, each row's columns), values bound by name,
    as VALUES, or, with a `condition`, as SELECT ... WHERE condition: built once per shape.
    When each table has one row (a request's own writes: POST /pay's payment, its event and
    its Idempotency-Key), prepared on each connection (app/models/prepared.py): planned once
    there, not at every run, and no SQLAlchemy compile-cache lookup either."""
    inserts = []
    for t, (table, batch) in enumerate(shape):
        values = [{column: bindparam(f"p{t}_{r}_{column}", type_=table.c[column].type)
                   for column in columns} for r, columns in enumerate(batch)]
        if condition is None:
            inserts.append(insert(table).values(values[0] if len(values) == 1 else values))
            continue
        assert len(set(batch)) == 1, "guarded rows of one table set the same columns"
        # A SELECT list gives an untyped value (a NULL too) the type text: cast the others.
        selects = [select(*(v if isinstance(v.type, String) else cast(v, v.type)
                            for v in row.values())).where(condition) for row in values]
        inserts.append(insert(table).from_select(
            list(batch[0]), selects[0] if len(selects) == 1 else union_all(*selects)))
    *first, last = inserts
    statement = last.add_cte(*(s.cte(f"insert_{n}") for n, s in enumerate(first)))
    if any(len(batch) > 1 for _, batch in shape):
        return statement
    return Prepared("uow_insert", statement)


UnitOfWorkFactory = Callable[[], UnitOfWork]
