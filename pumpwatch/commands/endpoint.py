"""``pumpwatch endpoint``: run the SageMaker-compatible model server locally."""

from __future__ import annotations

import argparse
import asyncio

from ._roles import Role

ROLE = Role("models", ("aiohttp",))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "endpoint",
        help="serve models over the SageMaker endpoint contract (/ping, /invocations)",
        description=(
            "Serve the model bundle in --model-dir; without it, what the local registry has "
            "deployed to --name (hot-reloaded on `pumpwatch models deploy`), or the built-in "
            "physics-only bundle when nothing is deployed yet."
        ),
    )
    # The server's own arguments. Its module imports aiohttp: without the role the
    # import fails here, after the command is listed, and pumpwatch.cli reports the extra.
    from models.serving.server import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models.registry.local import default_registry_path
    from models.serving.server import config_from_args, serve

    if args.model_dir is None and args.registry is None:
        args.registry = default_registry_path()
    return asyncio.run(serve(config_from_args(args), announce=lambda s: print(s, flush=True)))
