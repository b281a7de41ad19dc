"""Replica settings and WAL positions."""

from __future__ import annotations

from app.config import Config
from app.replicas import parse_lsn


def test_plain_postgresql_urls_get_the_installed_driver() -> None:
    config = Config.from_env({
        "DATABASE_URL": "postgresql://app@db:5432/se",
        "DATABASE_REPLICA_URLS": " postgres://app@r1/se?sslmode=require, ,"
                                 "postgresql+psycopg2://app@r2/se ",
    })
    assert config.database_url == "postgresql+psycopg2://app@db:5432/se"
    assert config.database_replica_urls == (
        "postgresql+psycopg2://app@r1/se?sslmode=require,postgresql+psycopg2://app@r2/se"
    )
    assert Config.from_env({}).database_replica_urls == ""


def test_wal_positions_compare_as_numbers() -> None:
    assert parse_lsn("0/3000000") == 0x3000000
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
    assert parse_lsn(None) == 0
