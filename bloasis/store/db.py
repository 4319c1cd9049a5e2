"""Engine creation and schema migrations (Alembic, run programmatically: no alembic.ini needed)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine

from bloasis.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises concurrent `db upgrade` calls (two runs starting at once on a fresh database).
MIGRATION_LOCK_ID = 0x0B10A515


def to_sqlalchemy_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        to_sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"connect_timeout": 5, "application_name": "bloasis"},
    )


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One pooled engine per URL per process."""
    return make_engine(url)


def get_engine(settings: Settings) -> Engine:
    return engine_for(settings.require("database_url"))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", to_sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
