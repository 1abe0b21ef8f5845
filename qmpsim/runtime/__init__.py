"""What runs: the trio server and :class:`~qmpsim.runtime.server.Simulator`, the scenario
engine, the control channel, the fleet, and recording and replaying real monitors.

Importing this package loads nothing; its modules load trio.
"""
