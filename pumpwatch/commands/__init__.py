"""Subcommands of ``pumpwatch``: one module each, discovered by :mod:`pumpwatch.cli`."""
