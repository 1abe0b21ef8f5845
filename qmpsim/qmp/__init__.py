"""QMP itself: QEMU's JSON wire, the schema walker, the profiles, one connection's protocol.

Below everything else: these modules import only the standard library and each other
(and :mod:`qmpsim.errors`).  :mod:`~qmpsim.qmp.transcript` and :mod:`~qmpsim.qmp.cassette`
are the record of QMP traffic and its reading back.  Importing this package loads nothing.
"""
