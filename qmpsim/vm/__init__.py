"""The VM model's parts: values every part shares, the component interface, and components.

:class:`qmpsim.vm.machine.Machine` is a façade over components
(:mod:`qmpsim.vm.component` says how one is written): the display servers
(:mod:`~qmpsim.vm.display`), the simulated guest OS (:mod:`~qmpsim.vm.guest`) and
the devices (:mod:`~qmpsim.vm.devices`).  What no component answers,
:mod:`~qmpsim.vm.replies` does: recorded, else generated from the return type.
Importing this package loads nothing.
"""
