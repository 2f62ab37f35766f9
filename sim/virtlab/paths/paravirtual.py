"""Paravirtualization: split drivers sharing rings with the backend (virtio, Xen).

No hardware is emulated. The guest's frontend driver places requests on a shared ring and
notifies the backend only when the ring's suppression rule says the backend sleeps; the backend
drains everything queued in the meantime, puts completions on the ring and interrupts the guest
only if the guest asked for it (S1-S16, S46). Three backends:

* ``vhost``: the network device's worker thread in the host kernel (vhost-net, S7), woken
  through ioeventfd; the block device is served by a QEMU I/O thread (virtio-blk dataplane) woken
  the same way (upstream Linux has no in-kernel vhost-blk);
* ``qemu``: QEMU's user-space I/O thread (virtio rings, S6), ~20 µs to wake (S29);
* ``xen``: netback/blkback in a driver domain (Xen rings, grant tables, event channels;
  S10-S16), whose vCPU must be scheduled before it can work.

The rings themselves are real data structures (:mod:`virtlab.paths.virtqueue`,
:mod:`virtlab.paths.xenring`); the SimPy components that drive them and charge the cost of
each step are :mod:`virtlab.paths.virtio` (the transport, with the guest drivers in
``virtio_net`` and ``virtio_blk`` and the backends in ``virtio_backends``) and
:mod:`virtlab.paths.xen` (with ``xen_net`` and ``xen_blk``), all on the common base
:mod:`virtlab.paths.splitdriver`. docs/paravirtual.md walks through all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from simpy.events import ProcessGenerator

from virtlab.cpu import ExecContext
from virtlab.drain import DrainLoop
from virtlab.errors import ConfigError
from virtlab.host import Host
from virtlab.params import Params, param
from virtlab.paths.pvcommon import (
    EXIT_EOI,
    PH_GUEST,
    PH_HOST,
    PH_INTERRUPT,
    PH_OUTSIDE,
    PH_QUEUEING,
    PH_VCPU_WAKEUP,
    PhasedStep,
    count_exits,
    mark,
    run_phased,
)
from virtlab.paths.vm import VmPath
from virtlab.paths.xenring import MAX_GRANTS
from virtlab.records import EXIT, GUEST, HOST, Request

__all__ = ["ParavirtualPath", "ParavirtualParams", "DeviceClass"]

#: A paravirtual device class (virtio or Xen, network or block): built on the path it serves.
DeviceClass = Callable[["ParavirtualPath"], Any]

_A = "assumption"

#: virtio-blk back-ends (``blk_backend``): QEMU's three host AIO modes and vhost-user-blk.
BLK_BACKENDS = ("qemu-threads", "qemu-aio", "qemu-io-uring", "vhost-user-blk")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParavirtualParams(Params):
    """Rings, suppression rules, backend and costs of the paravirtual path."""

    section = "paravirtual"

    backend: str = param("vhost", choices=("vhost", "qemu", "xen"),
                         source="S7 (vhost), S6 (QEMU), S10-S16 (Xen)",
                         doc="vhost-net in the host kernel (with virtio-blk on a QEMU dataplane "
                             "I/O thread), everything in QEMU's user-space main loop, or "
                             "netback/blkback in a Xen driver domain.")
    # virtio rings ------------------------------------------------------------------------------
    ring_size: int = param(256, lo=2, hi=32768, power_of_two=True,
                           source="S1 (power of two, max 32768), S6 (QEMU default 256)",
                           doc="Descriptors per virtqueue.")
    event_idx: bool = param(True, source="S1, S3 (VIRTIO_F_EVENT_IDX)",
                            doc="Suppress notifications by event index (vring_need_event); "
                                "false: by the NO_NOTIFY / NO_INTERRUPT flag hints.")
    indirect_descriptors: bool = param(
        True, source="S1 (VIRTQ_DESC_F_INDIRECT; Linux uses it for chains of 2+ elements)",
        doc="A chain of two or more elements takes one table entry.")
    start_index: int = param(0, lo=0, hi=(1 << 32) - 1,
                             source="S1, S10 (indexes start at 0); set near 65535 to watch the "
                                    "16-bit wrap",
                             doc="Initial value of every ring index.")
    ring_op_us: float = param(0.1, unit="µs", lo=0.0, hi=1e4, source=_A,
                              doc="Frontend work to add or reclaim one chain or ring slot.")
    backend_pkt_us: float = param(0.5, unit="µs", lo=0.0, hi=1e4, source=_A,
                                  doc="Backend work per chain or request (pop, translate, "
                                      "push used).")
    tx_stop_free: int = param(19, lo=1, hi=32768,
                              source="S5 (2 + MAX_SKB_FRAGS; MAX_SKB_FRAGS = 17 assumed)",
                              doc="The guest stops its transmit queue when fewer descriptors "
                                  "are free (at most ring_size).")
    tx_irq_delay_fraction: float = param(0.75, lo=0.0, hi=1.0, source="S4 (3/4 rule)",
                                         doc="Stopped transmit queue: interrupt after this "
                                             "fraction of outstanding buffers is used.")
    rx_refill_fraction: float = param(0.5, lo=0.0, hi=1.0, lo_open=True,
                                      source="S5 (refill when half the ring is free)",
                                      doc="The guest refills receive buffers when this "
                                          "fraction of the ring is free.")
    napi_tx: bool = param(
        True, source="S75 (Linux virtio_net.c: napi_tx, default true since 5.3; start_xmit, "
                     "virtnet_poll_tx); profiles of older kernels set it off",
        doc="virtio-net transmit completions by NAPI: each kicked transmit re-enables "
            "callbacks (enable_cb_delayed) and the device's used buffers raise TX "
            "interrupts, whose poll reclaims them. Off (Linux before 5.3): chains are "
            "reclaimed at the next transmit, with interrupts only while the queue is stopped.")
    rx_buffer_bytes: int = param(4096, unit="bytes", lo=64, hi=1 << 20,
                                 source="assumption (mergeable buffers of one page)",
                                 doc="Size of one posted receive buffer.")
    # vhost and QEMU ----------------------------------------------------------------------------
    vhost_wake_latency_us: float = param(
        0.0, unit="µs", lo=0.0, hi=1e6,
        source="assumption (0: the worker's core is awake; an idle core first takes the IPI "
               "and leaves its idle state)",
        doc="Delay, not CPU time, before a vhost worker woken by a kick or the tap runs (a "
            "halted vCPU's thread: hypervisor.vcpu_wake_latency_us).")
    vhost_signal_batch: int = param(64, lo=1, hi=32768, source="S7 (VHOST_NET_BATCH 64)",
                                    doc="Used entries the backend publishes before it checks "
                                        "whether to interrupt.")
    vhost_pkt_weight: int = param(256, lo=1, hi=1 << 20, source="S7 (VHOST_NET_PKT_WEIGHT)",
                                  doc="Packets per run before the worker yields.")
    vhost_byte_weight_bytes: int = param(524288, unit="bytes", lo=1, hi=1 << 40,
                                         source="S7 (VHOST_NET_WEIGHT 0x80000)",
                                         doc="Bytes per run before the worker yields.")
    vhost_busyloop_us: float = param(0.0, unit="µs", lo=0.0, hi=1e6,
                                     source="S7 (busyloop_timeout, default 0)",
                                     doc="The worker polls an empty ring this long before it "
                                         "re-enables notifications and sleeps.")
    qemu_tx_burst: int = param(256, lo=1, hi=1 << 20, source="S6 (TX_BURST 256)",
                               doc="Packets QEMU sends per bottom-half run.")
    qemu_notify_latency_us: float = param(
        20.0, unit="µs", lo=0.0, hi=1e6, source="S29 (guest -> QEMU iothread notify)",
        doc="Latency of waking QEMU's I/O thread (backend = 'qemu' only).")
    # virtio-blk back-ends -----------------------------------------------------------------------
    blk_backend: str = param(
        "qemu-threads", choices=BLK_BACKENDS,
        source="S120 (QEMU block/file-posix.c raw_open_common: aio=threads unless aio=native "
               "or io_uring is asked for); S121 (linux-aio), S122 (io_uring, QEMU 5.0 on, "
               "opt-in), S123 (thread pool), S125 (SPDK vhost-blk)",
        doc="Who serves virtio-blk (backend vhost or qemu): a QEMU I/O thread submitting "
            "through its thread pool (preadv/pwritev in worker threads, QEMU's default "
            "aio=threads), Linux AIO (aio=native: io_submit per batch) or io_uring "
            "(aio=io_uring: one io_uring_enter per batch); or vhost-user-blk, an SPDK-style "
            "user-space back-end process with its own reactor thread and a user-space NVMe "
            "driver (no syscalls, no host block layer).")
    blk_iothread_poll_us: float = param(
        32.768, unit="µs", lo=0.0, hi=1e6,
        source="S124 (QEMU include/sysemu/iothread.h IOTHREAD_POLL_MAX_NS_DEFAULT 32768 ns, "
               "QEMU 2.9 on; util/aio-posix.c adjust_polling_time: start 4 µs, grow x2, "
               "shrink to 0)",
        doc="The virtio-blk I/O thread's poll-max-ns: before it sleeps it busy-polls the ring "
            "and its completions (guest kicks stay off) for an adaptive window of at most "
            "this long, on a host core. 0: no polling. vhost-user-blk: 0 is SPDK's "
            "interrupt mode, any positive value its poll mode (the reactor never sleeps).")
    blk_thread_pool_size: int = param(64, lo=1, hi=4096,
                                      source="S123 (util/thread-pool.c max_threads 64)",
                                      doc="QEMU's thread pool (qemu-threads): worker threads, "
                                          "each doing one blocking preadv/pwritev at a time.")
    blk_aio_per_io_us: float = param(
        0.5, unit="µs", lo=0.0, hi=1e4,
        source="assumption (io_submit's per-iocb copy and lookup, aio_complete's event and "
               "eventfd signal; S126 measures libaio well below io_uring per core)",
        doc="Host kernel work per request of Linux AIO's interface, on top of the block layer.")
    blk_uring_per_io_us: float = param(
        0.2, unit="µs", lo=0.0, hi=1e4,
        source="assumption (SQE read from shared memory, CQE posted to it; S126)",
        doc="Host kernel work per request of io_uring's interface, on top of the block layer.")
    blk_spdk_per_io_us: float = param(
        0.575, unit="µs", lo=0.0, hi=1e4,
        source="S126 (SPDK 1,739K 4 KiB IOPS per core at QD 128: 1 / 1.739 M)",
        doc="vhost-user-blk: the user-space NVMe driver's submission and polled completion "
            "per request, in place of the syscall and the host block layer.")
    # Xen ---------------------------------------------------------------------------------------
    xen_generation: str = param(
        "3.x", choices=("1.x", "3.x"),
        source="S71 (Xen 1.x: Barham et al. 2003, sections 3.2, 3.3.5, 3.3.6); S70, S11-S16 "
               "(3.0: netback/blkback in a driver domain)",
        doc="1.x: the guest's descriptors go to the hypervisor, which validates them, copies "
            "only headers, pins payload pages and drives the device itself (no driver domain, "
            "no grant tables); receive by page flipping. 3.x (3.0 on): netback/blkback in a "
            "driver domain with grant tables and event channels.")
    xen_rx_mode: str = param(
        "auto", choices=("auto", "copy", "flip"),
        source="S70 (netback net_rx_action / netbk_gop_frag: copying_receiver or page "
               "transfer)",
        doc="Receive: grant copy into pages the frontend posted, or page flipping (the "
            "page holding the packet is exchanged for a posted one). auto: flip on 1.x, "
            "copy on 3.x; 1.x can only flip.")
    # At most MAX_GRANTS / 2: each slot of the transmit and the receive ring can hold a granted
    # page, and both draw on one grant table of MAX_GRANTS references.
    # At least 32: a ring must hold a 64 KiB GSO packet (17 slots) and more than tx_stop_free.
    xen_net_ring_slots: int = param(256, lo=32, hi=MAX_GRANTS // 2, power_of_two=True,
                                    source="S12, S13 (256 entries on a 4 KiB page; at most "
                                           "half the 16,384 grant references; at least a "
                                           "64 KiB packet's 17 slots)",
                                    doc="Slots of netfront's transmit and receive rings.")
    xen_blk_ring_page_order: int = param(
        0, lo=0, hi=9,
        source="S11 (ring-page-order); S142 (multi-page rings: Linux 4.2); S141 (blkfront "
               "max_ring_page_order, default 0: one page unless the guest's admin raises it)",
        doc="blkif ring pages = 2**order; 32 requests each.")
    xen_blk_max_segments: int = param(11, lo=1, hi=4096,
                                      source="S11 (BLKIF_MAX_SEGMENTS_PER_REQUEST)",
                                      doc="4 KiB segments per block request.")
    xen_grant_mode: str = param("map", choices=("map", "copy"),
                                source="S16 (netback copies 128 B, maps the rest)",
                                doc="Transmit: grant-map pages (unmap flushes TLBs) or grant-copy "
                                    "them.")
    xen_tx_copy_bytes: int = param(128, unit="bytes", lo=0, hi=1 << 16,
                                   source="S16 (XEN_NETBACK_TX_COPY_LEN)",
                                   doc="Header bytes netback grant-copies in map mode (Xen "
                                       "itself copies them on 1.x, S71).")
    xen_rx_copy_batch: int = param(64, lo=1, hi=4352, source="S16 (ops per GNTTABOP_copy)",
                                   doc="Grant-copy (or page-flip) operations per hypercall "
                                       "on receive.")
    xen_persistent_grants: bool = param(
        None,
        source="S11 (feature-persistent); S140, S141 (Linux 3.8 on, S142); unset: on for "
               "xen_generation 3.x (a Linux >= 3.11 guest and dom0), off for 1.x",
        doc="Block: blkfront copies data through a pool of pages it keeps granted and blkback "
            "keeps them mapped (at most xen_blk_max_persistent_grants), instead of a grant map "
            "and unmap (with its TLB flush) per segment and request.")
    xen_blk_max_indirect_segments: int = param(
        None, lo=0, hi=256,
        source="S140 (blkback MAX_INDIRECT_SEGMENTS 256, the most it offers in "
               "feature-max-indirect-segments), S141 (blkfront max_indirect_segments default "
               "32), S142 (Linux 3.11 on); unset: 32 for xen_generation 3.x, 0 for 1.x",
        doc="Segments one indirect request carries (the negotiated minimum of the two ends; 0: "
            "no indirect requests). A request of more than xen_blk_max_segments pages is "
            "written as BLKIF_OP_INDIRECT: its segment list is in granted indirect pages (512 "
            "per page), so it takes one ring slot; blkback maps the indirect pages, reads them "
            "and unmaps them before mapping the segments.")
    xen_blk_max_persistent_grants: int = param(
        1056, lo=0, hi=MAX_GRANTS,
        source="S140 (blkback max_persistent_grants: 1056 = 32 requests x (32 segments + 1 "
               "indirect page); 352 = 32 x 11 before indirect requests)",
        doc="Grants blkback keeps mapped with persistent grants on; past it, new grants are "
            "mapped and unmapped per request as without the feature.")
    grant_op_us: float = param(0.2, unit="µs", lo=0.0, hi=1e4,
                               source="assumption (no per-op figure published; S13, S35, S37)",
                               doc="Hypervisor work per grant map, unmap or copy operation.")
    tlb_flush_us: float = param(1.1, unit="µs", lo=0.0, hi=1e4,
                                source="S13, S35 mechanism; IPI round trip S25 (~3,300 "
                                       "cycles)",
                                doc="TLB shootdown per backend vCPU after a batch of unmaps.")
    driver_domain_vcpus: int = param(1, lo=1, hi=1024, source=_A,
                                     doc="vCPUs of the driver domain running the backends.")

    #: Removed fields and what replaced them (naming one is an error that says so).
    replaced: ClassVar[dict[str, str]] = {
        "domain_switch_us": "hypervisor.xen_domain_switch_us"}

    def __post_init__(self) -> None:
        # Unset Xen block features take the generation's value before validation sees them:
        # Xen 1.x has no grant tables; a 3.x driver domain and guest are taken to be Linux
        # >= 3.11 (profiles of older eras set them off).
        xen3 = self.xen_generation == "3.x"
        if self.xen_persistent_grants is None:
            object.__setattr__(self, "xen_persistent_grants", xen3)
        if self.xen_blk_max_indirect_segments is None:
            object.__setattr__(self, "xen_blk_max_indirect_segments", 32 if xen3 else 0)
        Params.__post_init__(self)

    @property
    def xen_flips_rx(self) -> bool:
        """Whether netback (3.x) or Xen (1.x) delivers received packets by page flipping."""
        return self.xen_rx_mode == "flip" or (self.xen_rx_mode == "auto"
                                              and self.xen_generation == "1.x")

    def check(self) -> None:
        """Check that the rings can hold what they must.

        A block request (three descriptors) must fit a ring without indirect ones; a full
        blkif ring's segments must fit the grant table (else blkfront would run out of grants).
        """
        if not self.indirect_descriptors and self.ring_size < 3:
            raise ConfigError("ring_size", "without indirect descriptors a block request "
                                           "(header + data + status) needs at least 3 "
                                           "descriptors; use 4 or more")
        if self.backend == "xen" and self.xen_net_ring_slots <= self.tx_stop_free:
            raise ConfigError("xen_net_ring_slots",
                              f"must exceed tx_stop_free ({self.tx_stop_free}), or netfront "
                              f"could never transmit; got {self.xen_net_ring_slots}")
        if self.backend == "xen" and self.blk_backend != "qemu-threads":
            raise ConfigError("blk_backend", f"selects virtio-blk's back-end; with backend = "
                                             f"'xen' blkback serves the disk: leave it at "
                                             f"'qemu-threads', got {self.blk_backend!r}")
        if self.xen_generation == "1.x":
            for field, value, allowed in (("xen_rx_mode", self.xen_rx_mode, ("auto", "flip")),
                                          ("xen_grant_mode", self.xen_grant_mode, ("map",)),
                                          ("xen_persistent_grants",
                                           self.xen_persistent_grants, (False,)),
                                          ("xen_blk_max_indirect_segments",
                                           self.xen_blk_max_indirect_segments, (0,)),
                                          ("xen_blk_ring_page_order",   # ring-ref%u grants
                                           self.xen_blk_ring_page_order, (0,))):
                if value not in allowed:
                    raise ConfigError(field, f"Xen 1.x has no grant tables (payload pages are "
                                             f"pinned, receive flips pages): allowed "
                                             f"{', '.join(map(str, allowed))} with "
                                             f"xen_generation = '1.x', got {value}")
        requests = 32 << self.xen_blk_ring_page_order
        if requests * self.xen_blk_max_segments > MAX_GRANTS:
            raise ConfigError("xen_blk_max_segments",
                              f"a full blkif ring ({requests} requests at ring-page-order "
                              f"{self.xen_blk_ring_page_order}) times the segments per request "
                              f"must fit the grant table's {MAX_GRANTS} references, so at most "
                              f"{MAX_GRANTS // requests} here; got {self.xen_blk_max_segments}")
        indirect = self.xen_blk_max_indirect_segments
        if indirect and requests * (indirect + 1) > MAX_GRANTS:   # + its indirect page
            raise ConfigError("xen_blk_max_indirect_segments",
                              f"a full blkif ring ({requests} requests at ring-page-order "
                              f"{self.xen_blk_ring_page_order}) of indirect requests (segments "
                              f"+ 1 indirect page each) must fit the grant table's {MAX_GRANTS} "
                              f"references, so at most {MAX_GRANTS // requests - 1} here; got "
                              f"{indirect}")


class ParavirtualPath(VmPath):
    """A guest with split drivers: a network and a block frontend, each with its backend.

    Components beyond :class:`~virtlab.paths.vm.VmPath`: ``net`` and ``blk``, built for the
    chosen backend (:class:`~virtlab.paths.virtio_net.VirtioNet` /
    :class:`~virtlab.paths.virtio_blk.VirtioBlk` or :class:`~virtlab.paths.xen_net.XenNet` /
    :class:`~virtlab.paths.xen_blk.XenBlk`). The guest's interrupt handlers are the
    devices' own NAPI-style loops driven by the rings' suppression rules, so the base class's
    generic ``guest_nic`` / ``guest_blk`` loops are not started.

    An interrupt that finds the guest's vCPUs halted wakes them as on every VM path
    (:meth:`~virtlab.paths.vm.VmPath.vcpu_wake_steps`: KVM's HLT exit and, past halt polling,
    the vCPU thread's wake-up); under the Xen backend the hypervisor schedules the blocked
    vCPU instead (``hypervisor.xen_domain_switch_us``).
    """

    approach: ClassVar[str] = "paravirtual"

    def __init__(self, host: Host, name: str, vcpu: ExecContext,
                 params: ParavirtualParams | None = None, *,
                 devices: tuple[DeviceClass, DeviceClass]) -> None:
        """Build the path and its devices.

        ``devices``: the network and block device classes of the chosen backend
        (:data:`virtlab.paths.registry.PARAVIRTUAL_DEVICES`); each is built on this path.
        """
        super().__init__(host, name, vcpu)
        p = self.params = params if params is not None else ParavirtualParams()
        self.segment_bytes = host.nic_params.tso_bytes
        self.nobody = Request(-1, name, "-", self.approach, "-", 0, 0.0)
        # A guest kernel path that must not be interleaved with other work on its vCPU (a send
        # from the stack to the kick, a NAPI poll) holds a vCPU (hold_vcpu) and runs its steps
        # through this proxy, which never blocks and which CPU schedulers see as the vCPU.
        self.vcpu_held = ExecContext(host.env, vcpu.name, 1 << 30, role="vcpu")
        self.driver_ctx: ExecContext | None = None
        #: Xen 1.x: the hypervisor itself drives the devices (no driver domain).
        self.xen1 = p.backend == "xen" and p.xen_generation == "1.x"
        if self.xen1:
            # Xen's own I/O work runs on whichever core entered it (hypercall or interrupt).
            self.driver_ctx = ExecContext(host.env, f"{name}.xen", host.params.cores)
            self.softirq = self.driver_ctx
        elif p.backend == "xen":
            self.driver_ctx = ExecContext(host.env, f"{name}.driver-domain",
                                          p.driver_domain_vcpus)
            # The driver domain owns the physical NIC: its interrupt and the bridge run there.
            self.softirq = self.driver_ctx
        self._xen1_irq_steps = ((HOST, host.params.irq_us, "xen: NIC interrupt"),)
        net_class, blk_class = devices
        self.net: Any = net_class(self)
        self.blk: Any = blk_class(self)

    # IOPath ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Post receive buffers, then start the host NIC queue and both devices."""
        self.host_nic.start()
        self.net.start()
        self.blk.start()

    def loops(self) -> list[DrainLoop]:
        """Generic consumers still in use: the host NIC queue (the rings have their own)."""
        return [self.host_nic]

    def ring_stats(self) -> dict[str, tuple[int, int]]:
        """Capacity and maximum occupancy of every ring."""
        return {m.name: (m.size, m.max_occupancy) for m in self.monitors()}

    def monitors(self) -> list[Any]:
        """The ring monitors of both devices."""
        return [*self.net.monitors(), *self.blk.monitors()]

    def path_stats(self, until_us: float) -> dict[str, Any]:
        """Rings (occupancy over time, batch sizes) and notification counters, for results."""
        return {"backend": self.params.backend, "event_idx": self.params.event_idx,
                "rings": {m.name: m.summary(until_us) for m in self.monitors()},
                "counters": {**self.net.counters(), **self.blk.counters(),
                             "vcpu_wakeups": self.vcpu_wakeups}}

    def summary_metrics(self, until_us: float) -> dict[str, float]:
        """Ring-level means for workload summaries: occupancy and batch size."""
        monitors = self.monitors()
        batches = sum(sum(m.batches.values()) for m in monitors)
        items = sum(sum(k * n for k, n in m.batches.items()) for m in monitors)
        return {"ring_occupancy_mean": sum(m.mean_occupancy(until_us) for m in monitors),
                "ring_batch_mean": items / batches if batches else float("nan")}

    def receive(self, req: Request, nbytes: int) -> ProcessGenerator:
        """Host NIC -> bridge -> backend -> guest ring -> guest stack -> application."""
        mark(req, PH_OUTSIDE, self.env.now)   # the peer and the wire, before the host
        yield from super().receive(req, nbytes)
        mark(req, PH_GUEST, self.env.now)     # waking the application and the recv copy

    def send(self, req: Request, nbytes: int) -> ProcessGenerator:
        """The network frontend's transmit path."""
        mark(req, PH_OUTSIDE, self.env.now)   # the application, before the driver
        yield from self.net.send(req, nbytes)

    def block_io(self, req: Request, nbytes: int, write: bool, sequential: bool
                 ) -> ProcessGenerator:
        """The block frontend's path."""
        mark(req, PH_OUTSIDE, self.env.now)
        yield from self.blk.block_io(req, nbytes, write, sequential)

    def forward_rx(self, item: Any) -> None:
        """The bridge hands a received packet to the network backend."""
        mark(item[1], PH_HOST, self.env.now)
        self.net.deliver(item)

    def _host_irq(self, item: Any) -> ProcessGenerator:
        """The physical NIC interrupt; under Xen it is an upcall into the driver domain."""
        host = self.host
        if self.xen1:   # Xen 1.x takes the NIC's interrupt itself
            yield from host.cpu.run(self.softirq, item[1], self._xen1_irq_steps)
            return
        steps: list[tuple[int, float, str]] = [(HOST, host.params.irq_us, "host NIC interrupt")]
        if self.driver_ctx is not None:
            steps.insert(0, (EXIT, host.irq_inject_us, "xen: upcall to the driver domain"))
            if self.driver_ctx.in_use == 0:
                steps.insert(0, (EXIT, host.hypervisor.xen_domain_switch_us,
                                 "xen: schedule the driver domain's vCPU"))
        yield from host.cpu.run(self.softirq, item[1], steps)

    def hold_vcpu(self) -> ProcessGenerator:
        """Take one of the guest's vCPUs (wait if all are busy); run steps on ``vcpu_held``."""
        wait = self.vcpu.acquire()
        if wait is not None:
            yield wait

    def release_vcpu(self) -> None:
        """Give back the vCPU taken by :meth:`hold_vcpu`."""
        self.vcpu.release()

    def run_unaccounted(self, ctx: ExecContext | None, steps: Sequence[PhasedStep]
                        ) -> ProcessGenerator:
        """Run background ``steps`` in ``ctx`` for no request (CPU time only, no latency)."""
        yield from run_phased(self.host.cpu, ctx, self.nobody, steps, PH_QUEUEING, account=False)

    def end_guest_irq(self, unclaimed: Sequence[PhasedStep]) -> ProcessGenerator:
        """Leave an interrupt handler (which runs under :meth:`hold_vcpu`): give the vCPU back.

        ``unclaimed`` is the interrupt's own cost if no completion took it (a spurious
        interrupt: nothing was used); it is then run for no request.
        """
        if unclaimed:
            yield from self.run_unaccounted(self.vcpu_held, unclaimed)
        self.release_vcpu()

    # Halted vCPUs: KVM as on every VM path, Xen schedules the blocked vCPU -----------------------
    def _halted_vcpu_delay_us(self, idle_us: float) -> float:
        """KVM's wake latency; none under Xen (its scheduling is ``xen_domain_switch_us``)."""
        if self.params.backend == "xen":
            return 0.0
        return super()._halted_vcpu_delay_us(idle_us)

    def _halted_vcpu_steps(self, idle_us: float) -> tuple[list[PhasedStep], int]:
        """KVM's HLT exit and thread wake-up, or Xen scheduling the blocked vCPU (no exit)."""
        if self.params.backend == "xen":
            return [(EXIT, self.host.hypervisor.xen_domain_switch_us,
                     "xen: schedule the guest's vCPU",
                     PH_VCPU_WAKEUP)], 0
        return super()._halted_vcpu_steps(idle_us)

    def count_irq_exits(self, req: Request, exits: int) -> None:
        """Count the exits of one interrupt taken for ``req``: the EOI, and a HLT if any."""
        if exits:
            eoi = self.host.msi_eoi_exits if self.params.backend != "xen" else 0
            count_exits(req, EXIT_EOI, eoi, eoi * self.host.exit_kernel_us)
            count_exits(req, None, exits - eoi, (exits - eoi) * self.host.exit_kernel_us)

    def guest_irq_steps(self, what: str) -> tuple[list[PhasedStep], int]:
        """Steps (and VM exits) of taking one interrupt (or Xen upcall) in the guest."""
        host = self.host
        steps, exits = self.vcpu_wake_steps()
        steps.append((GUEST, host.params.irq_us, f"guest: {what} interrupt handler",
                      PH_INTERRUPT))
        # virtio-pci interrupts are MSI-X (vp_find_vqs_msix): with PV EOI the EOI does not exit.
        if self.params.backend != "xen" and host.msi_eoi_exits:
            steps.append((EXIT, host.msi_eoi_exits * host.exit_kernel_us, "EOI exit",
                          PH_INTERRUPT))
            exits += host.msi_eoi_exits
        return steps, exits
