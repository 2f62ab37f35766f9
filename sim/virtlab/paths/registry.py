"""Which class implements each approach, and which devices each paravirtual backend uses.

The one place that knows every path: the model builds a guest's path through
:func:`build_path`, so the path modules import nothing above themselves (the paravirtual base
class does not import its virtio and Xen devices to choose one; the choice is here).
"""

from __future__ import annotations

from virtlab.cpu import ExecContext
from virtlab.host import Host
from virtlab.params import Params
from virtlab.paths import IOPath
from virtlab.paths.container import ContainerPath
from virtlab.paths.emulated import EmulatedPath
from virtlab.paths.native import NativePath
from virtlab.paths.paravirtual import DeviceClass, ParavirtualParams, ParavirtualPath
from virtlab.paths.passthrough import PassthroughPath
from virtlab.paths.virtio_blk import VirtioBlk
from virtlab.paths.virtio_net import VirtioNet
from virtlab.paths.xen_blk import XenBlk
from virtlab.paths.xen_net import XenNet

__all__ = ["PATH_CLASSES", "PARAVIRTUAL_DEVICES", "build_path"]

#: approach name -> the class of its path (every name in ``virtlab.paths.APPROACHES``).
PATH_CLASSES: dict[str, type] = {
    "native": NativePath,
    "container": ContainerPath,
    "passthrough": PassthroughPath,
    "paravirtual": ParavirtualPath,
    "emulated": EmulatedPath,
}

#: paravirtual backend -> (network device, block device). vhost and QEMU drive the same
#: virtio rings (the backend differs inside the device); Xen has its own split drivers.
PARAVIRTUAL_DEVICES: dict[str, tuple[DeviceClass, DeviceClass]] = {
    "vhost": (VirtioNet, VirtioBlk),
    "qemu": (VirtioNet, VirtioBlk),
    "xen": (XenNet, XenBlk),
}


def build_path(approach: str, host: Host, name: str, vcpu: ExecContext,
               params: Params | None) -> IOPath:
    """The path of one guest, wired to ``host`` (its processes start with the model)."""
    path_class = PATH_CLASSES[approach]
    if path_class is ParavirtualPath:
        assert isinstance(params, ParavirtualParams)
        return ParavirtualPath(host, name, vcpu, params,
                               devices=PARAVIRTUAL_DEVICES[params.backend])
    path: IOPath = path_class(host, name, vcpu, params)
    return path
