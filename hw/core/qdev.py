"""The device core: ``DeviceState``/``DeviceClass`` and the ``realized`` property (``qdev.c``).

Devices live in two phases.  ``instance_init`` cannot fail and touches nothing
outside the object; ``realize`` may fail, and then it must undo exactly what it
did: ``device_set_realized`` leaves a device whose realize raised unrealized.
Setting ``realized`` to true calls ``dc.realize``; a subclass chains to its
parent's realize through ``device_class_set_parent_realize``.  Static
properties (``device_class_set_props``) can be set until the device is
realized and are frozen afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyqemu.hw.core.errors import DeviceError
from pyqemu.qom import (
    Object,
    ObjectClass,
    PropertyAccessError,
    TypeInfo,
    check_property_value,
    container_get,
    object_class_property_add,
    object_get_canonical_path,
    object_get_root,
    object_new,
    object_property_add_bool,
    object_property_add_child,
    object_property_set_bool,
    object_unref,
    type_init,
)
from pyqemu.util import trace

__all__ = [
    "TYPE_DEVICE",
    "DeviceClass",
    "DeviceState",
    "Property",
    "Realize",
    "device_class_set_parent_realize",
    "device_class_set_parent_unrealize",
    "device_class_set_props",
    "device_get_realized",
    "device_set_realized",
    "qdev_new",
    "qdev_prop_set",
    "qdev_realize",
    "qdev_unrealize",
]

TYPE_DEVICE = "device"

Realize = Callable[["DeviceState"], None]


@dataclass
class Property:
    """A static device property (``Property`` / ``DEFINE_PROP_*``): a typed field with a default."""

    name: str
    type: str                 # "bool", "uint8".."uint64", "int32", "str"
    default: Any = None
    field: str | None = None  # attribute of the DeviceState; defaults to the name with '-' -> '_'
    description: str = ""

    @property
    def attr(self) -> str:
        return self.field or self.name.replace("-", "_")


class DeviceClass(ObjectClass):
    """``DeviceClass``: realize/unrealize, reset, static properties."""

    realize: Realize | None = None
    unrealize: Realize | None = None
    reset: Callable[[DeviceState], None] | None = None
    props: Sequence[Property] = ()           # each class's own list: device_class_set_props
    desc: str = ""
    user_creatable: bool = False
    category: str = "misc"


class DeviceState(Object):
    """``DeviceState``: a device and whether it is realized.

    ``machine`` is the board the device is plugged into (QEMU's
    ``qdev_get_machine()``), set by the board before realize; ISA devices find
    the I/O space there.
    """

    realized: bool
    id: str | None
    machine: Any


def device_class_set_parent_realize(dc: DeviceClass, realize: Realize) -> Realize | None:
    """Install ``realize``; return the one it replaces, for the subclass to chain to."""
    parent = dc.realize
    dc.realize = realize
    return parent


def device_class_set_parent_unrealize(dc: DeviceClass, unrealize: Realize) -> Realize | None:
    parent = dc.unrealize
    dc.unrealize = unrealize
    return parent


def device_class_set_props(dc: DeviceClass, props: list[Property]) -> None:
    """Declare static properties: one class property each, settable until realize."""
    dc.props = list(dc.props) + list(props)
    for p in props:
        def get(o: Object, p: Property = p) -> Any:
            return getattr(o, p.attr)

        def set(o: Object, value: Any, p: Property = p) -> None:
            if isinstance(o, DeviceState) and o.realized:
                raise PropertyAccessError(
                    f"property '{p.name}' of {o.typename} cannot be set after realize")
            setattr(o, p.attr, value)

        object_class_property_add(dc, p.name, p.type, get, set, p.description)


def device_get_realized(dev: Object) -> bool:
    assert isinstance(dev, DeviceState)
    return dev.realized


def device_set_realized(dev: Object, value: bool) -> None:
    """The setter of ``realized`` (``device_set_realized``): realize or unrealize."""
    assert isinstance(dev, DeviceState)
    dc = dev.klass
    assert isinstance(dc, DeviceClass)
    with trace.span("device_set_realized", type=dev.typename, value=value):
        if value and not dev.realized:
            if object_get_canonical_path(dev) is None:
                # QEMU puts parentless devices under /machine/unattached.
                unattached = container_get(object_get_root(), "/machine/unattached")
                object_property_add_child(unattached, "device[*]", dev)
            if dc.realize is not None:
                dc.realize(dev)  # on failure the device stays unrealized
            dev.realized = True
            if dc.reset is not None:
                dc.reset(dev)
        elif not value and dev.realized:
            if dc.unrealize is not None:
                dc.unrealize(dev)
            dev.realized = False


def device_initfn(obj: Object) -> None:
    """``device_initfn``: the ``realized`` property, static property defaults."""
    dev = obj
    dc = obj.klass
    assert isinstance(dev, DeviceState) and isinstance(dc, DeviceClass)
    dev.realized = False
    dev.id = None
    dev.machine = None
    object_property_add_bool(obj, "realized", device_get_realized, device_set_realized)
    for p in dc.props:
        setattr(obj, p.attr, p.default)


def device_class_init(klass: ObjectClass, data: Any) -> None:
    assert isinstance(klass, DeviceClass)
    klass.props = []


def qdev_new(typename: str) -> DeviceState:
    dev = object_new(typename)
    if not isinstance(dev, DeviceState):
        object_unref(dev)
        raise DeviceError(f"'{typename}' is not a device")
    return dev


def qdev_prop_set(dev: DeviceState, name: str, value: Any) -> None:
    """Set a property from a string or value, as ``-device x,name=value`` does."""
    prop = dev.property_find(name)
    if prop is None:
        raise DeviceError(f"device '{dev.typename}' has no property '{name}'")
    dev.property_set(name, check_property_value(dev.typename, name, prop.type, value))


def qdev_realize(dev: DeviceState) -> None:
    object_property_set_bool(dev, "realized", True)


def qdev_unrealize(dev: DeviceState) -> None:
    object_property_set_bool(dev, "realized", False)


type_init(TypeInfo(
    name=TYPE_DEVICE, parent="object", abstract=True,
    instance_type=DeviceState, class_type=DeviceClass,
    instance_init=device_initfn, class_init=device_class_init,
))
