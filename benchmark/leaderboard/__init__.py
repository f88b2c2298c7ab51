"""Leaderboard: submission format, validation by recomputation, storage and rendering.

Modules: :mod:`.schema` (metadata), :mod:`.npzsafe` (safe predictions file), :mod:`.validate`
(identity, ground truth, recomputed metrics), :mod:`.store` (append-only entries), :mod:`.render`
(rows, markdown), :mod:`.site` (the static site), :mod:`.screenshots` (the site in headless
Chromium), :mod:`.predict` (submissions from registered models), :mod:`.cli`.
See docs/leaderboard.md.
"""

from .cli import add_leaderboard_commands
from .schema import SubmissionError
from .store import load_entries, render, submit
from .validate import ValidationResult, validate_submission

__all__ = ["SubmissionError", "ValidationResult", "add_leaderboard_commands", "load_entries",
           "render", "submit", "validate_submission"]
