"""The dashboard's handle on the results store: opened on first use, read only.

The dashboard may start before the consumer has created the store (or while
PostgreSQL is down): each read then fails with a :class:`StoreError` (a 503
to clients) and the next read tries to open again. SQLite stores are opened
``readonly`` (``mode=ro``: the dashboard never writes, and never blocks the
consumer) unless the handle is ``writable`` (the alarm lifecycle's, see
:mod:`.lifecycle`); a PostgreSQL store is the shared one, through a small pool.
"""

from __future__ import annotations

import asyncio

from cloud.store import Store, make_store


class StoreHandle:
    """``await handle.get()`` -> the open store (see the module docstring)."""

    def __init__(self, url: str, *, pool_size: int = 4, writable: bool = False) -> None:
        self.url = url
        self._writable = writable  # SQLite: read-write (the alarm lifecycle's writes)
        self._pool_size = pool_size
        self._store: Store | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Store:
        if self._store is not None:
            return self._store
        async with self._lock:
            if self._store is None:
                sqlite = "://" not in self.url or self.url.startswith("sqlite:")
                store = make_store(self.url, readonly=not self._writable) if sqlite else make_store(
                    self.url, pool_size=self._pool_size)
                await store.open()
                self._store = store
            return self._store

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()
