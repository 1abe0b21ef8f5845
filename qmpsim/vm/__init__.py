"""The VM model's parts: values every part shares, the component interface, and components.

:class:`qmpsim.machine.Machine` is a façade over components
(:mod:`qmpsim.vm.component` says how one is written): the display servers
(:mod:`~qmpsim.vm.display`), the simulated guest OS (:mod:`~qmpsim.vm.guest`) and
the devices (:mod:`~qmpsim.vm.devices`).  Importing this package loads nothing.
"""
