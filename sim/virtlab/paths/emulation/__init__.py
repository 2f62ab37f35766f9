"""The emulated path's parts: access profiles, exit pricing, interrupt lines, latency phases.

* :mod:`~virtlab.paths.emulation.accesses`: which register accesses each driver operation
  makes (data, in ``devices.toml``);
* :mod:`~virtlab.paths.emulation.exits`: what an access or an interrupt costs under a CPU
  support preset (:mod:`virtlab.cpusupport`);
* :mod:`~virtlab.paths.emulation.interrupts`: a device's interrupt line, with mitigation,
  latched causes and NAPI's budget rule;
* :mod:`~virtlab.paths.emulation.pio`: what IDE PIO's data-port transfers cost;
* :mod:`~virtlab.paths.emulation.phases`: splitting a request's latency into phases.

The path itself is :class:`virtlab.paths.emulated.EmulatedPath`.
"""
