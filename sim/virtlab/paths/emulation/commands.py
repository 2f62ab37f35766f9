"""CLI commands for full virtualization: ``virtlab presets`` and ``virtlab devices``.

Registered by :func:`virtlab.cli.make_parser` through :func:`add_commands`.
"""

from __future__ import annotations

import argparse
from typing import Any

from virtlab.errors import ConfigError

__all__ = ["add_commands"]


def _cmd_presets(args: argparse.Namespace) -> int:
    from virtlab.cpusupport import PRESET_FIELDS, PRESETS
    from virtlab.units import cycles_to_us

    ghz = args.cpu_ghz
    print(f"{'preset':<20} {'era':<10} {'kernel exit':>12} {'user exit':>10} {'inject':>8} "
          f"{'EOI exit':>8} {'posted':>7} {'coalesced':>9}   (µs at {ghz:g} GHz)")
    for preset in PRESETS.values():
        kernel = cycles_to_us(preset.exit_kernel_cycles, ghz)
        print(f"{preset.name:<20} {preset.era:<10} {kernel:>12.3f} "
              f"{kernel * preset.user_exit_factor:>10.3f} "
              f"{cycles_to_us(preset.irq_inject_cycles, ghz):>8.3f} "
              f"{'yes' if preset.eoi_exit else 'no':>8} "
              f"{'yes' if preset.posted_interrupts else 'no':>7} "
              f"{'yes' if preset.coalesced_mmio else 'no':>9}")
    if args.sources:
        for preset in PRESETS.values():
            print(f"\n{preset.name}: {preset.description}")
            for name in PRESET_FIELDS:
                print(f"  {name} = {getattr(preset, name)!r}  [{preset.sources.get(name, '-')}]")
    else:
        print("\n'virtlab presets --sources' shows where each value comes from; select one with "
              "--cpu-support NAME or [hypervisor] cpu_support = \"NAME\".")
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from virtlab.paths.emulation.accesses import (
        DISK_CONTROLLERS,
        DISK_OPERATIONS,
        NIC_MODELS,
        NIC_OPERATIONS,
        builtin_disk,
        builtin_nic,
    )

    names = [args.name] if args.name is not None else [*NIC_MODELS, *DISK_CONTROLLERS]
    operations: tuple[str, ...]
    for name in names:
        if name in NIC_MODELS:
            model: Any = builtin_nic(name)
            operations = NIC_OPERATIONS
            extra = f"segmentation offload: {'yes' if model.tso else 'no'}"
        elif name in DISK_CONTROLLERS:
            model = builtin_disk(name)
            operations = DISK_OPERATIONS
            extra = f"commands in flight: {model.queue_depth}"
        else:
            raise ConfigError("device", f"must be one of "
                                        f"{', '.join(NIC_MODELS + DISK_CONTROLLERS)}, "
                                        f"got {name!r}")
        print(f"[{name}] {model.description} ({extra})")
        for operation in operations:
            accesses = getattr(model, operation)
            print(f"  {operation}: {len(accesses)} trapping access(es)")
            for access in accesses:
                flags = [access.handler]
                if access.coalescible:
                    flags.append("coalescible")
                print(f"    {access.space.upper():<4} {access.op:<5} {access.register:<14} "
                      f"{', '.join(flags):<28} {access.note}")
        print()
    print("Change a table in a scenario: [emulated.nic] or [emulated.disk] (merged over the "
          "built-in one).")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``presets`` and ``devices`` to the ``virtlab`` sub-command parser."""
    p = sub.add_parser("presets", help="list the CPU virtualization support presets",
                       description="The named CPU virtualization support presets: what an exit, "
                                   "an interrupt injection and an EOI cost, by era.")
    from virtlab.cli import number_in

    p.add_argument("--cpu-ghz", type=number_in(0.1, 10.0), default=3.0,
                   help="clock used to show cycle costs in µs, 0.1 to 10 (default 3.0)")
    p.add_argument("--sources", action="store_true", help="show the source of every value")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("devices", help="list the emulated devices' register access tables",
                       description="Which register accesses each emulated device's driver "
                                   "makes per operation; every one traps.")
    p.add_argument("name", nargs="?", help="e1000, pcnet32, ahci or ide (default: all)")
    p.set_defaults(func=_cmd_devices)
