"""``python -m qmpsim.qemu ARGS``: the drop-in QEMU, as ``qmpsim-system-x86_64``."""

import sys

from .main import main

main(["qemu-system-x86_64", *sys.argv[1:]])
