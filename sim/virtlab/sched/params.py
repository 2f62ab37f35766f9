"""Parameters of CPU scheduling: the host-wide ``[scheduler]`` table and each guest's ``sched``.

``[scheduler]`` names the two schedulers a scenario runs (S38, S41, S42, S66):

* ``host`` schedules the work of the one shared kernel: native processes, containers, and (with
  ``vcpu = "host"``) the threads of KVM-style virtual machines. ``"fifo"`` is the foundation's
  run-to-completion core pool; ``"cfs"`` (Linux 2.6.23 to 6.5) and ``"eevdf"`` (Linux 6.6 on) are
  Linux's fair scheduler, ``"linux"`` is the one of the profile's kernel generation
  (``linux_fair``); ``"vserver"`` and ``"openvz"`` are the proportional-share and limiting
  schedulers of Linux-VServer and OpenVZ.
* ``vcpu`` says who schedules virtual CPUs: ``"host"`` (KVM: vCPUs are threads of the host
  kernel, grouped per VM like a container) or ``"credit"`` (a Xen-style hypervisor: the credit
  scheduler runs every domain's vCPUs, dom0 included, on the physical cores).

Each guest's ``[guests.sched]`` table holds the knobs of every scheduler (only those of the
schedulers in use matter): cgroup weight/shares and CFS bandwidth, the VServer token bucket,
OpenVZ cpuunits/cpulimit and Xen credit weight/cap.

The timer tick (``hz``, and ``hrtick``) is shared: CFS bandwidth control notices an exhausted
quota at the next tick, EEVDF notices a used-up slice there, VServer counts tokens in ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from virtlab.errors import ConfigError
from virtlab.params import Params, param

__all__ = ["SchedulerParams", "GuestSchedParams", "HOST_SCHEDULERS", "VCPU_SCHEDULERS",
           "LINUX_FAIR", "SHARES_CONVERSIONS", "HZ_CHOICES", "shares_to_weight",
           "weight_to_shares", "MIN_SHARES", "MAX_SHARES"]

HOST_SCHEDULERS = ("fifo", "linux", "cfs", "eevdf", "vserver", "openvz")
#: Linux's fair scheduler by kernel generation: CFS (2.6.23 to 6.5), EEVDF (6.6 on).
LINUX_FAIR = ("eevdf", "cfs")
#: cgroup v1 shares -> v2 weight as OCI runtimes convert it: runc < 1.3.2 / crun < 1.23
#: ("linear"), runc >= 1.3.2 / crun >= 1.23 ("quadratic", 1024 -> 100).
SHARES_CONVERSIONS = ("quadratic", "linear")
#: CONFIG_HZ values of the kernel's Kconfig.hz.
HZ_CHOICES = (100, 250, 300, 1000)
VCPU_SCHEDULERS = ("host", "credit")
#: Limits of cgroup v1 ``cpu.shares`` (kernel MIN_SHARES, MAX_SHARES = 1 << 18).
MIN_SHARES, MAX_SHARES = 2, 262144
_XEN = "Xen common/sched_credit.c"


def shares_to_weight(shares: int, conversion: str = "linear") -> int:
    """Cgroup v1 ``cpu.shares`` -> v2 ``cpu.weight`` as container runtimes convert it (S39).

    ``"linear"`` (runc < 1.3.2, crun < 1.23, kubelet): integer arithmetic
    ``1 + ((shares - 2) * 9999) // 262142``; 1024 -> 39, 3072 -> 118 (3:1 becomes 3.03:1).
    ``"quadratic"`` (``ConvertCPUSharesToCgroupV2Value`` of runc >= 1.3.2 / crun >= 1.23, S39b):
    ``ceil(10 ** ((l*l + 125*l) / 612 - 7/34))`` with ``l = log2(shares)``, which maps the minimum,
    the default and the maximum onto each other (2 -> 1, 1024 -> 100, 262144 -> 10000);
    3072 -> 240, so 3:1 in shares becomes 2.4:1 in weight.
    """
    if conversion == "linear":
        return 1 + ((shares - 2) * 9999) // 262142
    if conversion != "quadratic":
        raise ConfigError("scheduler.shares_conversion",
                          f"must be one of {', '.join(SHARES_CONVERSIONS)}, got {conversion!r}")
    if shares <= MIN_SHARES:
        return 1
    if shares >= MAX_SHARES:
        return 10000
    log = math.log2(shares)
    return math.ceil(10.0 ** ((log * log + 125.0 * log) / 612.0 - 7.0 / 34.0))


def weight_to_shares(weight: int) -> int:
    """v2 ``cpu.weight`` -> v1 ``cpu.shares`` (``weight * 1024 / 100``, nice-0 = 100 = 1024)."""
    return max(MIN_SHARES, weight * 1024 // 100)


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerParams(Params):
    """Which schedulers run the host's cores, and their system-wide tunables."""

    section = "scheduler"

    host: str = param("fifo", choices=HOST_SCHEDULERS,
                      source="assumption (the foundation's first-come, first-served core pool)",
                      doc="Scheduler of the shared kernel: fifo, linux (the profile's "
                          "linux_fair), cfs, eevdf, vserver or openvz.")
    linux_fair: str = param("eevdf", choices=LINUX_FAIR,
                            source="S50 (EEVDF replaced CFS placement in Linux 6.6)",
                            doc="Linux's fair scheduler of this kernel generation, used by "
                                "host = linux: eevdf (6.6 on) or cfs (2.6.23 to 6.5).")
    vcpu: str = param("host", choices=VCPU_SCHEDULERS, source="S66; S13, S15",
                      doc="Who schedules vCPUs: the host kernel (KVM) or a credit hypervisor "
                          "(Xen, with dom0 running backends and the host's own work).")
    cgroup: str = param("v2", choices=("v1", "v2"), source="S38",
                        doc="cgroup version: v1 weighs groups by cpu.shares, v2 by cpu.weight.")
    shares_conversion: str = param(
        "quadratic", choices=SHARES_CONVERSIONS,
        source="S39b (ConvertCPUSharesToCgroupV2Value, runc >= 1.3.2, crun >= 1.23)",
        doc="How cpu.shares given under cgroup v2 become cpu.weight: quadratic (current OCI "
            "runtimes, 1024 -> 100) or linear (older runtimes, 1024 -> 39).")
    runqueues: str = param(
        "global", choices=("global", "per-cpu"),
        source="assumption (global: the ideal the kernel's per-CPU queues approximate); "
               "S50 (per-cpu: one cfs_rq per CPU, calc_group_shares); S41 "
               "(vx_info_init_sched_pc: a bucket per CPU)",
        doc="One global run queue, or one per CPU: Linux's fair scheduler splits each "
            "group's weight by where its tasks run; VServer keeps a token bucket per CPU "
            "(cfs, eevdf, vserver; vcpu = host).")
    cfs_base_slice_us: float = param(
        3000.0, unit="µs", lo=100.0, hi=1e6,
        source="S38 (base_slice_ns 0.75 ms x (1 + log2 of 8 CPUs))",
        doc="CFS: how long a CPU-bound group runs before the scheduler picks again.")
    cfs_wakeup_granularity_us: float = param(
        1000.0, unit="µs", lo=0.0, hi=1e6, source="assumption (sched_wakeup_granularity 1 ms)",
        doc="CFS: a waking group preempts only if it is this far behind in virtual time.")
    cfs_sleeper_credit_us: float = param(
        3000.0, unit="µs", lo=0.0, hi=1e6,
        source="assumption (GENTLE_FAIR_SLEEPERS: half of sched_latency 6 ms)",
        doc="CFS: a group waking from sleep is placed this far behind min_vruntime.")
    cfs_bandwidth_slice_us: float = param(
        5000.0, unit="µs", lo=100.0, hi=1e6, source="S38 (sched_cfs_bandwidth_slice_us)",
        doc="CFS bandwidth: quota is handed from the global pool to a CPU in slices this big.")
    hz: int = param(1000, unit="Hz", choices=HZ_CHOICES,
                    source="assumption (CONFIG_HZ=1000 of current distribution kernels); "
                           "S51 (kernel/Kconfig.hz choices)",
                    doc="Timer ticks per second: bandwidth and slice checks happen at ticks, "
                        "VServer pays a token per tick.")
    hrtick: bool = param(False, source="S51 (kernel/sched/features.h: HRTICK off by default)",
                         doc="High-resolution tick: an exhausted CFS quota or EEVDF slice is "
                             "noticed at once rather than at the next tick.")
    vserver_timeslice_us: float = param(
        100000.0, unit="µs", lo=100.0, hi=1e7,
        source="assumption (O(1) scheduler DEF_TIMESLICE 100 ms)",
        doc="VServer: round-robin timeslice of a CPU-bound context with tokens left.")
    openvz_timeslice_us: float = param(16000.0, unit="µs", lo=100.0, hi=1e7,
                                       source="S42 (FSCH_TIMESLICE 16 ms)",
                                       doc="OpenVZ: a container keeps the CPU this long before "
                                           "the fair scheduler picks again.")
    openvz_max_latency_timeslices: int = param(
        25, lo=1, hi=100000, source="S42 (fairsched_max_latency = 25)",
        doc="OpenVZ: how far ahead of virtual time a start tag may run (bounds a heavy user's "
            "penalty).")
    credit_tslice_us: float = param(30000.0, unit="µs", lo=1000.0, hi=1e6,
                                    source=f"{_XEN} (CSCHED_DEFAULT_TSLICE_MS 30)",
                                    doc="Credit: timeslice and accounting period; a tick is "
                                        "a third of it.")
    credit_ratelimit_us: float = param(1000.0, unit="µs", lo=0.0, hi=1e6,
                                       source="Xen sched_ratelimit_us default 1000",
                                       doc="Credit: a running vCPU is not preempted before it "
                                           "has run this long.")
    credit_boost: bool = param(True, source=f"{_XEN} (csched_vcpu_wake)",
                               doc="Credit: a vCPU woken while UNDER gets BOOST priority and "
                                   "preempts.")
    dom0_weight: int = param(256, lo=1, hi=65535, source=f"{_XEN} (CSCHED_DEFAULT_WEIGHT)",
                             doc="Credit: weight of dom0, which runs backends and host work.")
    dom0_vcpus: int = param(0, lo=0, hi=1024, source="assumption (0 = one per host core)",
                            doc="Credit: vCPUs of dom0 (0 = as many as the host has cores).")

    @property
    def tick_us(self) -> float:
        """Length of one timer tick (a jiffy), ``1e6 / hz`` µs."""
        return 1e6 / self.hz

    @property
    def fair(self) -> str:
        """The host scheduler with ``linux`` resolved to the kernel generation's fair scheduler."""
        return self.linux_fair if self.host == "linux" else self.host

    def check(self) -> None:
        """The rate limit cannot exceed the timeslice; per-CPU queues are Linux's fair ones."""
        if self.runqueues == "per-cpu" and (
                self.fair not in (*LINUX_FAIR, "vserver") or self.vcpu != "host"):
            raise ConfigError("runqueues", f"'per-cpu' needs host = cfs, eevdf, linux or vserver "
                                           f"and vcpu = host, got host = {self.host!r}, vcpu = "
                                           f"{self.vcpu!r}")
        if self.credit_ratelimit_us > self.credit_tslice_us:
            raise ConfigError("credit_ratelimit_us", f"must not exceed credit_tslice_us "
                                                     f"({self.credit_tslice_us:g}), got "
                                                     f"{self.credit_ratelimit_us:g}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestSchedParams(Params):
    """A guest's CPU-scheduling knobs (a cgroup, a VServer context, an OpenVZ VE, a Xen domain).

    Only the fields of the schedulers named in ``[scheduler]`` take effect.
    """

    weight: int = param(100, lo=1, hi=10000, source="S38 (cpu.weight default 100)",
                        doc="cgroup v2 cpu.weight; ignored when shares is set.")
    shares: int = param(0, lo=0, hi=MAX_SHARES, source="S38, S39 (cpu.shares default 1024)",
                        doc="cgroup v1 cpu.shares (0 = not set: derived from weight).")
    cfs_quota_us: float = param(-1.0, unit="µs", lo=-1.0, hi=1e8,
                                source="S38 (cpu.cfs_quota_us, -1 = unlimited); S51 "
                                       "(tg_set_cfs_bandwidth: at least 1 ms, may exceed the "
                                       "period)",
                                doc="CFS bandwidth: CPU time per period (-1 = unlimited); "
                                    "above the period on several CPUs (1.5 x period = 1.5 "
                                    "CPUs).")
    cfs_period_us: float = param(100000.0, unit="µs", lo=1000.0, hi=1e6,
                                 source="S38 (cpu.cfs_period_us, 1 ms to 1 s)",
                                 doc="CFS bandwidth: the enforcement period.")
    vserver_hard: bool = param(False, source="S41 (VXF_SCHED_HARD)",
                               doc="VServer: enforce the token bucket (hold when empty).")
    vserver_fill_rate: int = param(1, lo=1, hi=1000000, source="S41b (FillRate 1)",
                                   doc="VServer: tokens added every interval.")
    vserver_interval_ticks: int = param(4, lo=1, hi=1000000, source="S41b (Interval 4)",
                                        doc="VServer: ticks between refills.")
    vserver_tokens_min: int = param(-1, lo=-1, hi=1000000,
                                    source="S41 (sched_init.h vx_info_init_sched: HZ >> 4)",
                                    doc="VServer: tokens needed to leave the hold queue "
                                        "(-1: HZ / 16, 62 at HZ 1000, 15 at HZ 250).")
    vserver_tokens_max: int = param(-1, lo=-1, hi=1000000,
                                    source="S41 (sched_init.h vx_info_init_sched: HZ >> 1)",
                                    doc="VServer: bucket size; excess tokens spill (-1: HZ / 2, "
                                        "500 at HZ 1000, 125 at HZ 250).")
    vserver_idle_skip: bool = param(False, source="S41 (CONFIG_VSERVER_IDLETIME)",
                                    doc="VServer: earn tokens from idle time the CPU skips.")
    vserver_fill_rate_idle: int = param(1, lo=1, hi=1000000, source="S41 (fill_rate[1])",
                                        doc="VServer: tokens per idle interval when skipping.")
    vserver_interval_idle_ticks: int = param(
        8, lo=1, hi=1000000, source="S41 (sched_init.h vx_info_init_sched: interval[1] = 8)",
        doc="VServer: idle ticks per idle refill.")
    openvz_cpuunits: int = param(1000, lo=8, hi=500000, source="S42 (vzctl default 1000)",
                                 doc="OpenVZ: relative CPU share (start-tag weight "
                                     "500000 / cpuunits).")
    openvz_cpulimit_pct: float = param(0.0, unit="%", lo=0.0, hi=102400.0,
                                       source="S42 (cpulimit, 0 = none)",
                                       doc="OpenVZ: hard cap in % of one CPU (0 = no cap).")
    credit_weight: int = param(256, lo=1, hi=65535, source=f"{_XEN} (CSCHED_DEFAULT_WEIGHT)",
                               doc="Xen credit: weight of the domain.")
    credit_cap_pct: int = param(0, unit="%", lo=0, hi=102400, source=f"{_XEN} (cap 0 = none)",
                                doc="Xen credit: cap in % of one physical CPU (0 = no cap).")

    def check(self) -> None:
        """Shares set or not; a quota within its period; tokens_min <= tokens_max."""
        if self.shares == 1:
            raise ConfigError("shares", f"must be 0 (not set) or in [{MIN_SHARES}, "
                                        f"{MAX_SHARES}], got 1")
        if self.shares and self.weight != 100:
            raise ConfigError("shares", "set either weight (cgroup v2) or shares (cgroup v1), "
                                        "not both")
        quota = self.cfs_quota_us
        if quota != -1.0 and quota < 1000.0:
            raise ConfigError("cfs_quota_us", f"must be -1 (unlimited) or in [1000, 1e+08] µs "
                                              f"(tg_set_cfs_bandwidth's 1 ms minimum), got "
                                              f"{quota:g}")
        if self.vserver_tokens_max == 0:
            raise ConfigError("vserver_tokens_max", "must be -1 (HZ / 2) or in [1, 1000000], "
                                                    "got 0")
        if -1 not in (self.vserver_tokens_min, self.vserver_tokens_max) and (
                self.vserver_tokens_min > self.vserver_tokens_max):
            raise ConfigError("vserver_tokens_min", f"must not exceed vserver_tokens_max "
                                                    f"({self.vserver_tokens_max}), got "
                                                    f"{self.vserver_tokens_min}")

    def check_cpus(self, cpus: int) -> None:
        """Caps in % of one CPU cannot exceed what ``cpus`` CPUs provide."""
        top = 100 * cpus
        if self.openvz_cpulimit_pct > top:
            raise ConfigError("sched.openvz_cpulimit_pct", f"must be 0 (no cap) or in (0, "
                                                           f"{top}] for {cpus} CPUs, got "
                                                           f"{self.openvz_cpulimit_pct:g}")
        if self.credit_cap_pct > top:
            raise ConfigError("sched.credit_cap_pct", f"must be 0 (no cap) or in [1, {top}] "
                                                      f"for {cpus} vCPUs, got "
                                                      f"{self.credit_cap_pct}")

    def cfs_weight(self, cgroup: str, conversion: str = "quadratic") -> int:
        """The group's CFS weight under cgroup ``v1`` (shares) or ``v2`` (weight).

        Shares given under v2 are converted as the OCI runtime would (``conversion``).
        """
        if cgroup == "v1":
            return self.shares or weight_to_shares(self.weight)
        return shares_to_weight(self.shares, conversion) if self.shares else self.weight

    def check_scheduler(self, scheduler: SchedulerParams, where: str) -> None:
        """Checks of values derived from ``[scheduler]`` (``where`` prefixes the field)."""
        try:
            self.vserver_tokens(scheduler.hz)
        except ConfigError as err:
            raise err.prefixed(where) from None

    def vserver_tokens(self, hz: int) -> tuple[int, int, int]:
        """``(tokens_min, tokens_max, initial tokens)`` at ``hz`` ticks per second.

        -1 takes vx_info_init_sched's defaults (HZ >> 4, HZ >> 1); a new context starts with
        HZ >> 2 tokens there, at most the bucket size.
        """
        low = self.vserver_tokens_min if self.vserver_tokens_min >= 0 else hz >> 4
        high = self.vserver_tokens_max if self.vserver_tokens_max >= 0 else hz >> 1
        if high < 1:
            raise ConfigError("vserver_tokens_max", f"must be at least 1, got {high}")
        if low > high:
            raise ConfigError("vserver_tokens_min", f"must not exceed vserver_tokens_max "
                                                    f"({high} at HZ {hz}), got {low}")
        return low, high, min(high, hz >> 2)
