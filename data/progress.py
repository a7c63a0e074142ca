"""Progress bars that suit a terminal and a log file alike."""

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm, live on a terminal; into a log (CI, a pipe, nohup) one line every 30 s instead of one
    per update, which would bury everything else in the log."""
    live = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if live else LOG_INTERVAL_S)
    kwargs.setdefault("dynamic_ncols", live)
    kwargs.setdefault("ascii", None if live else True)
    return tqdm(iterable, **kwargs)
