"""Exceptions of the QOM layer (QEMU reports these through ``Error **errp``)."""

from pyqemu.util.error import PyQemuError

__all__ = [
    "AbstractTypeError", "CastError", "PathError", "PropertyAccessError", "PropertyNotFoundError",
    "PropertyValueError", "QOMError", "TypeNotFoundError", "TypeRegistrationError",
]


class QOMError(PyQemuError):
    """Root of the object model's errors."""


class TypeNotFoundError(QOMError, LookupError):
    """``object_new`` or a cast named a type that is not registered."""


class AbstractTypeError(QOMError, TypeError):
    """``object_new`` was asked for an abstract type."""


class TypeRegistrationError(QOMError, ValueError):
    """A TypeInfo is malformed, duplicated or names a missing parent."""


class CastError(QOMError, TypeError):
    """A checked cast (QEMU's ``OBJECT_CHECK``) found an object of another type."""


class PropertyNotFoundError(QOMError, LookupError):
    """An object has no property of that name."""


class PropertyValueError(QOMError, ValueError):
    """A property was given a value of the wrong type or out of range."""


class PropertyAccessError(QOMError, PermissionError):
    """A property cannot be read or written (no getter/setter, or frozen once realized)."""


class PathError(QOMError, LookupError):
    """A composition-tree path does not resolve."""
