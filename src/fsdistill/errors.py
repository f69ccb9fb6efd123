"""The one exception type for user mistakes: CLIs print it (no traceback) and exit with status 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (config, data file, output folder, checkpoint): shown without traceback."""


def exit_on_user_error(main: Callable) -> Callable:
    """Wrap a CLI main(): a UserError is printed to stderr and the process exits 2, without a traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
