-- Run once by the postgres image on an empty volume: the Prefect server's own database, next to
-- `bloasis` (each keeps its own alembic_version table).
CREATE DATABASE prefect;
