"""Progress lines on stderr that read well both in a terminal and in a log file."""

from __future__ import annotations


def progress_step(stream, prefix: str, done: int, total: int) -> None:
    """``prefix N/total``: redrawn in place on a terminal; in a log, only the first and last step,
    each on its own line (``\\r`` would glue every step into one line there)."""
    text = f"{prefix} {done}/{total}"
    if getattr(stream, "isatty", lambda: False)():
        print(text, file=stream, end="\r" if done < total else "\n", flush=True)
    elif done in (1, total):
        print(text, file=stream, flush=True)
