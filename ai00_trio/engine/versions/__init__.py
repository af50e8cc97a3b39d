"""One module per RWKV version; each composes the shared ops into that version's math."""
from .common import Architecture
from .v4 import V4
from .v5 import V5
from .v6 import V6
from .v7 import V7

ARCHITECTURES: dict[str, type[Architecture]] = {"v4": V4, "v5": V5, "v6": V6, "v7": V7}
