"""What several built-in datasets share: pinned GitHub URLs and the NYC flow protocol notes."""

from __future__ import annotations


def github_raw(repo: str, commit: str, path: str) -> str:
    """The raw-file URL of ``path`` in GitHub repository ``repo`` at ``commit``."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


# Protocol notes of the NYC flow datasets (taxi and bike on Manhattan zones, taxi grid).
ZERO_MASK_NOTE = ("targets <= 0 are masked in the training loss and in every metric: the "
                  "FlowDistill release's convention (loss mask_value = 0.001, metrics keep "
                  "true > 0 with mae_thresh = 0; identical on counts), as BasicTS and LargeST "
                  "mask zeros on flow data; records also carry the metrics over all targets "
                  "(metrics.<split>.all_targets); mask_threshold=null selects the unmasked "
                  "protocol")
MAPE_NOTE = ("MAPE over the same non-zero targets as MAE/RMSE, as in the release (no further "
             "threshold)")
