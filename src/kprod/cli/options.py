"""Options shared by the CLI's commands (on the public API only, like the rest of kprod.cli)."""

from __future__ import annotations

import argparse

__all__ = ["add_bootstrap_servers"]


def add_bootstrap_servers(parser: argparse.ArgumentParser, *, help: str, short: bool = True) -> None:
    """``--bootstrap-server`` / ``--bootstrap-servers`` (and ``-b`` when ``short``) ``HOST:PORT[,...]``
    into ``args.bootstrap_servers``; None when not given (the commands then start the embedded broker)."""
    names = ["--bootstrap-server", "--bootstrap-servers", *(["-b"] if short else [])]
    parser.add_argument(*names, dest="bootstrap_servers", default=None, metavar="HOST:PORT", help=help)
