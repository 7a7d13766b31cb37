"""Command-line plumbing shared by `facenet` and `facenet-convert`: option types that refuse
out-of-range values at parse time (argparse: usage line and exit 2, before any work), and the one
mapping of failures to exit codes.

Exit codes: 0 ok; 1 parity outside tolerance (facenet-convert only; nothing else); 2 bad input or
environment fault (a bad file or option, a full disk, a name too long, out of memory), one line
naming it (our own instructions, such as where weights were looked for and the command that makes
them, are printed whole); 3 internal error, a bug (traceback printed); 130 interrupted.
"""
from __future__ import annotations

import argparse
import math
import sys
import traceback
from typing import Callable

EXIT_OK, EXIT_PARITY, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def in_range(kind: Callable = int, lo=None, hi=None) -> Callable[[str], object]:
    """An argparse `type`: `kind(text)`, within [lo, hi] (either end open when None)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = (f"between {lo} and {hi}" if lo is not None and hi is not None
                      else f"at least {lo}" if lo is not None else f"at most {hi}")
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value
    parse.__name__ = kind.__name__   # argparse names the type in its messages
    return parse


def finite(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """An argparse `type` for a finite float in [lo, hi] (nan and inf refused)."""
    return in_range(float, lo, hi)


def one_line(msg: str, limit: int = 300) -> str:
    """The first line of a message (torch's load errors run to several), at most `limit` chars."""
    line = (str(msg).strip().splitlines() or [""])[0].strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def guided(e: BaseException | None) -> bool:
    """Whether `e` (or what it was raised from) is one of our messages that is a set of
    instructions (where we looked, the command to run): printed whole, not cut to one line."""
    while e is not None:
        if getattr(e, "guided", False):
            return True
        e = e.__cause__
    return False


def run_guarded(command: Callable[[], int], *, prefix: str, bad_input: tuple = (), parity: tuple | type = (),
                first_line_only: bool = False) -> int:
    """Run a CLI command and turn what it raises into the exit codes above."""
    def say(text: str, whole: bool = False) -> None:
        print(f"{prefix}: {one_line(text) if first_line_only and not whole else text}", file=sys.stderr)

    try:
        return command()
    except bad_input as e:
        say(str(e), whole=guided(e))
        return EXIT_BAD_INPUT
    except parity as e:
        print(f"parity: {e}", file=sys.stderr)
        return EXIT_PARITY
    except OSError as e:   # disk full, read-only folder, name too long, permission denied, ...
        where = f"{e.filename}: " if e.filename else ""
        say(f"{where}{e.strerror or e}")
        return EXIT_BAD_INPUT
    except MemoryError:
        say("out of memory: try a smaller --batch-size or smaller inputs")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(f"{prefix}: internal error (a bug: please report it with the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL
