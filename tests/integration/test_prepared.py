"""Prepared statements (app/models/prepared.py) outlive the migrations of a running release."""

from __future__ import annotations

from psycopg2.extensions import TRANSACTION_STATUS_INTRANS
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select, update

from app.bootstrap import Container, build
from app.config import Config
from app.models.prepared import Prepared, autocommit


def test_a_statement_prepared_before_a_migration_changed_a_column_type_runs_after_it(
    container: Container,
) -> None:
    """PostgreSQL refuses a prepared statement whose result type a migration changed
    ("cached plan must not change result type") for as long as the connection lives: the
    statement is prepared afresh, not refused on every run (every claim of a worker)."""
    table = Table("prepared_probe", MetaData(), Column("id", String(10), primary_key=True),
                  Column("note", String(10)))
    statement = Prepared("prepared_probe", select(table.c.note).where(
        table.c.id == bindparam("id")))
    with container.engine.connect() as connection:
        connection.exec_driver_sql("DROP TABLE IF EXISTS prepared_probe")
        connection.exec_driver_sql("CREATE TABLE prepared_probe (id varchar(10) PRIMARY KEY,"
                                   " note varchar(10))")
        connection.exec_driver_sql("INSERT INTO prepared_probe VALUES ('a', 'before')")
        connection.commit()
        try:
            with autocommit(connection.connection):
                assert statement.execute(connection, {"id": "a"}).scalar() == "before"
                # The migration, from another connection: widen the column.
                with container.engine.connect() as migration:
                    migration.exec_driver_sql(
                        "ALTER TABLE prepared_probe ALTER COLUMN note TYPE varchar(20)")
                    migration.exec_driver_sql("UPDATE prepared_probe SET note = 'after'")
                    migration.commit()
                assert statement.execute(connection, {"id": "a"}).scalar() == "after"
                assert statement.execute(connection, {"id": "a"}).scalar() == "after"
        finally:
            connection.exec_driver_sql("DROP TABLE prepared_probe")
            connection.commit()
            connection.invalidate()  # not back to the pool with the statement prepared


def test_a_prepared_statement_runs_one_generic_plan_from_its_first_run(
    container: Container,
) -> None:
    """Not planned afresh at each run (PostgreSQL's default, which kept doing so for the
    charge claim: 0.93 ms a call against 0.39 ms): its constants are in its SQL, so the
    generic plan matches partial indexes as a custom one would."""
    statement = Prepared("generic_probe", select(bindparam("n", type_=Integer) + 1))
    with container.engine.connect() as connection:
        try:
            for n in range(3):
                assert statement.execute(connection, {"n": n}).scalar() == n + 1
            plans = connection.exec_driver_sql(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE name = %s", (statement.name,)).one()
            assert tuple(plans) == (3, 0)
        finally:
            connection.invalidate()  # not back to the pool with the statement prepared


def test_a_connection_left_in_autocommit_comes_back_from_the_pool_in_transactions(
    config: Config,
) -> None:
    """An asynchronous exception (a Dramatiq time limit) that lands between `autocommit`'s
    switch and its `finally` leaves the driver in autocommit: the pool switches it back, or
    the next user's transaction would commit statement by statement."""
    container = build(config)  # a pool of its own: the connection returned is the one reused
    try:
        with container.engine.connect() as connection:
            left = connection.connection.dbapi_connection
            assert left is not None
            left.autocommit = True  # as the cut block leaves it
        with container.engine.connect() as connection:
            assert connection.connection.dbapi_connection is left
            connection.exec_driver_sql("SELECT 1")
            assert left.get_transaction_status() == TRANSACTION_STATUS_INTRANS
    finally:
        container.engine.dispose()


def test_a_constant_in_a_cte_named_only_by_its_columns_goes_into_the_sql(
    container: Container,
) -> None:
    """As in charge's settle, an UPDATE ... RETURNING that another one reaches through its
    columns alone (an implicit FROM): its constants are rendered into the SQL like the
    others, not left as parameters nobody passes."""
    metadata = MetaData()
    probe, copy = (Table(name, metadata, Column("id", String(10), primary_key=True),
                         Column("note", String(10))) for name in ("inline_probe", "inline_copy"))
    marked = (update(probe).where(probe.c.note == "new").values(note="seen")
              .returning(probe.c.id).cte("marked"))
    copied = (update(copy).where(copy.c.id == marked.c.id)
              .values(note=bindparam("note", type_=String)).returning(copy.c.id).cte("copied"))
    statement = Prepared("inline_probe", select(copied.c.id).order_by(copied.c.id))
    with container.engine.connect() as connection:
        try:
            for name in ("inline_probe", "inline_copy"):
                connection.exec_driver_sql(f"CREATE TABLE {name} (id varchar(10) PRIMARY KEY,"
                                           " note varchar(10))")
            connection.exec_driver_sql("INSERT INTO inline_probe VALUES ('a', 'new'),"
                                       " ('b', 'old'), ('c', 'new')")
            connection.exec_driver_sql("INSERT INTO inline_copy SELECT * FROM inline_probe")
            assert list(statement.execute(connection, {"note": "copied"}).scalars()) == [
                "a", "c"]
            assert list(connection.exec_driver_sql(
                "SELECT note FROM inline_probe ORDER BY id").scalars()) == ["seen", "old", "seen"]
        finally:
            connection.rollback()
            connection.invalidate()  # not back to the pool with the statement prepared
