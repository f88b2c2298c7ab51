"""Leaderboard submissions: format, validation by recomputation, storage and rendering."""

from __future__ import annotations

import argparse


def add_leaderboard_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``flowdistill leaderboard ...`` and ``flowdistill predict ...`` (work in progress)."""
    p = sub.add_parser("leaderboard", help="validate, submit and render leaderboard entries")
    p.set_defaults(func=lambda args: 0)
