"""The errors graphgen reports to its user: each says what is wrong in the user's terms.

The command line prints a :class:`GraphgenError`'s message and exits with status 2, without a
traceback. Any other exception is a bug in graphgen and keeps its traceback. Domain errors
elsewhere (a bad checkpoint, an unreadable model file, metadata a reader cannot use) subclass
both this and ``ValueError``, so library callers may catch either.
"""

from __future__ import annotations


class GraphgenError(Exception):
    """A mistake in what the user asked for or in a file they gave: reported as a message, exit 2."""


class UserError(GraphgenError, ValueError):
    """A request graphgen cannot carry out as asked (a bad combination of flags, a missing folder)."""


class OptionError(UserError):
    """An architecture option the architecture does not take, or a value outside its choices."""
