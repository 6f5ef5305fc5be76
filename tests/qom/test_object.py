"""QOM: type registration, class/instance init order, casts, properties, the composition tree."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from pyqemu.qom import (
    AbstractTypeError,
    CastError,
    Object,
    ObjectClass,
    PathError,
    PropertyAccessError,
    PropertyNotFoundError,
    PropertyValueError,
    TypeInfo,
    TypeNotFoundError,
    TypeRegistrationError,
    container_get,
    object_class_by_name,
    object_dynamic_cast,
    object_dynamic_cast_assert,
    object_get_canonical_path,
    object_get_root,
    object_new,
    object_property_add_bool,
    object_property_add_child,
    object_property_add_link,
    object_property_add_str,
    object_property_add_uint,
    object_property_get,
    object_property_set,
    object_resolve_path,
    object_unparent,
    object_unref,
    qom_get,
    qom_list,
    qom_set,
    type_get_by_name,
    type_register_static,
)
from pyqemu.util.error import PyQemuError

_ids = itertools.count()


def uniq(prefix: str) -> str:
    """A type or container name no other test uses (the registry is process-wide)."""
    return f"test-qom-{prefix}-{next(_ids)}"


class Chain:
    """Three types A -> B -> C, each logging its class and instance hooks into ``log``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.a, self.b, self.c = uniq("a"), uniq("b"), uniq("c")
        log = self.log

        def hooks(tag: str) -> dict[str, Any]:
            def class_init(k: ObjectClass, data: Any) -> None:
                log.append(("class_init", tag))
                k.tags = list(getattr(k, "tags", [])) + [tag]  # type: ignore[attr-defined]
                k.data = data  # type: ignore[attr-defined]

            return {
                "class_init": class_init,
                "instance_init": lambda o: log.append(("instance_init", tag)),
                "instance_post_init": lambda o: log.append(("instance_post_init", tag)),
                "instance_finalize": lambda o: log.append(("instance_finalize", tag)),
            }

        def base_init(k: ObjectClass, data: Any) -> None:
            log.append(("class_base_init", k.name))

        type_register_static(TypeInfo(name=self.a, class_base_init=base_init, **hooks("A")))
        type_register_static(TypeInfo(name=self.b, parent=self.a, **hooks("B")))
        type_register_static(TypeInfo(name=self.c, parent=self.b, class_data="c-data",
                                      **hooks("C")))


# -- types and classes -----------------------------------------------------------------------


def test_class_init_runs_parent_first_and_only_once() -> None:
    ch = Chain()
    klass = object_class_by_name(ch.c)
    assert klass is not None
    inits = [tag for ev, tag in ch.log if ev == "class_init"]
    assert inits == ["A", "B", "C"]
    object_class_by_name(ch.c)
    object_new(ch.c)
    assert [tag for ev, tag in ch.log if ev == "class_init"] == ["A", "B", "C"]


def test_class_base_init_of_an_ancestor_runs_for_each_subclass_before_its_class_init() -> None:
    ch = Chain()
    object_class_by_name(ch.c)
    assert ch.log == [("class_init", "A"),
                      ("class_base_init", ch.b), ("class_init", "B"),
                      ("class_base_init", ch.c), ("class_init", "C")]


def test_a_class_starts_as_a_copy_of_its_parents_class() -> None:
    ch = Chain()
    c = object_class_by_name(ch.c)
    a = object_class_by_name(ch.a)
    assert c.tags == ["A", "B", "C"] and a.tags == ["A"]  # type: ignore[union-attr]
    assert c.data == "c-data"  # type: ignore[union-attr]
    assert c.parent is object_class_by_name(ch.b)  # type: ignore[union-attr]


def test_instance_init_root_first_then_post_init_then_finalize_leaf_up() -> None:
    ch = Chain()
    obj = object_new(ch.c)
    events = [e for e in ch.log if not e[0].startswith("class")]
    assert events == [("instance_init", "A"), ("instance_init", "B"), ("instance_init", "C"),
                      ("instance_post_init", "A"), ("instance_post_init", "B"),
                      ("instance_post_init", "C")]
    ch.log.clear()
    object_unref(obj)
    assert ch.log == [("instance_finalize", "C"), ("instance_finalize", "B"),
                      ("instance_finalize", "A")]


def test_finalize_waits_for_the_last_reference() -> None:
    ch = Chain()
    obj = object_new(ch.a)
    parent = object_new(ch.b)
    object_property_add_child(parent, "kid", obj)  # the parent holds a second reference
    ch.log.clear()
    object_unref(obj)
    assert ch.log == []
    object_unref(parent)  # releases its children
    assert ("instance_finalize", "A") in ch.log


def test_abstract_type_is_refused() -> None:
    name = uniq("abstract")
    type_register_static(TypeInfo(name=name, abstract=True))
    with pytest.raises(AbstractTypeError,
                       match=f"^type '{name}' is abstract and cannot be instantiated$"):
        object_new(name)


def test_unknown_type_message_names_it() -> None:
    with pytest.raises(TypeNotFoundError, match=r"^unknown type 'no-such-type'$") as ei:
        object_new("no-such-type")
    assert isinstance(ei.value, PyQemuError) and isinstance(ei.value, LookupError)
    assert object_class_by_name("no-such-type") is None


def test_registration_errors_name_the_type() -> None:
    name = uniq("dup")
    type_register_static(TypeInfo(name=name))
    with pytest.raises(TypeRegistrationError, match=f"type '{name}' is already registered"):
        type_register_static(TypeInfo(name=name))
    orphan = uniq("orphan")
    type_register_static(TypeInfo(name=orphan, parent="no-such-parent"))
    with pytest.raises(TypeRegistrationError,
                       match=f"type '{orphan}' has unknown parent 'no-such-parent'"):
        object_new(orphan)
    assert type_get_by_name(name) is not None


def test_casts_follow_the_type_chain_and_interfaces() -> None:
    ch = Chain()
    iface = uniq("iface")
    type_register_static(TypeInfo(name=iface, parent="interface", abstract=True))
    d = uniq("d")
    type_register_static(TypeInfo(name=d, parent=ch.c, interfaces=(iface,)))
    obj = object_new(d)
    assert object_dynamic_cast(obj, ch.a) is obj
    assert object_dynamic_cast(obj, iface) is obj
    assert object_dynamic_cast(object_new(ch.b), ch.c) is None
    assert object_dynamic_cast_assert(obj, "object") is obj
    with pytest.raises(CastError, match=f"^object of type '{ch.b}' is not a '{ch.c}'$"):
        object_dynamic_cast_assert(object_new(ch.b), ch.c)


# -- properties ----------------------------------------------------------------------------------


def props_object() -> Object:
    """An object with one property of each kind, backed by a dict."""
    name = uniq("props")
    type_register_static(TypeInfo(name=name))
    obj = object_new(name)
    store: dict[str, Any] = {"flag": False, "label": "x", "u8": 0, "u32": 0}
    obj.store = store  # type: ignore[attr-defined]
    object_property_add_bool(obj, "flag", lambda o: store["flag"],
                             lambda o, v: store.__setitem__("flag", v))
    object_property_add_str(obj, "label", lambda o: store["label"],
                            lambda o, v: store.__setitem__("label", v))
    object_property_add_uint(obj, "u8", 8, lambda o: store["u8"],
                             lambda o, v: store.__setitem__("u8", v))
    object_property_add_uint(obj, "u32", 32, lambda o: store["u32"],
                             lambda o, v: store.__setitem__("u32", v))
    object_property_add_uint(obj, "ro", 32, lambda o: 7, None)
    return obj


def test_bool_str_uint_properties_round_trip_and_parse_strings() -> None:
    obj = props_object()
    object_property_set(obj, "flag", True)
    assert object_property_get(obj, "flag") is True
    object_property_set(obj, "flag", "off")
    assert obj.store["flag"] is False  # type: ignore[attr-defined]
    object_property_set(obj, "label", "hello")
    assert object_property_get(obj, "label") == "hello"
    object_property_set(obj, "u8", "0x10")
    assert object_property_get(obj, "u8") == 16
    object_property_set(obj, "u32", 0xFFFFFFFF)
    assert object_property_get(obj, "u32") == 0xFFFFFFFF


@pytest.mark.parametrize("prop,value,msg", [
    ("u8", 256, r"property 'u8' of {t} \(uint8\) is out of range: 256"),
    ("u32", -1, r"property 'u32' of {t} \(uint32\) is out of range: -1"),
    ("u8", "ten", r"property 'u8' of {t} expects an integer, not 'ten'"),
    ("u8", True, r"property 'u8' of {t} expects an integer, not True"),
    ("flag", "maybe", r"property 'flag' of {t} expects a bool \(on/off\), not 'maybe'"),
    ("label", 5, r"property 'label' of {t} expects a string, not 5"),
])
def test_bad_property_values_are_refused_naming_the_property(prop: str, value: Any,
                                                             msg: str) -> None:
    obj = props_object()
    before = dict(obj.store)  # type: ignore[attr-defined]
    with pytest.raises(PropertyValueError, match=msg.format(t=obj.typename)) as ei:
        object_property_set(obj, prop, value)
    assert isinstance(ei.value, ValueError)
    assert obj.store == before  # type: ignore[attr-defined]


def test_missing_read_only_and_duplicate_properties() -> None:
    obj = props_object()
    with pytest.raises(PropertyNotFoundError, match=f"^{obj.typename} has no property 'nope'$"):
        object_property_get(obj, "nope")
    with pytest.raises(PropertyAccessError, match=f"property 'ro' of {obj.typename} is read-only"):
        object_property_set(obj, "ro", 1)
    with pytest.raises(PropertyAccessError, match="property 'flag' already exists"):
        object_property_add_bool(obj, "flag", None, None)
    assert object_property_get(obj, "ro") == 7


def test_link_property_checks_the_target_type_and_resolves_paths() -> None:
    ch = Chain()
    holder = object_new(ch.a)
    object_property_add_link(holder, "peer", ch.b)
    right, wrong = object_new(ch.c), object_new(ch.a)  # a C is a B; an A is not
    object_property_set(holder, "peer", right)
    assert object_property_get(holder, "peer") is right
    with pytest.raises(PropertyValueError,
                       match=f"link property 'peer' of {ch.a} needs a '{ch.b}', not a '{ch.a}'"):
        object_property_set(holder, "peer", wrong)
    assert object_property_get(holder, "peer") is right
    box = container_get(object_get_root(), f"/{uniq('links')}")
    object_property_add_child(box, "target", right)
    object_property_set(holder, "peer", object_get_canonical_path(right))
    assert object_property_get(holder, "peer") is right
    object_property_set(holder, "peer", "")
    assert object_property_get(holder, "peer") is None
    assert dict(qom_list(object_get_canonical_path(box)))["target"] == f"child<{ch.c}>"


def test_child_property_builds_the_composition_tree() -> None:
    ch = Chain()
    top = uniq("tree")
    unattached = container_get(object_get_root(), f"/{top}/unattached")
    devs = [object_new(ch.a) for _ in range(3)]
    for d in devs:
        object_property_add_child(unattached, "device[*]", d)
    paths = [object_get_canonical_path(d) for d in devs]
    assert paths == [f"/{top}/unattached/device[{i}]" for i in range(3)]
    assert object_resolve_path(paths[1]) is devs[1]
    with pytest.raises(PropertyAccessError, match="already has a parent"):
        object_property_add_child(unattached, "again", devs[0])
    object_unparent(devs[1])
    assert object_get_canonical_path(devs[1]) is None
    with pytest.raises(PathError, match=re.escape(
            f"path '{paths[1]}' does not resolve: no 'device[1]' under /{top}/unattached")):
        object_resolve_path(paths[1])
    spare = object_new(ch.a)
    object_property_add_child(unattached, "device[*]", spare)  # reuses the free slot
    assert object_get_canonical_path(spare) == f"/{top}/unattached/device[1]"


def test_qom_list_get_set_by_path() -> None:
    obj = props_object()
    box = container_get(object_get_root(), f"/{uniq('qom')}")
    object_property_add_child(box, "dev", obj)
    path = object_get_canonical_path(obj)
    listing = dict(qom_list(path))
    assert listing["flag"] == "bool" and listing["u8"] == "uint8" and listing["label"] == "str"
    qom_set(path, "u8", 200)
    assert qom_get(path, "u8") == 200
    with pytest.raises(PropertyValueError, match="out of range: 300"):
        qom_set(path, "u8", 300)
    with pytest.raises(PathError, match="path 'relative/dev' is not absolute"):
        qom_get("relative/dev", "u8")
    with pytest.raises(PathError, match="path '/no-such-box/dev' does not resolve: no "
                                        "'no-such-box' under /"):
        qom_get("/no-such-box/dev", "u8")


def test_root_is_a_container_at_slash() -> None:
    root = object_get_root()
    assert root.typename == "container"
    assert object_get_root() is root
    assert object_resolve_path("/") is root
