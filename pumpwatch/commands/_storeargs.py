"""Shared CLI plumbing for commands that read the results store: URL and time arguments."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path


def default_store_url() -> str:
    """``$PUMPWATCH_STORE``, else the local stack's store.

    ``pumpwatch up`` writes ``state/pumpwatch.db``; it is found by the rule
    ``pumpwatch models`` finds ``state/registry`` by: ``$PUMPWATCH_STATE``, else ``./state``.
    """
    if env := os.environ.get("PUMPWATCH_STORE"):
        return env
    return f"sqlite:///{Path(os.environ.get('PUMPWATCH_STATE', 'state')) / 'pumpwatch.db'}"


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--store", help="results store URL (default: $PUMPWATCH_STORE, else the local "
        "stack's sqlite:///state/pumpwatch.db, state being $PUMPWATCH_STATE or ./state)"
    )
    g.add_argument("--config", help="take the store URL from this consumer config (TOML)")


def store_url(args: argparse.Namespace) -> str:
    if getattr(args, "store", None):
        return str(args.store)
    if getattr(args, "config", None):
        from cloud.consumer import load_config

        return load_config(args.config).store.url
    return default_store_url()


def iso_ns(text: str) -> int:
    """ISO 8601 (``2026-11-26``, ``2026-11-26T10:00:00Z``; naive = UTC) -> ns since epoch."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def ns_iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
