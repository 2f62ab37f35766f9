"""How fast, and how lean, is the engine? Ratios against baselines run side by side.

Three measurements, each printed as a ratio to a baseline timed in the same process, so the
figures mean the same on a fast or a busy machine:

1. **Matched skeleton.** For each approach, the default scenario is run once while counting
   what SimPy does per completed request: events, timeouts, and acquisitions of a CPU, a
   context or the disk. A bare SimPy program then does exactly that per request, with as many
   closed-loop clients as the scenario has requests outstanding, each grab a
   ``simpy.Resource`` request/release and each timeout a plain ``env.timeout``. The ratio is
   the model's completed requests per wall-second over the skeleton's. A stricter skeleton
   does nothing but the same number of SimPy *events* per request (timeouts only): the least
   any SimPy program processing those events can cost; its ratio is printed too.
2. **M/M/1.** The model reduced to one queue (Poisson block reads into a one-channel disk with
   exponential service, every CPU cost zero; the analytic tests' reduction), against Ciw's
   M/M/1 and a minimal SimPy M/M/1 (one process per customer, one ``Resource``), all at
   rho = 0.7 for the same number of customers. Ratios of customers per wall-second.
3. **Memory and scale.** The same M/M/1 reduction for 10k, 100k, 1M and 10M requests, each in
   its own process: peak resident memory (``ru_maxrss``), wall time, requests per wall-second.

    python benchmarks/engine.py                       # all three (the 10M point takes minutes)
    python benchmarks/engine.py --only skeleton,mm1   # the quick parts
    python benchmarks/engine.py --only scale --scale 10k,100k,1M

Ciw comes with the ``bench`` extra (``pip install -e '.[bench]'``; ``python3 dev.py`` installs
it). This is a benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections import Counter

import simpy

from virtlab import APPROACHES, BlockIO, GuestSpec, Scenario, default_scenario, run
from virtlab import cpu as cpu_module
from virtlab.hardware import DiskParams, HostParams

RHO = 0.7
MEAN_SERVICE_US = 10.0


# 1. Matched skeleton ----------------------------------------------------------------------
def count_per_request(scenario) -> dict[str, float]:
    """Run ``scenario`` once and count SimPy events, timeouts and grabs per completed request."""
    counts: Counter[str] = Counter()

    class CountingEnvironment(simpy.Environment):
        def step(self) -> None:
            counts["events"] += 1
            super().step()

        def timeout(self, delay=0, value=None):
            counts["timeouts"] += 1
            return super().timeout(delay, value)

    original_env = simpy.Environment
    original_acquire = cpu_module.Semaphore.acquire

    def counting_acquire(self, priority=False):
        counts["grabs"] += 1
        return original_acquire(self, priority)

    simpy.Environment = CountingEnvironment  # type: ignore[misc]
    cpu_module.Semaphore.acquire = counting_acquire  # type: ignore[method-assign]
    try:
        result = run(scenario, 0)
    finally:
        simpy.Environment = original_env  # type: ignore[misc]
        cpu_module.Semaphore.acquire = original_acquire  # type: ignore[method-assign]
    requests = sum(result.completed.values())
    return {"requests": requests, **{k: v / requests for k, v in counts.items()}}


def outstanding(scenario) -> int:
    """Requests the scenario keeps in flight (its closed-loop clients)."""
    total = 0
    for guest in scenario.guests:
        for w in guest.workloads:
            if w.kind == "rr":
                total += w.in_flight
            elif w.kind == "block":
                total += w.iodepth * w.jobs
            elif w.kind == "cpu":
                total += w.threads
            else:  # a stream's window of segments, or a server's connections
                total += getattr(w, "connections", 4)
    return total


def skeleton(requests: int, clients: int, timeouts: float, grabs: float) -> float:
    """Wall seconds for bare SimPy clients doing ``timeouts`` and ``grabs`` per request."""
    env = simpy.Environment()
    pool = simpy.Resource(env, capacity=clients)
    per_client = requests // clients
    whole_t, frac_t = int(timeouts), timeouts - int(timeouts)
    whole_g, frac_g = int(grabs), grabs - int(grabs)

    def client(env: simpy.Environment):
        debt_t = debt_g = 0.0
        for _ in range(per_client):
            debt_t += frac_t
            debt_g += frac_g
            t = whole_t + int(debt_t)
            g = whole_g + int(debt_g)
            debt_t -= int(debt_t)
            debt_g -= int(debt_g)
            for _ in range(g):
                request = pool.request()
                yield request
                pool.release(request)
            for _ in range(t):
                yield env.timeout(1.0)

    for _ in range(clients):
        env.process(client(env))
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start


def bench_skeleton(repeat: int) -> None:
    print("1. matched skeleton: the model's requests per wall-second over a bare SimPy program "
          "doing the same per request")
    print(f"   {'path':<12} {'events/req':>10} {'timeouts/req':>12} {'grabs/req':>9} "
          f"{'model req/s':>12} {'skeleton req/s':>14} {'ratio':>6} "
          f"{'events-only req/s':>17} {'ratio':>6}")
    base = default_scenario()
    for approach in APPROACHES:
        scenario = base.with_approach(approach)
        per = count_per_request(scenario)
        requests = int(per["requests"])
        clients = outstanding(scenario)
        model_s = skeleton_s = events_s = float("inf")
        for _ in range(repeat):  # interleaved, so all three see the same machine
            model_s = min(model_s, run(scenario, 0).wall_s)
            skeleton_s = min(skeleton_s, skeleton(requests, clients, per["timeouts"],
                                                  per["grabs"]))
            events_s = min(events_s, skeleton(requests, clients, per["events"], 0.0))
        print(f"   {approach:<12} {per['events']:>10.2f} {per['timeouts']:>12.2f} "
              f"{per['grabs']:>9.2f} {requests / model_s:>12,.0f} "
              f"{requests / skeleton_s:>14,.0f} {skeleton_s / model_s:>6.2f} "
              f"{requests / events_s:>17,.0f} {events_s / model_s:>6.2f}")


# 2. M/M/1 ---------------------------------------------------------------------------------
def mm1_scenario(customers: int) -> Scenario:
    """Poisson reads into a one-channel disk with exponential service; no CPU cost anywhere."""
    rate_per_s = RHO / MEAN_SERVICE_US * 1e6
    host = HostParams(syscall_us=0.0, ctx_switch_us=0.0, irq_us=0.0, stack_pkt_us=0.0,
                      bridge_pkt_us=0.0, blk_io_us=0.0)
    disk = DiskParams(kind="flash", channels=1, read_access_us=MEAN_SERVICE_US,
                      write_access_us=MEAN_SERVICE_US, service_cv=1.0,
                      interface_mbytes_per_s=1e6)
    workload = BlockIO(loop="open", rate_per_s=rate_per_s, block_bytes=512)
    return Scenario(duration_us=customers / rate_per_s * 1e6, warmup_us=0.0, host=host,
                    disk=disk, guests=(GuestSpec(name="g", approach="native", vcpus=1,
                                                 workloads=(workload,)),))


def virtlab_mm1(customers: int) -> tuple[float, int]:
    result = run(mm1_scenario(customers), 0)
    return result.wall_s, sum(result.completed.values())


def simpy_mm1(customers: int) -> tuple[float, int]:
    """A minimal SimPy M/M/1: a source process, one process per customer, one Resource."""
    import numpy as np

    rng = np.random.default_rng(0)
    gaps = (rng.standard_exponential(customers) * (MEAN_SERVICE_US / RHO)).tolist()
    services = (rng.standard_exponential(customers) * MEAN_SERVICE_US).tolist()
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    done = [0]
    total = [0.0]

    def customer(env, service):
        arrived = env.now
        with server.request() as request:
            yield request
            yield env.timeout(service)
        total[0] += env.now - arrived
        done[0] += 1

    def source(env):
        for gap, service in zip(gaps, services, strict=True):
            yield env.timeout(gap)
            env.process(customer(env, service))

    env.process(source(env))
    start = time.perf_counter()
    env.run()
    return time.perf_counter() - start, done[0]


def ciw_mm1(customers: int) -> tuple[float, int] | None:
    try:
        import ciw
    except ImportError:
        return None
    network = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=RHO / MEAN_SERVICE_US)],
        service_distributions=[ciw.dists.Exponential(rate=1.0 / MEAN_SERVICE_US)],
        number_of_servers=[1])
    ciw.seed(0)
    simulation = ciw.Simulation(network)
    horizon = customers * MEAN_SERVICE_US / RHO
    start = time.perf_counter()
    simulation.simulate_until_max_time(horizon)
    wall = time.perf_counter() - start
    return wall, len(simulation.get_all_records())


def bench_mm1(customers: int, repeat: int) -> None:
    print(f"\n2. M/M/1 at rho {RHO}, about {customers:,} customers: customers per wall-second")
    rows = {}
    for _ in range(repeat):
        for name, fn in (("virtlab", virtlab_mm1), ("minimal SimPy", simpy_mm1),
                         ("Ciw", ciw_mm1)):
            measured = fn(customers)
            if measured is None:
                continue
            wall, done = measured
            rate = done / wall
            rows[name] = max(rows.get(name, 0.0), rate)
    for name, rate in rows.items():
        print(f"   {name:<14} {rate:>12,.0f}")
    if "Ciw" in rows:
        print(f"   virtlab / Ciw           {rows['virtlab'] / rows['Ciw']:.2f}")
    else:
        print("   Ciw is not installed (pip install -e '.[bench]'): no Ciw ratio")
    print(f"   virtlab / minimal SimPy {rows['virtlab'] / rows['minimal SimPy']:.2f}")


# 3. Memory and scale ----------------------------------------------------------------------
def scale_child(customers: int) -> None:
    """Run in a child process: one M/M/1 run, then print its figures as JSON."""
    scenario = mm1_scenario(customers)
    start = time.perf_counter()
    result = run(scenario, 0)
    wall = time.perf_counter() - start
    done = sum(result.completed.values())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (summary,) = result.summaries
    print(json.dumps({"requests": done, "wall_s": wall, "rss_mb": rss_mb,
                      "p99_us": summary.latency_p99_us, "gc": gc.get_stats()[2]["collections"]}))


def parse_count(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def bench_scale(sizes: list[int]) -> None:
    print("\n3. memory and scale (M/M/1 reduction, one process per size, records off)")
    print(f"   {'requests':>11} {'wall s':>8} {'req/wall-s':>11} {'peak RSS MB':>12} "
          f"{'MB per 1M req':>13}")
    baseline = None
    for size in sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(size)], check=True,
                             capture_output=True, text=True).stdout
        row = json.loads(out)
        if baseline is None:
            baseline = row
        growth = ((row["rss_mb"] - baseline["rss_mb"])
                  / max(1e-9, (row["requests"] - baseline["requests"]) / 1e6)
                  if row is not baseline else float("nan"))
        print(f"   {row['requests']:>11,} {row['wall_s']:>8.1f} "
              f"{row['requests'] / row['wall_s']:>11,.0f} {row['rss_mb']:>12.1f} "
              f"{growth:>13.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="skeleton,mm1,scale",
                        help="comma-separated parts: skeleton, mm1, scale")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for timed parts")
    parser.add_argument("--customers", default="200k", help="M/M/1 customers (default 200k)")
    parser.add_argument("--scale", default="10k,100k,1M,10M", help="sizes for the scale part")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scale_child(args.child)
        return
    parts = {p.strip() for p in args.only.split(",")}
    print(f"python {sys.version.split()[0]}, simpy {simpy.__version__}")
    if "skeleton" in parts:
        bench_skeleton(args.repeat)
    if "mm1" in parts:
        bench_mm1(parse_count(args.customers), args.repeat)
    if "scale" in parts:
        bench_scale([parse_count(s) for s in args.scale.split(",")])


if __name__ == "__main__":
    main()
