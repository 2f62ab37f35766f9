"""Real Linux namespaces and cgroups, driven from Python through ctypes.

This sub-package is the lab's bridge from the simulator to the real kernel. It builds a tiny
container with nothing but ``ctypes`` calls into libc (no C extension), puts containers into CPU
cgroups, and measures what the simulator's container path assumes.

Modules, one concept each:

``libc``
    Lazy libc loading, declared prototypes, ``errno`` → :class:`OSError`, kernel flag names.
``namespaces``
    Namespace kinds, identities under ``/proc/PID/ns``, ``unshare``/``setns`` (``os`` or ctypes),
    user-namespace ID maps.
``netdev`` and ``netlink``
    Interface flags and addresses through ``ioctl``; a veth pair through rtnetlink.
``procs``
    Forked-child discipline: names, ``_exit``, kill-and-reap, signals turned into exceptions.
``container``
    The process layout (caller → launcher → PID 1) and the parent-side handle.
``cgroups``
    v1/v2 detection, CPU groups with unique names, guaranteed removal.
``preflight``
    Can this machine run the demos, and if not, why, in plain words.
``demo_namespaces``, ``demo_cgroups``, ``calibrate``, ``profile``
    The three user-facing programs and the profile writer.
``kernel``, ``cases``, ``demo_cases``
    Which fair scheduler and tick this kernel has; the scheduling cases defined once for the
    real kernel and the simulator; ``virtlab demo cgroups --cases``, which runs them on both.
``commands``
    The ``virtlab demo|doctor|calibrate`` sub-commands.

Nothing Linux-specific happens at import time: every module here imports on any OS, and libc is
loaded on first use. Model code never imports this package.
"""

from __future__ import annotations

__all__: list[str] = []
