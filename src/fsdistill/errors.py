"""The exceptions a command line turns into one line and an exit status, without a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (config, data file, output folder, checkpoint): shown without traceback."""


class Interrupted(Exception):
    """A run stopped on a signal after writing a checkpoint; exits with 128 + the signal's number, as a
    process killed by it would, so `train && evaluate` does not go on. `quiet`: exit without printing (the
    processes other than the main one of a multi-process run: one line says how to resume, not one per
    process)."""

    def __init__(self, message: str, exit_status: int, quiet: bool = False):
        super().__init__(message)
        self.exit_status, self.quiet = exit_status, quiet


def exit_on_user_error(main: Callable) -> Callable:
    """Wrap a CLI main(): a UserError is printed to stderr and the process exits 2; an Interrupted run
    prints where its checkpoint is and exits 128 + signal; a Ctrl-C that nothing caught (the second one of
    a training run, or one during evaluation) exits 130. None prints a traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as e:
            if not e.quiet:
                print(f"interrupted: {e}", file=sys.stderr)
            sys.exit(e.exit_status)
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C): stopped at once; files already written are intact", file=sys.stderr)
            sys.exit(130)

    return wrapped
