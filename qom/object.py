"""The QEMU Object Model: types, classes, objects and properties (``qom/object.c``).

A type is registered with a :class:`TypeInfo` (``type_register_static``), usually
at import time, which is what QEMU's ``type_init`` does before ``main``.  Its class
is built lazily on first use (``type_initialize``): the parent's class first, then
every ancestor's ``class_base_init``, then the type's own ``class_init``.
``object_new`` runs ``instance_init`` from the root type down, then
``instance_post_init`` from the root down; finalisation runs ``instance_finalize``
from the leaf up.

Python classes carry the fields (``instance_type``/``class_type`` play the part of
``instance_size``/``class_size``): a TypeInfo that does not name one inherits the
parent's.  Casts are by QOM type name, not Python class, as in QEMU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyqemu.qom.errors import (
    AbstractTypeError,
    CastError,
    PathError,
    PropertyAccessError,
    PropertyNotFoundError,
    PropertyValueError,
    TypeNotFoundError,
    TypeRegistrationError,
)
from pyqemu.util import trace

TYPE_OBJECT = "object"
TYPE_INTERFACE = "interface"
TYPE_CONTAINER = "container"


@dataclass
class TypeInfo:
    """The record a type is registered with (``TypeInfo`` in ``include/qom/object.h``)."""

    name: str
    parent: str | None = TYPE_OBJECT
    abstract: bool = False
    instance_type: type[Object] | None = None
    class_type: type[ObjectClass] | None = None
    instance_init: Callable[[Object], None] | None = None
    instance_post_init: Callable[[Object], None] | None = None
    instance_finalize: Callable[[Object], None] | None = None
    class_init: Callable[[ObjectClass, Any], None] | None = None
    class_base_init: Callable[[ObjectClass, Any], None] | None = None
    class_data: Any = None
    interfaces: tuple[str, ...] = ()


@dataclass
class TypeImpl:
    """A registered type and, once initialised, its class."""

    info: TypeInfo
    parent_type: TypeImpl | None = None
    klass: ObjectClass | None = None
    ancestors: tuple[str, ...] = ()
    instance_type: type[Object] | None = None
    class_type: type[ObjectClass] | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def abstract(self) -> bool:
        return self.info.abstract


_types: dict[str, TypeImpl] = {}
_types_lock = threading.RLock()


def type_register_static(info: TypeInfo) -> TypeImpl:
    """Register ``info`` (``type_register_static``); the class is built on first use."""
    if not info.name:
        raise TypeRegistrationError("a type needs a name")
    with _types_lock:
        if info.name in _types:
            raise TypeRegistrationError(f"type '{info.name}' is already registered")
        impl = TypeImpl(info=info)
        _types[info.name] = impl
        return impl


def type_init(*infos: TypeInfo) -> None:
    """Register several types at import time, as QEMU's ``type_init`` hook does."""
    for info in infos:
        type_register_static(info)


def type_get_by_name(name: str) -> TypeImpl | None:
    return _types.get(name)


def _type_get_or_raise(name: str) -> TypeImpl:
    impl = _types.get(name)
    if impl is None:
        raise TypeNotFoundError(f"unknown type '{name}'")
    return impl


def type_initialize(ti: TypeImpl) -> ObjectClass:
    """Build ``ti``'s class if needed: parent first, then class_base_init, then class_init."""
    if ti.klass is not None:
        return ti.klass
    with _types_lock:
        if ti.klass is not None:
            return ti.klass
        with trace.span("type_initialize", type=ti.name):
            parent: ObjectClass | None = None
            if ti.info.parent is not None:
                if ti.info.parent not in _types:
                    raise TypeRegistrationError(
                        f"type '{ti.name}' has unknown parent '{ti.info.parent}'")
                ti.parent_type = _types[ti.info.parent]
                parent = type_initialize(ti.parent_type)
            pt = ti.parent_type
            ti.ancestors = (ti.name,) + (pt.ancestors if pt else ())
            ti.instance_type = ti.info.instance_type or (pt.instance_type if pt else Object)
            class_type = ti.info.class_type or (pt.class_type if pt else None) or ObjectClass
            ti.class_type = class_type
            klass = class_type.__new__(class_type)
            if parent is not None:
                # memcpy(ti->class, parent->class, parent->class_size): the class
                # starts as a copy of its parent's, which class_init then overrides.
                klass.__dict__.update(
                    {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                     for k, v in parent.__dict__.items()})
            klass.type = ti
            klass.interfaces = tuple(
                i for i in ((parent.interfaces if parent else ()) + ti.info.interfaces))
            klass.properties = dict(parent.properties) if parent else {}
            # class_base_init of every ancestor, nearest first (QEMU walks parents).
            a = pt
            while a is not None:
                if a.info.class_base_init is not None:
                    a.info.class_base_init(klass, ti.info.class_data)
                a = a.parent_type
            if ti.info.class_init is not None:
                with trace.span("class_init", type=ti.name):
                    ti.info.class_init(klass, ti.info.class_data)
            ti.klass = klass
        return klass


class ObjectClass:
    """The class of a QOM type (``ObjectClass``); subclasses add fields (``DeviceClass``)."""

    type: TypeImpl
    interfaces: tuple[str, ...]
    properties: dict[str, ClassProperty]

    def __init__(self) -> None:  # pragma: no cover - classes are built by type_initialize
        raise TypeError("ObjectClass instances are built by type_initialize")

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def parent(self) -> ObjectClass | None:
        pt = self.type.parent_type
        return type_initialize(pt) if pt is not None else None

    @property
    def abstract(self) -> bool:
        return self.type.abstract

    def is_a(self, typename: str) -> bool:
        return typename in self.type.ancestors or typename in self.interfaces

    def __repr__(self) -> str:
        return f"<class {self.name}>"


def object_class_by_name(name: str) -> ObjectClass | None:
    """``object_class_by_name``: the class of a registered type, or None."""
    impl = _types.get(name)
    return type_initialize(impl) if impl is not None else None


def object_class_dynamic_cast(klass: ObjectClass | None, typename: str) -> ObjectClass | None:
    if klass is not None and klass.is_a(typename):
        return klass
    return None


def object_class_get_parent(klass: ObjectClass) -> ObjectClass | None:
    return klass.parent


def object_class_get_list(implements: str, include_abstract: bool = False) -> list[ObjectClass]:
    """Every registered class that is (or implements) ``implements``, sorted by name.

    Only the matching classes are initialised (QEMU's ``object_class_foreach``
    initialises every type; deferring keeps the lifecycle trace showing each
    class_init where the class is first needed)."""
    out = []
    for name in sorted(_types):
        impl = _types[name]
        if not _type_is_a(impl, implements) or (impl.abstract and not include_abstract):
            continue
        out.append(type_initialize(impl))
    return out


def _type_is_a(impl: TypeImpl, typename: str) -> bool:
    """Whether ``impl`` is or derives from / implements ``typename``, by the TypeInfo chain."""
    t: TypeImpl | None = impl
    while t is not None:
        if t.name == typename or typename in t.info.interfaces:
            return True
        t = _types.get(t.info.parent) if t.info.parent else None
    return False


# ---------------------------------------------------------------------------
# Properties


@dataclass
class ObjectProperty:
    """One property of an object (``ObjectProperty``): a name, a type string and accessors."""

    name: str
    type: str
    get: Callable[[Object], Any] | None = None
    set: Callable[[Object, Any], None] | None = None
    release: Callable[[Object], None] | None = None
    description: str = ""
    opaque: Any = None


@dataclass
class ClassProperty:
    """A property declared on a class; every instance gets it (``object_class_property_add``)."""

    name: str
    type: str
    get: Callable[[Object], Any] | None = None
    set: Callable[[Object, Any], None] | None = None
    description: str = ""


_INT_RANGES = {
    "uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF),
    "uint64": (0, 0xFFFFFFFFFFFFFFFF), "int8": (-0x80, 0x7F), "int16": (-0x8000, 0x7FFF),
    "int32": (-0x80000000, 0x7FFFFFFF), "int64": (-(1 << 63), (1 << 63) - 1),
    "int": (-(1 << 63), (1 << 63) - 1), "size": (0, 0xFFFFFFFFFFFFFFFF),
}


def check_property_value(obj_desc: str, name: str, ptype: str, value: Any) -> Any:
    """Check ``value`` against a property type string; return it normalised.

    Strings are accepted for bool and integer properties with QEMU's spellings
    (``on``/``off``, ``0x10``), since ``-device x,prop=val`` passes strings.
    """
    where = f"property '{name}' of {obj_desc}"
    if ptype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.lower()
            if low in ("on", "true", "yes", "y"):
                return True
            if low in ("off", "false", "no", "n"):
                return False
        raise PropertyValueError(f"{where} expects a bool (on/off), not {value!r}")
    if ptype in _INT_RANGES:
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise PropertyValueError(f"{where} expects an integer, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise PropertyValueError(f"{where} expects an integer, not {value!r}")
        lo, hi = _INT_RANGES[ptype]
        if not lo <= value <= hi:
            raise PropertyValueError(f"{where} ({ptype}) is out of range: {value}")
        return value
    if ptype == "str":
        if not isinstance(value, str):
            raise PropertyValueError(f"{where} expects a string, not {value!r}")
        return value
    return value


class Object:
    """An instance of a QOM type (``Object``)."""

    klass: ObjectClass
    # Set by object_initialize_with_type (objects are never built by __init__):
    _props: dict[str, ObjectProperty]       # instance properties (obj->properties)
    _parent: Object | None                  # the composition-tree parent (obj->parent)
    _name: str | None                       # this object's child<> name in its parent
    _refcount: int
    _finalized: bool

    def __init__(self) -> None:  # pragma: no cover - objects are built by object_new
        raise TypeError("use object_new(typename)")

    # typename and casts -------------------------------------------------
    @property
    def typename(self) -> str:
        return self.klass.name

    def is_a(self, typename: str) -> bool:
        return self.klass.is_a(typename)

    def __repr__(self) -> str:
        path = object_get_canonical_path(self)
        return f"<{self.typename} {path or hex(id(self))}>"

    # properties ----------------------------------------------------------
    def property_add(self, prop: ObjectProperty) -> ObjectProperty:
        if prop.name in self._props or prop.name in self.klass.properties:
            raise PropertyAccessError(
                f"property '{prop.name}' already exists on {self.typename}")
        self._props[prop.name] = prop
        return prop

    def property_find(self, name: str) -> ObjectProperty | ClassProperty | None:
        return self._props.get(name) or self.klass.properties.get(name)

    def property_del(self, name: str) -> None:
        prop = self._props.pop(name, None)
        if prop is None:
            raise PropertyNotFoundError(f"{self.typename} has no property '{name}'")
        if prop.release is not None:
            prop.release(self)

    def property_list(self) -> list[ObjectProperty | ClassProperty]:
        """Class properties first (declaration order), then instance properties."""
        seen: dict[str, ObjectProperty | ClassProperty] = dict(self.klass.properties)
        seen.update(self._props)
        return list(seen.values())

    def property_get(self, name: str) -> Any:
        prop = self.property_find(name)
        if prop is None:
            raise PropertyNotFoundError(f"{self.typename} has no property '{name}'")
        if prop.get is None:
            raise PropertyAccessError(f"property '{name}' of {self.typename} is not readable")
        return prop.get(self)

    def property_set(self, name: str, value: Any) -> None:
        prop = self.property_find(name)
        if prop is None:
            raise PropertyNotFoundError(f"{self.typename} has no property '{name}'")
        if prop.set is None:
            raise PropertyAccessError(f"property '{name}' of {self.typename} is read-only")
        value = check_property_value(self.typename, name, prop.type, value)
        prop.set(self, value)

    # composition --------------------------------------------------------------
    @property
    def parent(self) -> Object | None:
        return self._parent

    def children(self) -> Iterator[tuple[str, Object]]:
        for name, prop in list(self._props.items()):
            if prop.type.startswith("child<"):
                yield name, prop.opaque


def _object_init_with_type(obj: Object, ti: TypeImpl) -> None:
    if ti.parent_type is not None:
        _object_init_with_type(obj, ti.parent_type)
    if ti.info.instance_init is not None:
        with trace.span("instance_init", type=ti.name):
            ti.info.instance_init(obj)


def _object_post_init_with_type(obj: Object, ti: TypeImpl) -> None:
    if ti.parent_type is not None:
        _object_post_init_with_type(obj, ti.parent_type)
    if ti.info.instance_post_init is not None:
        ti.info.instance_post_init(obj)


def object_new(typename: str) -> Object:
    """``object_new``: allocate, initialise the class if needed, run instance_init root first."""
    with trace.span("object_new", type=typename):
        ti = _type_get_or_raise(typename)
        return object_new_with_type(ti)


def object_new_with_type(ti: TypeImpl) -> Object:
    with trace.span("object_new_with_type", type=ti.name):
        type_initialize(ti)
        if ti.abstract:
            raise AbstractTypeError(f"type '{ti.name}' is abstract and cannot be instantiated")
        assert ti.instance_type is not None
        obj = ti.instance_type.__new__(ti.instance_type)
        object_initialize_with_type(obj, ti)
        return obj


def object_initialize_with_type(obj: Object, ti: TypeImpl) -> None:
    with trace.span("object_initialize_with_type", type=ti.name):
        type_initialize(ti)
        obj.klass = ti.klass  # type: ignore[assignment]
        obj._props = {}
        obj._parent = None
        obj._refcount = 1
        obj._finalized = False
        _object_init_with_type(obj, ti)
        _object_post_init_with_type(obj, ti)


def object_finalize(obj: Object) -> None:
    """Release properties (children unparented, newest first) then instance_finalize leaf up."""
    if obj._finalized:
        return
    obj._finalized = True
    for name in reversed(list(obj._props)):
        prop = obj._props.pop(name)
        if prop.release is not None:
            prop.release(obj)
    ti: TypeImpl | None = obj.klass.type
    while ti is not None:
        if ti.info.instance_finalize is not None:
            ti.info.instance_finalize(obj)
        ti = ti.parent_type


def object_ref(obj: Object) -> Object:
    obj._refcount += 1
    return obj


def object_unref(obj: Object) -> None:
    """Drop a reference; the last one finalises the object (QEMU's refcounting)."""
    obj._refcount -= 1
    if obj._refcount == 0:
        object_finalize(obj)


def object_dynamic_cast(obj: Object | None, typename: str) -> Object | None:
    """``object_dynamic_cast``: ``obj`` if it is a ``typename``, else None."""
    if obj is not None and obj.is_a(typename):
        return obj
    return None


def object_dynamic_cast_assert(obj: Object, typename: str) -> Object:
    """The checked cast behind QEMU's ``OBJECT_CHECK`` (``DEVICE(obj)``, ``CPU(obj)``)."""
    if object_dynamic_cast(obj, typename) is None:
        raise CastError(f"object of type '{obj.typename}' is not a '{typename}'")
    return obj


def object_get_class(obj: Object) -> ObjectClass:
    return obj.klass


def object_get_typename(obj: Object) -> str:
    return obj.typename


# -- typed property constructors ---------------------------------------------


def object_property_add(obj: Object, name: str, ptype: str,
                        get: Callable[[Object], Any] | None,
                        set: Callable[[Object, Any], None] | None,
                        release: Callable[[Object], None] | None = None,
                        opaque: Any = None, description: str = "") -> ObjectProperty:
    return obj.property_add(ObjectProperty(name, ptype, get, set, release, description, opaque))


def object_property_add_bool(obj: Object, name: str, get: Callable[[Object], bool] | None,
                             set: Callable[[Object, bool], None] | None) -> ObjectProperty:
    """``object_property_add_bool``: its setter is what ``property_set_bool`` calls."""
    def property_set_bool(o: Object, value: bool) -> None:
        with trace.span("property_set_bool", name=name, value=value):
            assert set is not None
            set(o, value)
    return object_property_add(obj, name, "bool", get, property_set_bool if set else None)


def object_property_add_str(obj: Object, name: str, get: Callable[[Object], str] | None,
                            set: Callable[[Object, str], None] | None) -> ObjectProperty:
    return object_property_add(obj, name, "str", get, set)


def object_property_add_uint(obj: Object, name: str, bits: int,
                             get: Callable[[Object], int] | None,
                             set: Callable[[Object, int], None] | None) -> ObjectProperty:
    """``object_property_add_uint{8,16,32,64}_ptr``-like, with range checking."""
    if bits not in (8, 16, 32, 64):
        raise ValueError(f"bad integer width {bits}")
    return object_property_add(obj, name, f"uint{bits}", get, set)


def object_property_add_child(obj: Object, name: str, child: Object) -> ObjectProperty:
    """Make ``child`` part of ``obj`` in the composition tree; the parent holds a reference."""
    if child._parent is not None:
        raise PropertyAccessError(
            f"{child.typename} already has a parent; cannot add it as '{name}'")
    if "[*]" in name:
        base = name.replace("[*]", "")
        i = 0
        while obj.property_find(f"{base}[{i}]") is not None:
            i += 1
        name = f"{base}[{i}]"

    def release(o: Object) -> None:
        child._parent = None
        child._name = None
        object_unref(child)

    prop = object_property_add(obj, name, f"child<{child.typename}>",
                               lambda o: child, None, release, opaque=child)
    object_ref(child)
    child._parent = obj
    child._name = name
    return prop


def object_property_add_link(obj: Object, name: str, target_type: str,
                             check: Callable[[Object, str, Object | None], None] | None = None,
                             ) -> ObjectProperty:
    """A ``link<T>`` property: a reference to another object of type T (or None)."""
    slot: dict[str, Object | None] = {"target": None}

    def get(o: Object) -> Object | None:
        return slot["target"]

    def set(o: Object, value: Any) -> None:
        if isinstance(value, str):
            target = object_resolve_path(value) if value else None
        else:
            target = value
        if target is not None and not isinstance(target, Object):
            raise PropertyValueError(
                f"link property '{name}' of {o.typename} needs an object or a path, not {value!r}")
        if target is not None and not target.is_a(target_type):
            raise PropertyValueError(
                f"link property '{name}' of {o.typename} needs a '{target_type}', "
                f"not a '{target.typename}'")
        if check is not None:
            check(o, name, target)
        slot["target"] = target

    def release(o: Object) -> None:
        slot["target"] = None

    return object_property_add(obj, name, f"link<{target_type}>", get, set, release, opaque=slot)


def object_class_property_add(klass: ObjectClass, name: str, ptype: str,
                              get: Callable[[Object], Any] | None,
                              set: Callable[[Object, Any], None] | None,
                              description: str = "") -> ClassProperty:
    prop = ClassProperty(name, ptype, get, set, description)
    klass.properties[name] = prop
    return prop


def object_property_set(obj: Object, name: str, value: Any) -> None:
    obj.property_set(name, value)


def object_property_get(obj: Object, name: str) -> Any:
    return obj.property_get(name)


def object_property_set_bool(obj: Object, name: str, value: bool) -> None:
    with trace.span("object_property_set_bool", name=name, value=value):
        obj.property_set(name, value)


def object_property_get_bool(obj: Object, name: str) -> bool:
    return bool(obj.property_get(name))


def object_property_set_uint(obj: Object, name: str, value: int) -> None:
    obj.property_set(name, value)


def object_property_get_uint(obj: Object, name: str) -> int:
    return int(obj.property_get(name))


def object_property_set_str(obj: Object, name: str, value: str) -> None:
    obj.property_set(name, value)


def object_property_get_str(obj: Object, name: str) -> str:
    return str(obj.property_get(name))


def object_property_set_link(obj: Object, name: str, target: Object | None) -> None:
    obj.property_set(name, target)


def object_property_find(obj: Object, name: str) -> ObjectProperty | ClassProperty | None:
    return obj.property_find(name)


def object_unparent(obj: Object) -> None:
    """Remove ``obj`` from its parent; the parent's reference is dropped."""
    parent = obj._parent
    if parent is not None and obj._name is not None:
        parent.property_del(obj._name)


# -- the composition tree -----------------------------------------------------------

_root: Object | None = None


def object_get_root() -> Object:
    """The root container ``/`` of the composition tree."""
    global _root
    if _root is None:
        _root = object_new(TYPE_CONTAINER)
        _root._name = ""
    return _root


def container_get(root: Object, path: str) -> Object:
    """``container_get``: the container at ``path`` under ``root``, created as needed."""
    obj = root
    for part in [p for p in path.split("/") if p]:
        prop = obj.property_find(part)
        if prop is None:
            child = object_new(TYPE_CONTAINER)
            object_property_add_child(obj, part, child)
            object_unref(child)
            obj = child
        else:
            obj = prop.get(obj)  # type: ignore[misc]
    return obj


def object_get_canonical_path(obj: Object) -> str | None:
    """``/machine/unattached/device[0]``; None for an object outside the tree."""
    parts = []
    o: Object | None = obj
    root = _root
    while o is not None and o is not root:
        name = getattr(o, "_name", None)
        if name is None or o._parent is None:
            return None
        parts.append(name)
        o = o._parent
    if o is None:
        return None
    return "/" + "/".join(reversed(parts))


def object_resolve_path(path: str) -> Object:
    """Resolve an absolute composition path (``/machine/unattached/device[0]``)."""
    if not path.startswith("/"):
        raise PathError(f"path '{path}' is not absolute")
    obj = object_get_root()
    for part in [p for p in path.split("/") if p]:
        prop = obj.property_find(part)
        if prop is None or not (prop.type.startswith("child<") or prop.type.startswith("link<")):
            raise PathError(f"path '{path}' does not resolve: no '{part}' under "
                            f"{object_get_canonical_path(obj) or '/'}")
        nxt = prop.get(obj)  # type: ignore[misc]
        if nxt is None:
            raise PathError(f"path '{path}' does not resolve: link '{part}' is empty")
        obj = nxt
    return obj


def qom_list(path: str) -> list[tuple[str, str]]:
    """``qom-list``: (name, type) of every property at ``path``."""
    obj = object_resolve_path(path)
    return [(p.name, p.type) for p in obj.property_list()]


def qom_get(path: str, name: str) -> Any:
    return object_resolve_path(path).property_get(name)


def qom_set(path: str, name: str, value: Any) -> None:
    object_resolve_path(path).property_set(name, value)


type_init(
    TypeInfo(name=TYPE_OBJECT, parent=None, abstract=True),
    TypeInfo(name=TYPE_INTERFACE, parent=None, abstract=True),
    TypeInfo(name=TYPE_CONTAINER, parent=TYPE_OBJECT),
)

__all__ = [
    "TYPE_CONTAINER",
    "TYPE_INTERFACE",
    "TYPE_OBJECT",
    "ClassProperty",
    "Object",
    "ObjectClass",
    "ObjectProperty",
    "TypeImpl",
    "TypeInfo",
    "check_property_value",
    "container_get",
    "object_class_by_name",
    "object_class_dynamic_cast",
    "object_class_get_list",
    "object_class_get_parent",
    "object_class_property_add",
    "object_dynamic_cast",
    "object_dynamic_cast_assert",
    "object_finalize",
    "object_get_canonical_path",
    "object_get_class",
    "object_get_root",
    "object_get_typename",
    "object_initialize_with_type",
    "object_new",
    "object_new_with_type",
    "object_property_add",
    "object_property_add_bool",
    "object_property_add_child",
    "object_property_add_link",
    "object_property_add_str",
    "object_property_add_uint",
    "object_property_find",
    "object_property_get",
    "object_property_get_bool",
    "object_property_get_str",
    "object_property_get_uint",
    "object_property_set",
    "object_property_set_bool",
    "object_property_set_link",
    "object_property_set_str",
    "object_property_set_uint",
    "object_ref",
    "object_resolve_path",
    "object_unparent",
    "object_unref",
    "qom_get",
    "qom_list",
    "qom_set",
    "type_get_by_name",
    "type_init",
    "type_initialize",
    "type_register_static",
]
