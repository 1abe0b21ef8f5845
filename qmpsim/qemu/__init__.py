"""The drop-in QEMU: ``qmpsim-system-x86_64`` takes QEMU's command line and serves
the simulated VM it describes (see :mod:`qmpsim.qemu.main`)."""
