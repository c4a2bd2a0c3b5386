"""What every command-line entry point does with a user error: one line on stderr and a non-zero exit, never a
traceback (`MIXER_ZOO_TRACEBACK=1` shows it)."""

import os
import sys
from collections.abc import Callable

# Errors a user's input causes (bad names, paths, values, files); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, FloatingPointError)


def run(main: Callable[[], int], prog: str) -> int:
    """`main()`'s exit status; a user error or Ctrl-C becomes one line on stderr and status 2 or 130."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("MIXER_ZOO_TRACEBACK"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
