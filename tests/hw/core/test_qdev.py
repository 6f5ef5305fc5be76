"""The device core: ``realized``, chained realize/unrealize, static properties, reset."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest

from pyqemu.hw.core.errors import DeviceError
from pyqemu.hw.core.qdev import (
    TYPE_DEVICE,
    DeviceClass,
    DeviceState,
    Property,
    device_class_set_parent_realize,
    device_class_set_parent_unrealize,
    device_class_set_props,
    qdev_new,
    qdev_prop_set,
    qdev_realize,
    qdev_unrealize,
)
from pyqemu.qom import (
    ObjectClass,
    PropertyAccessError,
    PropertyValueError,
    TypeInfo,
    object_get_canonical_path,
    object_property_get_bool,
    object_property_set_bool,
    type_register_static,
)

_ids = itertools.count()


def register_device(log: list[str], fail: Callable[[], bool] = lambda: False,
                    props: list[Property] | None = None) -> tuple[str, str]:
    """A device type and a subclass that chains realize/unrealize to it; returns both names."""
    base, leaf = f"test-qdev-base-{next(_ids)}", f"test-qdev-leaf-{next(_ids)}"

    def base_realize(dev: DeviceState) -> None:
        log.append("base_realize")

    def base_unrealize(dev: DeviceState) -> None:
        log.append("base_unrealize")

    def base_class_init(k: ObjectClass, data: Any) -> None:
        assert isinstance(k, DeviceClass)
        k.realize = base_realize
        k.unrealize = base_unrealize
        k.reset = lambda dev: log.append("reset")
        device_class_set_props(k, props or [Property("level", "uint8", 3),
                                             Property("name-tag", "str", "dflt")])

    def leaf_realize(dev: DeviceState) -> None:
        log.append("leaf_realize")
        if fail():
            raise DeviceError(f"{dev.typename}: realize failed on purpose")
        dev.klass.parent_realize(dev)  # type: ignore[attr-defined]
        log.append("leaf_realize done")

    def leaf_unrealize(dev: DeviceState) -> None:
        log.append("leaf_unrealize")
        dev.klass.parent_unrealize(dev)  # type: ignore[attr-defined]

    def leaf_class_init(k: ObjectClass, data: Any) -> None:
        assert isinstance(k, DeviceClass)
        k.parent_realize = device_class_set_parent_realize(k, leaf_realize)  # type: ignore[attr-defined]
        k.parent_unrealize = device_class_set_parent_unrealize(  # type: ignore[attr-defined]
            k, leaf_unrealize)

    type_register_static(TypeInfo(name=base, parent=TYPE_DEVICE, class_init=base_class_init))
    type_register_static(TypeInfo(name=leaf, parent=base, class_init=leaf_class_init))
    return base, leaf


def test_setting_realized_calls_realize_then_reset(lifecycle: list[str]) -> None:
    log: list[str] = []
    base, _ = register_device(log)
    dev = qdev_new(base)
    assert object_property_get_bool(dev, "realized") is False
    object_property_set_bool(dev, "realized", True)
    assert log == ["base_realize", "reset"]
    assert dev.realized and object_property_get_bool(dev, "realized") is True
    assert any("device_set_realized" in ln for ln in lifecycle)
    assert any("property_set_bool" in ln for ln in lifecycle)
    object_property_set_bool(dev, "realized", True)  # already realized: nothing again
    assert log == ["base_realize", "reset"]


def test_subclass_realize_chains_to_the_parent_realize() -> None:
    log: list[str] = []
    _, leaf = register_device(log)
    dev = qdev_new(leaf)
    qdev_realize(dev)
    assert log == ["leaf_realize", "base_realize", "leaf_realize done", "reset"]


def test_a_failing_realize_leaves_the_device_unrealized() -> None:
    log: list[str] = []
    failing = [True]
    _, leaf = register_device(log, fail=lambda: failing[0])
    dev = qdev_new(leaf)
    with pytest.raises(DeviceError, match=f"^{leaf}: realize failed on purpose$"):
        object_property_set_bool(dev, "realized", True)
    assert dev.realized is False and "reset" not in log
    dev.property_set("level", 9)  # still configurable
    failing[0] = False
    qdev_realize(dev)
    assert dev.realized and dev.level == 9  # type: ignore[attr-defined]


def test_static_properties_have_defaults_and_are_frozen_after_realize() -> None:
    log: list[str] = []
    base, _ = register_device(log)
    dev = qdev_new(base)
    assert dev.property_get("level") == 3 and dev.property_get("name-tag") == "dflt"
    qdev_prop_set(dev, "level", "0x20")
    qdev_prop_set(dev, "name-tag", "uart0")
    assert dev.level == 0x20 and dev.name_tag == "uart0"  # type: ignore[attr-defined]
    with pytest.raises(PropertyValueError, match=f"property 'level' of {base} \\(uint8\\) is "
                                                 "out of range: 256"):
        qdev_prop_set(dev, "level", 256)
    qdev_realize(dev)
    with pytest.raises(PropertyAccessError,
                       match=f"^property 'level' of {base} cannot be set after realize$"):
        dev.property_set("level", 1)
    assert dev.property_get("level") == 0x20
    qdev_unrealize(dev)
    dev.property_set("level", 1)  # settable again once unrealized
    assert dev.property_get("level") == 1


def test_unrealize_chains_and_clears_realized() -> None:
    log: list[str] = []
    _, leaf = register_device(log)
    dev = qdev_new(leaf)
    qdev_realize(dev)
    log.clear()
    object_property_set_bool(dev, "realized", False)
    assert log == ["leaf_unrealize", "base_unrealize"]
    assert dev.realized is False
    object_property_set_bool(dev, "realized", False)  # not realized: nothing to undo
    assert log == ["leaf_unrealize", "base_unrealize"]


def test_a_parentless_device_is_put_under_machine_unattached_on_realize() -> None:
    log: list[str] = []
    base, _ = register_device(log)
    dev = qdev_new(base)
    assert object_get_canonical_path(dev) is None
    qdev_realize(dev)
    path = object_get_canonical_path(dev)
    assert path is not None and re.fullmatch(r"/machine/unattached/device\[\d+\]", path)


def test_qdev_helpers_name_what_is_wrong() -> None:
    log: list[str] = []
    base, _ = register_device(log)
    dev = qdev_new(base)
    with pytest.raises(DeviceError, match=f"^device '{base}' has no property 'nope'$"):
        qdev_prop_set(dev, "nope", 1)
    with pytest.raises(DeviceError, match=r"^'container' is not a device$"):
        qdev_new("container")
