"""QOM, the QEMU Object Model: types, classes, objects, properties, the composition tree."""

from pyqemu.qom.errors import *  # noqa: F403
from pyqemu.qom.object import *  # noqa: F403
