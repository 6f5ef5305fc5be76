"""QOM, the QEMU Object Model: types, classes, objects, properties, the composition tree."""

from qom.errors import *  # noqa: F401,F403
from qom.object import *  # noqa: F401,F403
