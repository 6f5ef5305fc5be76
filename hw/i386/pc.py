"""The ``pc`` machine: RAM, the ISA devices, and the vCPUs (``hw/i386/pc_piix.c``, ``pc.c``, ``x86.c``).

``pc_init1`` builds the memory map (RAM from 0, the port I/O space, the BIOS
ROM when ``-bios`` is given), the 16550A UART on 0x3f8 (IRQ 4), the devices of
``-device``, and then the vCPUs through ``x86_cpus_init``: for each possible CPU
up to ``-smp cpus``, ``x86_cpu_new`` creates the object (``object_new``), gives it
its APIC id and sets ``realized``, which runs ``x86_cpu_realizefn`` and so
``qemu_init_vcpu`` and the accelerator's vCPU thread (seed 000, 004).
"""

from __future__ import annotations

from typing import Any

from pyqemu.hw.core.errors import DeviceError, MachineError
from pyqemu.hw.core.machine import (
    MACHINE_TYPE_SUFFIX,
    TYPE_MACHINE,
    CPUArchId,
    MachineClass,
    MachineState,
)
from pyqemu.hw.core.qdev import DeviceState, qdev_new, qdev_prop_set
from pyqemu.qom import (
    Object,
    ObjectClass,
    TypeInfo,
    container_get,
    object_property_add_child,
    object_property_set_bool,
    object_property_set_uint,
    object_unref,
    type_init,
)
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.util import trace

TYPE_PC_MACHINE = "pc-i440fx-pyqemu" + MACHINE_TYPE_SUFFIX
PC_MAX_CPUS = 255

# The PCI hole starts at 3 GiB on pyqemu's pc; RAM above it is a later issue.
BELOW_4G_MEM_LIMIT = 0xC0000000


def apicid_bitwidth(count: int) -> int:
    """Bits needed for ``count`` ids (``apicid_bitwidth_for_count``): ceil(log2(count))."""
    return (count - 1).bit_length() if count > 1 else 0


def x86_apicid_from_cpu_idx(sockets: int, dies: int, cores: int, threads: int, index: int) -> int:
    """APIC id of CPU ``index`` from the topology (SDM vol. 3A, 8.9.1: the id is packed
    thread | core << thread_bits | die << ... | socket << ...)."""
    thread = index % threads
    core = (index // threads) % cores
    die = (index // (threads * cores)) % dies
    socket = index // (threads * cores * dies)
    tbits = apicid_bitwidth(threads)
    cbits = apicid_bitwidth(cores)
    dbits = apicid_bitwidth(dies)
    return (socket << (dbits + cbits + tbits)) | (die << (cbits + tbits)) | (core << tbits) | thread


def x86_possible_cpu_arch_ids(ms: MachineState) -> list[CPUArchId]:
    """``x86_possible_cpu_arch_ids``: one slot per maxcpus, with its APIC id."""
    if ms.possible_cpus is None:
        s = ms.smp
        out = []
        for i in range(s.maxcpus):
            apic_id = x86_apicid_from_cpu_idx(s.sockets, s.dies, s.cores, s.threads, i)
            out.append(CPUArchId(index=i, arch_id=apic_id,
                                 socket_id=i // (s.threads * s.cores * s.dies),
                                 core_id=(i // s.threads) % s.cores,
                                 thread_id=i % s.threads))
        ms.possible_cpus = out
    return ms.possible_cpus


def x86_cpu_new(ms: MachineState, index: int, apic_id: int) -> Object:
    """``x86_cpu_new``: ``object_new(cpu_type)``, the APIC id, then ``realized = true``."""
    from pyqemu.qom import object_new
    with trace.span("x86_cpu_new", cpu=index, apic_id=apic_id):
        assert ms.cpu_type is not None
        cpu = object_new(ms.cpu_type)
        try:
            object_property_set_uint(cpu, "apic-id", apic_id)
            cpu.cpu_index = index  # type: ignore[attr-defined]
            cpu.machine = ms  # type: ignore[attr-defined]
            object_property_add_child(ms.unattached, "device[*]", cpu)
            object_property_set_bool(cpu, "realized", True)
        except BaseException:
            _discard(cpu)
            raise
        object_unref(cpu)  # the composition tree holds it now
        if cpu not in ms.cpus:  # cpu_exec_realizefn (cpu_list_add) normally listed it
            ms.cpus.append(cpu)
        return cpu


def _discard(obj: Object) -> None:
    from pyqemu.qom import object_unparent
    if obj.parent is not None:
        object_unparent(obj)
    else:
        object_unref(obj)


def x86_cpus_init(ms: MachineState) -> None:
    """``x86_cpus_init``: create and realize ``-smp cpus`` vCPUs."""
    with trace.span("x86_cpus_init", cpus=ms.smp.cpus, maxcpus=ms.smp.maxcpus):
        mc = ms.klass
        assert isinstance(mc, MachineClass) and mc.possible_cpu_arch_ids is not None
        possible = mc.possible_cpu_arch_ids(ms)
        for i in range(ms.smp.cpus):
            x86_cpu_new(ms, i, possible[i].arch_id)


def pc_memory_init(ms: MachineState) -> None:
    """``pc_memory_init``: RAM at 0 (below the PCI hole), the I/O space, the BIOS ROM."""
    with trace.span("pc_memory_init", ram_size=ms.ram_size):
        if ms.ram_size > BELOW_4G_MEM_LIMIT:
            raise MachineError(f"-m: {ms.ram_size >> 20}M does not fit below the PCI hole "
                               f"({BELOW_4G_MEM_LIMIT >> 20}M)")
        ms.system_memory = MemoryRegion.container_new("system", 1 << 32)
        ms.system_io = MemoryRegion.container_new("io", 1 << 16)
        ms.ram = MemoryRegion.ram_new("pc.ram", ms.ram_size)
        ms.system_memory.add_subregion(0, ms.ram)
        ms.address_space_memory = AddressSpace("memory", ms.system_memory)
        ms.address_space_io = AddressSpace("I/O", ms.system_io, io=True)
        if ms.bios_file:
            from pyqemu.hw.i386.loader_bios import pc_system_firmware_init
            pc_system_firmware_init(ms, ms.bios_file)
        # The accelerator learns the memory map (KVM: memory slots, kept in step by a
        # listener) before any vCPU exists.
        ms.accel.setup_machine(ms)


def pc_device_new(ms: MachineState, typename: str, props: dict[str, Any]) -> DeviceState:
    """Create, configure and realize one ISA device (``-device typename,prop=value,...``)."""
    with trace.span("qdev_device_add", driver=typename):
        try:
            dev = qdev_new(typename)
        except LookupError:
            raise DeviceError(f"'{typename}' is not a valid device model name; "
                              f"-device help lists them") from None
        try:
            if not getattr(dev.klass, "user_creatable", False) and props.get("_user", False):
                raise DeviceError(f"device '{typename}' cannot be created with -device")
            dev.machine = ms  # type: ignore[attr-defined]
            if "_chr" in props:
                dev.chr = props["_chr"]  # type: ignore[attr-defined]
            for name, value in props.items():
                if name.startswith("_"):
                    continue
                if name == "id":
                    dev.id = value
                    continue
                qdev_prop_set(dev, name, value)
            object_property_add_child(ms.peripheral if dev.id else ms.unattached,
                                      dev.id or "device[*]", dev)
            object_property_set_bool(dev, "realized", True)
        except BaseException:
            _discard(dev)
            raise
        object_unref(dev)
        ms.devices.append(dev)
        return dev


def pc_init1(ms: MachineState) -> None:
    """``pc_init1``: the PC's memory, devices and CPUs."""
    with trace.span("pc_init1"):
        pc_memory_init(ms)
        if ms.serial_chardev is not None:
            # The board opens COM1's backend (serial_hds[0]) and closes it with the machine.
            from pyqemu.system.chardev import qemu_chr_new
            chr_ = qemu_chr_new(ms.serial_chardev, read_input=ms.serial_read_input)
            if chr_ is not None:
                ms.chardevs.append(chr_)
                pc_device_new(ms, "isa-serial",
                              {"iobase": 0x3F8, "irq": 4, "index": 0, "_chr": chr_})
        for typename, props in ms.device_specs:
            pc_device_new(ms, typename, dict(props, _user=True))
        x86_cpus_init(ms)


def pc_machine_initfn(obj: Object) -> None:
    ms = obj
    ms.bios_file = None  # type: ignore[attr-defined]
    ms.serial_chardev = "null"  # type: ignore[attr-defined]
    ms.serial_read_input = False  # type: ignore[attr-defined]
    ms.chardevs = []  # type: ignore[attr-defined]
    ms.device_specs = []  # type: ignore[attr-defined]
    ms.devices = []  # type: ignore[attr-defined]
    ms.unattached = container_get(obj, "unattached")  # type: ignore[attr-defined]
    ms.peripheral = container_get(obj, "peripheral")  # type: ignore[attr-defined]


def pc_machine_class_init(klass: ObjectClass, data: Any) -> None:
    mc = klass
    assert isinstance(mc, MachineClass)
    mc.desc = "Standard PC (i440FX + PIIX, 1996): RAM, 16550A UART, isa-debug-exit, x86 CPUs"
    mc.init = pc_init1
    mc.max_cpus = PC_MAX_CPUS
    mc.default_cpu_type = "qemu64-x86_64-cpu"
    mc.default_ram_size = 128 << 20
    mc.is_default = True
    mc.alias = "pc"
    mc.possible_cpu_arch_ids = x86_possible_cpu_arch_ids


type_init(TypeInfo(name=TYPE_PC_MACHINE, parent=TYPE_MACHINE,
                   instance_init=pc_machine_initfn, class_init=pc_machine_class_init))
