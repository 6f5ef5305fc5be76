"""The local APIC as a QOM device ("apic"), as far as the CPU's realize needs it.

This is the part of QEMU's ``APICCommonState`` (``hw/intc/apic_common.c``)
that ``x86_cpu_apic_create``/``x86_cpu_apic_realize`` touch: the device exists
as the CPU's child ``lapic``, carries its APIC id (static property ``id``) and
the value of the IA32_APIC_BASE MSR (Intel SDM vol. 3A, 10.4.4, Figure 10-5:
base address, bit 11 global enable, bit 8 BSP), and is realized by the CPU's
realize.  The register-level model (ID/TPR/EOI/ICR/LVT/timer, the MMIO page at
the APIC base, INIT/SIPI delivery) comes with a later issue; until then the
APIC base MSR itself lives in ``cpu.env.apic_base``, which both accelerators
read and write, and this device mirrors it at reset.
"""

from __future__ import annotations

from typing import Any

from pyqemu.hw.core.errors import DeviceError
from pyqemu.hw.core.qdev import (
    TYPE_DEVICE,
    DeviceClass,
    DeviceState,
    Property,
    device_class_set_props,
)
from pyqemu.qom import Object, ObjectClass, TypeInfo, type_init
from pyqemu.target.i386.cpu_state import (
    APIC_DEFAULT_ADDRESS,
    MSR_IA32_APICBASE_BSP,
    MSR_IA32_APICBASE_ENABLE,
)
from pyqemu.util import trace

TYPE_APIC = "apic"
UNASSIGNED_APIC_ID = 0xFFFFFFFF
#: xAPIC ids are 8 bits (SDM vol. 3A, 10.4.6); larger ids need x2APIC mode.
MAX_XAPIC_ID = 0xFE


class APICCommonState(DeviceState):
    """One local APIC: its id, the APIC base MSR value and the CPU it belongs to."""

    apic_id: int        # the "id" property (a DeviceState's own ``id`` is its -device id=)
    apicbase: int
    cpu: Any


def apic_common_initfn(obj: Object) -> None:
    s = obj
    assert isinstance(s, APICCommonState)
    s.apicbase = APIC_DEFAULT_ADDRESS | MSR_IA32_APICBASE_ENABLE
    s.cpu = None


def apic_common_realize(dev: DeviceState) -> None:
    """Check the id; the register model and its MMIO page come with a later issue."""
    s = dev
    assert isinstance(s, APICCommonState)
    with trace.span("apic_common_realize", id=s.apic_id):
        if s.apic_id == UNASSIGNED_APIC_ID:
            raise DeviceError("apic: property 'id' was not set")
        x2apic = getattr(s.cpu, "has_feature", lambda n: False)("x2apic")
        if s.apic_id > MAX_XAPIC_ID and not x2apic:
            raise DeviceError(f"apic: APIC id {s.apic_id} needs x2apic (xAPIC ids stop at "
                              f"{MAX_XAPIC_ID})")


def apic_designate_bsp(s: APICCommonState, bsp: bool) -> None:
    """Set or clear the BSP flag of IA32_APIC_BASE (bit 8)."""
    if bsp:
        s.apicbase |= MSR_IA32_APICBASE_BSP
    else:
        s.apicbase &= ~MSR_IA32_APICBASE_BSP


def apic_reset_common(s: APICCommonState, bsp: bool) -> None:
    """After RESET/INIT the APIC is enabled at the default base (SDM vol. 3A, 10.4.4)."""
    s.apicbase = APIC_DEFAULT_ADDRESS | MSR_IA32_APICBASE_ENABLE
    apic_designate_bsp(s, bsp)


def apic_class_init(klass: ObjectClass, data: Any) -> None:
    dc = klass
    assert isinstance(dc, DeviceClass)
    dc.realize = apic_common_realize
    dc.desc = "local APIC (id and APIC base; register model pending)"
    device_class_set_props(dc, [Property("id", "uint32", UNASSIGNED_APIC_ID, field="apic_id",
                                         description="the APIC id of this local APIC")])


type_init(TypeInfo(
    name=TYPE_APIC, parent=TYPE_DEVICE, instance_type=APICCommonState,
    instance_init=apic_common_initfn, class_init=apic_class_init,
))
