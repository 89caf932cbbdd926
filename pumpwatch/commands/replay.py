"""``pumpwatch replay FILE... --pump ID --config edge.toml``: recordings through the agent."""

from __future__ import annotations

import argparse

from ._roles import Role

ROLE = Role("edge", ("paho",))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay recordings through the edge agent (own stream epoch)",
        description="Replay recorded vibration (CWRU .mat, IMS text, WAV, CSV, NPY/NPZ) through "
        "the same agent as `pumpwatch edge`, as one pump of the config, with its own stream "
        "epoch and spool (<spool.path>-replay). Exits once every report was acknowledged.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="recordings, played in order")
    p.add_argument("--config", required=True, help="the agent's TOML config")
    p.add_argument("--pump", required=True, help="which configured pump the recording is")
    p.add_argument("--fs", type=float, help="sample rate in Hz (when the file has none)")
    p.add_argument("--force-fs", action="store_true",
                   help="take --fs even where it contradicts the file's own rate (its header, "
                   "CWRU 12k_/48k_ name prefix or metadata); without it that is an error")
    p.add_argument("--scale", type=float, help="multiply samples by K to get m/s^2")
    p.add_argument("--rpm", type=float, help="running speed to report (given)")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="playback speed factor (20 = twenty times real time); default: as fast "
        "as the agent computes",
    )
    p.add_argument("--loop", action="store_true", help="play the files again and again")
    p.add_argument(
        "--channel", action="append", type=channel_map, default=None,
        metavar="SEL[=PUMP_CHANNEL]",
        help="replay this recording channel (a name, 0-based column index or .mat variable "
        "suffix such as FE_time, as `baseline fit --channel` takes it) as the pump's channel "
        "PUMP_CHANNEL (default: the pump's channels in order); repeatable. Without it every "
        "recording channel is replayed, mapped in order",
    )
    p.set_defaults(func=run)


def channel_map(text: str) -> tuple[str, str | None]:
    """``FE_time=y`` -> ``("FE_time", "y")``; ``2`` -> ``("2", None)``."""
    sel, sep, name = text.partition("=")
    if not sel or (sep and not name):
        raise argparse.ArgumentTypeError(f"expected SEL or SEL=PUMP_CHANNEL, got {text!r}")
    return sel, name or None


def run(args: argparse.Namespace) -> int:
    from edge.run import replay_main

    return replay_main(
        args.config,
        args.files,
        pump=args.pump,
        fs=args.fs,
        force_fs=args.force_fs,
        scale=args.scale,
        rpm=args.rpm,
        speed=args.speed,
        loop=args.loop,
        channels=args.channel,
    )
