"""Lab ``rings``: follow a virtqueue by hand, then check against the real data structure.

The problem is a short script of driver and device actions on a small split virtqueue whose
16-bit indexes start just below 65536 (so they wrap), with notification suppression by event
index or by flag hints. The student predicts how many kicks and interrupts happen and where
the indexes end; the answers replay the same script on
:class:`~virtlab.paths.virtqueue.SplitVirtqueue`, so problem and answers cannot disagree.

Importing this module registers the lab with :mod:`virtlab.labs` (``virtlab lab rings``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from virtlab.labs import Answer, Lab, register
from virtlab.paths.virtqueue import SplitVirtqueue

__all__ = ["RingScript", "make_script", "replay", "LAB"]


@dataclass(frozen=True)
class RingScript:
    """A generated problem: the queue and the actions, in order.

    Actions: ``("add", k)`` the driver adds k one-descriptor chains and ends its burst
    (kick_prepare); ``("pop", k)`` the device pops k chains; ``("use", 0)`` the device uses every
    chain it holds, publishes used.idx and decides whether to interrupt; ``("idle", 0)`` the
    device runs its final check (enable notifications, look again); ``("reap", 0)`` the driver
    reclaims every used chain and re-enables interrupts.
    """

    size: int
    start: int
    event_idx: bool
    actions: tuple[tuple[str, int], ...]


_WORDS = {
    "add": "the driver adds {k} chain(s), one descriptor each, and ends its burst (may kick)",
    "pop": "the device pops {k} chain(s)",
    "use": "the device uses every chain it holds and publishes used.idx (may interrupt)",
    "idle": "the device has nothing left: it re-enables notifications and looks again",
    "reap": "the driver reclaims every used chain and re-enables interrupts",
}


def make_script(seed: int) -> RingScript:
    """Draw a consistent script (never more chains than free descriptors)."""
    rng = np.random.default_rng(seed)
    size = int(rng.choice([4, 8, 16]))
    start = 65535 - int(rng.integers(0, 6))
    event_idx = bool(rng.integers(0, 2))
    vq = SplitVirtqueue(size, event_idx=event_idx, indirect=False, start_index=start)
    actions: list[tuple[str, int]] = []
    held: list[int] = []
    for _ in range(int(rng.integers(6, 9))):
        choices = []
        if vq.num_free:
            choices.append("add")
        if vq.has_avail():
            choices.append("pop")
        if held:
            choices.append("use")
        if not vq.has_avail() and not held:
            choices.append("idle")
        if vq.has_used():
            choices.append("reap")
        action = str(rng.choice(choices))
        count = 0
        if action == "add":
            count = int(rng.integers(1, min(3, vq.num_free) + 1))
        elif action == "pop":
            count = int(rng.integers(1, vq.outstanding - len(held) + 1))
        actions.append((action, count))
        _apply(vq, action, count, held)
    return RingScript(size, start, event_idx, tuple(actions))


def _apply(vq: SplitVirtqueue, action: str, count: int, held: list[int]) -> tuple[int, int]:
    """Do one action; ``held`` lists the chains the device has popped. Return (kicks, irqs)."""
    if action == "add":
        for k in range(count):
            vq.add([64], [], k)
        return int(vq.kick_prepare()), 0
    if action == "pop":
        vq.disable_notify()   # the device is awake while it works
        for _ in range(count):
            chain = vq.pop()
            assert chain is not None
            held.append(chain.head)
        return 0, 0
    if action == "use":
        for head in held:
            vq.add_used(head, 0)
        held.clear()
        vq.flush_used()
        return 0, int(vq.need_interrupt())
    if action == "idle":
        vq.enable_notify()
        return 0, 0
    while vq.get_buf() is not None:
        pass
    vq.enable_cb()
    return 0, 0


def replay(script: RingScript) -> tuple[SplitVirtqueue, list[str], int, int]:
    """Replay ``script``; return the queue, one explanation line per action, kicks, irqs."""
    vq = SplitVirtqueue(script.size, event_idx=script.event_idx, indirect=False,
                        start_index=script.start)
    lines = []
    kicks = irqs = 0
    held: list[int] = []
    for step, (action, count) in enumerate(script.actions, 1):
        kick, irq = _apply(vq, action, count, held)
        kicks += kick
        irqs += irq
        note = ""
        if action == "add":
            old, new = vq.last_kick_window
            rule = (f"avail_event={vq.avail_event} in [{old},{new})" if vq.event_idx
                    else f"NO_NOTIFY={vq.used_flags & 1}")
            note = f" -> {'KICK' if kick else 'no kick'} ({rule})"
        elif action == "use":
            old, new = vq.last_signal_window
            rule = (f"used_event={vq.used_event} in [{old},{new})" if vq.event_idx
                    else f"NO_INTERRUPT={vq.avail_flags & 1}")
            note = f" -> {'INTERRUPT' if irq else 'no interrupt'} ({rule})"
        lines.append(f"  {step}. {action} {count or ''}".rstrip() + f"{note}; {vq.indexes()}")
    return vq, lines, kicks, irqs


def _problem(seed: int) -> tuple[str, RingScript]:
    script = make_script(seed)
    mode = ("event index (VIRTIO_F_EVENT_IDX: vring_need_event)" if script.event_idx
            else "flag hints (USED_F_NO_NOTIFY / AVAIL_F_NO_INTERRUPT)")
    text = [f"A split virtqueue of {script.size} descriptors. Every index (avail.idx, used.idx, "
            "last_avail, last_used,",
            f"avail_event, used_event) starts at {script.start}; indexes wrap at 65536.",
            f"Notifications are suppressed by {mode}.",
            "At the start the device sleeps with notifications enabled and the driver has "
            "interrupts enabled.", "", "Actions, in order:"]
    for step, (action, count) in enumerate(script.actions, 1):
        text.append(f"  {step}. " + _WORDS[action].format(k=count))
    text += ["", "Questions:",
             "  kicks      = how many times does the driver notify the device?",
             "  interrupts = how many times does the device interrupt the driver?",
             "  avail_idx  = avail.idx at the end",
             "  used_idx   = used.idx at the end",
             "  free       = free descriptors at the end"]
    return "\n".join(text) + "\n", script


def _answers(script: RingScript) -> list[Answer]:
    vq, lines, kicks, irqs = replay(script)
    how = "replayed on SplitVirtqueue:\n" + "\n".join(lines)
    return [Answer("kicks", kicks, "", how),
            Answer("interrupts", irqs, "", "see the replay above"),
            Answer("avail_idx", vq.avail_idx, "", "start + chains added, mod 65536"),
            Answer("used_idx", vq.used_idx, "", "start + chains used, mod 65536"),
            Answer("free", vq.num_free, "", "size - descriptors not yet reclaimed")]


LAB = register(Lab("rings", "a virtqueue by hand: kicks, interrupts, wrapping indexes",
                   _problem, _answers, tolerance=0.0))


def main(argv: list[str] | None = None) -> int:
    """``rings.py -s SEED [-c] [--check name=value,...]``: the lab, answers printed exactly."""
    import argparse

    parser = argparse.ArgumentParser(prog="check.py", description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--seed", type=int, default=0, help="problem seed (default 0)")
    parser.add_argument("-c", "--compute", action="store_true", help="print the answers")
    parser.add_argument("--check", metavar="NAME=VALUE,...", help="check your answers")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    text, script = _problem(args.seed)
    print("ARG lab rings")
    print(f"ARG seed {args.seed}")
    print()
    print(text.rstrip())
    if not args.compute and args.check is None:
        print("\nRun again with -c to see the answers, or --check 'kicks=1,...' to check "
              "yours.")
        return 0
    answers = _answers(script)
    if args.compute:
        print("\nAnswers:")
        print(answers[0].how)
        for answer in answers:
            print(f"  {answer.name} = {int(answer.value)}")
    if args.check is None:
        return 0
    known = {a.name: int(a.value) for a in answers}
    given: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in args.check.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in known or not value.strip().lstrip("-").isdigit():
            parser.error(f"--check: expected name=integer with name one of "
                         f"{', '.join(known)}, got {part!r}")
        given[name.strip()] = int(value)
    print("\nCheck:")
    for name, value in given.items():
        verdict = "ok" if value == known[name] else "not quite"
        print(f"  {name}: {value} -> {verdict}")
    missing = [name for name in known if name not in given]
    if missing:
        print(f"  not answered: {', '.join(missing)}")
    return 0 if not missing and all(given[n] == known[n] for n in given) else 1
