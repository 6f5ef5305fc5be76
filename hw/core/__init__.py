"""The device core (hw/core): DeviceState, CPUState, MachineState."""
