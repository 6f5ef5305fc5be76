"""The root of pyqemu's exception hierarchy.

Every package has one exception module whose classes derive from
:class:`PyQemuError` (and, where it fits, from the right builtin), so a caller
can catch everything pyqemu raises with one ``except``.  QEMU's ``Error **errp``
becomes an exception; a *user* error (bad value, unknown model) has a message
that names the thing, a *programmer* error is an ordinary assertion.
"""


class PyQemuError(Exception):
    """Root of every pyqemu exception."""
