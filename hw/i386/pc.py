"""The ``pc`` machine: RAM, the ISA devices, the vCPUs (QEMU's ``pc_piix.c``, ``pc.c``, ``x86.c``).

``pc_init1`` builds the memory map (RAM from 0, the port I/O space, the BIOS
ROM when ``-bios`` is given), one 16550A UART per ``-serial`` (COM1 on 0x3f8,
IRQ 4, then COM2..COM4: ``serial_hds_isa_init``), the devices of ``-device``,
and then the vCPUs through ``x86_cpus_init``: for each possible CPU
up to ``-smp cpus``, ``x86_cpu_new`` creates the object (``object_new``), gives it
its APIC id and sets ``realized``, which runs ``x86_cpu_realizefn`` and so
``qemu_init_vcpu`` and the accelerator's vCPU thread (docs/architecture.md, "The lifecycle").
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
    object_property_add_child,
    object_property_set_bool,
    object_property_set_uint,
    object_unref,
    type_init,
)
from pyqemu.system.memory import AddressSpace, MemoryRegion
from pyqemu.target.i386.cpuid import x86_apicid_from_cpu_idx
from pyqemu.util import trace

TYPE_PC_MACHINE = "pc-i440fx-pyqemu" + MACHINE_TYPE_SUFFIX
PC_MAX_CPUS = 255

__all__ = ["PC_MAX_CPUS", "TYPE_PC_MACHINE", "pc_device_new", "pc_init1", "x86_cpu_new",
           "x86_cpus_init", "x86_possible_cpu_arch_ids"]

# The PCI hole starts at 3 GiB on pyqemu's pc, and all its RAM lies below it.
BELOW_4G_MEM_LIMIT = 0xC0000000


def x86_possible_cpu_arch_ids(ms: MachineState) -> list[CPUArchId]:
    """``x86_possible_cpu_arch_ids``: one slot per maxcpus, with its APIC id."""
    if ms.possible_cpus is None:
        s = ms.smp
        out = []
        for i in range(s.maxcpus):
            apic_id = x86_apicid_from_cpu_idx(s.dies, s.cores, s.threads, i)
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
        system_memory = MemoryRegion.container_new("system", 1 << 32)
        ms.system_memory = system_memory
        ms.system_io = MemoryRegion.container_new("io", 1 << 16)
        try:
            ms.ram = MemoryRegion.ram_new("pc.ram", ms.ram_size)
        except OSError as e:  # mmap: ENOMEM (overcommit limits, RLIMIT_AS)
            raise MachineError(f"-m: cannot allocate {ms.ram_size >> 20}M of guest RAM "
                               f"here: {e.strerror or e}") from None
        system_memory.add_subregion(0, ms.ram)
        ms.address_space_memory = AddressSpace("memory", system_memory)
        ms.address_space_io = AddressSpace("I/O", ms.system_io, io=True)
        if ms.firmware:
            from pyqemu.hw.i386.loader_bios import pc_system_firmware_init
            pc_system_firmware_init(ms, ms.firmware)
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
            dev.machine = ms
            if "_chr" in props:
                from pyqemu.hw.char.serial_isa import ISASerialState
                assert isinstance(dev, ISASerialState), "only a serial port takes a chardev"
                dev.chr = props["_chr"]
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


def serial_hds_isa_init(ms: MachineState) -> None:
    """``serial_hds_isa_init``: COM``n+1`` for each ``-serial`` backend, at its standard port
    and IRQ; the board opens each backend and closes it with the machine."""
    from pyqemu.hw.char.serial_isa import ISA_SERIAL_PORTS, MAX_ISA_SERIAL_PORTS
    from pyqemu.system.chardev import qemu_chr_new
    if len(ms.serial_chardevs) > MAX_ISA_SERIAL_PORTS:
        raise MachineError(f"-serial: {len(ms.serial_chardevs)} serial ports requested; the "
                           f"pc machine has {MAX_ISA_SERIAL_PORTS} (COM1-COM4)")
    for index, spec in enumerate(ms.serial_chardevs):
        if spec is None:  # -serial none: no port at this index
            continue
        chr_ = qemu_chr_new(spec, read_input=ms.serial_read_input and index == 0)
        if chr_ is None:
            continue
        ms.chardevs.append(chr_)
        iobase, irq = ISA_SERIAL_PORTS[index]
        pc_device_new(ms, "isa-serial",
                      {"iobase": iobase, "irq": irq, "index": index, "_chr": chr_})


def pc_init1(ms: MachineState) -> None:
    """``pc_init1``: the PC's memory, devices and CPUs."""
    with trace.span("pc_init1"):
        pc_memory_init(ms)
        serial_hds_isa_init(ms)
        for typename, props in ms.device_specs:
            pc_device_new(ms, typename, dict(props, _user=True))
        x86_cpus_init(ms)


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
                   class_init=pc_machine_class_init))
