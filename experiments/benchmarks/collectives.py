"""The collectives of a compiled XLA program, read from its HLO text (`compiled.as_text()`).

What tests and benchmarks (comm, aot) use to check that a sharded program communicates what the
plan says and nothing more:

    parse_collectives(hlo)  every collective instruction: op, result shapes (element type and
                            count), bytes, devices per group, and how many times it runs per
                            call of the program (loops counted by their trip counts)
    collectives(hlo)        [(op, bytes)] of every instruction, in program text order

Bytes are those of the instruction's result on one device (a tuple result: the sum of its
parts). For all-to-all, all-reduce and collective-permute that equals the operand; for
all-gather it is the gathered result (|group| times the operand), for reduce-scatter the
scattered piece.

A loop body is printed once in the text but runs once per iteration: `executions` follows the
computations called from the entry computation (while bodies, calls, conditionals, async
wrappers, fusions) and multiplies (a loop's condition runs once more than its body). A loop's
trips are XLA's known_trip_count where the compiler printed one (XLA:CPU does); XLA:TPU prints
none, and there a condition whose root is `counter < constant(N)` (how a scan's loop compiles)
counts N trips, the counter starting at 0 as a scan's does. Each branch of a conditional counts
as taken, so counts under conditionals are upper bounds; any other while loop counts once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

OPS = ("all-to-all", "ragged-all-to-all", "all-reduce", "all-gather", "reduce-scatter",
       "collective-permute")
ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
              "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}

_TYPES = "|".join(sorted(ITEM_BYTES, key=len, reverse=True))
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = ((?:[^\"=]|/\*index=\d+\*/)+?) ("
                          + "|".join(sorted(OPS, key=len, reverse=True)) + r")(-start)?\(")
_SHAPE = re.compile(r"\b(" + _TYPES + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{\s*$")
_CALLEES = re.compile(r"\b(?:calls|to_apply|body|condition|true_computation|"
                      r"false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_LOOP = re.compile(r"\bcondition=%([\w.\-]+), body=%([\w.\-]+)")
_LESS_THAN = re.compile(r"^\s*ROOT %\S+ = pred\[\]\S* compare\(%[\w.\-]+, %([\w.\-]+)\), "
                        r"direction=LT\b")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")
_S32_CONSTANT = re.compile(r"^\s*%([\w.\-]+) = s32\[\]\S* constant\((\d+)\)")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction of the HLO text.

    shapes: ((element type, dims), ...) of its result (several for a combined, tuple op).
    group_size: devices per replica group (1: nothing moves); None if the text does not say
      (collective-permute, or no replica_groups: all devices).
    executions: how many times it runs per call of the program.
    """
    name: str
    op: str
    shapes: Tuple[Tuple[str, Tuple[int, ...]], ...]
    computation: str
    group_size: Optional[int]
    executions: int = 1

    @property
    def dtypes(self) -> Tuple[str, ...]:
        return tuple(sorted({t for t, _ in self.shapes}))

    @property
    def elements(self) -> int:
        return sum(math.prod(dims) for _, dims in self.shapes)

    @property
    def nbytes(self) -> int:
        """Bytes of the result on one device, per execution."""
        return sum(ITEM_BYTES[t] * math.prod(dims) for t, dims in self.shapes)

    @property
    def trivial(self) -> bool:
        """Groups of one device: the op moves no data (e.g. a psum over a size-1 mesh axis)."""
        return self.group_size == 1


def _group_size(line: str) -> Optional[int]:
    """Devices per replica group, from any of the three replica_groups spellings."""
    m = re.search(r"replica_groups=\{(\{[^}]*\})", line)              # {{0,1},{2,3}}
    if m:
        first = m.group(1).strip("{}")
        return len(first.split(",")) if first else None
    m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)          # iota [groups,size]<=
    if m:
        return int(m.group(2))
    m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", line)  # mesh[...] {axes}
    if m:
        sizes = dict((k, int(v)) for k, v in re.findall(r"'(\w+)'=(\d+)", m.group(1)))
        axes = re.findall(r"'(\w+)'", m.group(2))
        return math.prod(sizes[a] for a in axes) if axes else None
    return None


def _computations(hlo: str) -> Tuple[List[str], Dict[str, List[str]], Optional[str]]:
    """(names in text order, {name: instruction lines}, entry name)."""
    order, lines, entry, current = [], {}, None, None
    for line in hlo.splitlines():
        m = _COMPUTATION.match(line)
        if m and not line.startswith(" "):
            current = m.group(1)
            order.append(current)
            lines[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None and line.strip() == "}":
            current = None
        elif current is not None:
            lines[current].append(line)
    return order, lines, entry


def _counted_trips(condition: List[str]) -> Optional[int]:
    """N for a loop condition whose root is `compare(counter, constant(N)), direction=LT`."""
    constants = dict(m.groups() for m in map(_S32_CONSTANT.match, condition) if m)
    for line in condition:
        m = _LESS_THAN.match(line)
        if m and m.group(1) in constants:
            return int(constants[m.group(1)])
    return None


def executions(hlo: str) -> Dict[str, int]:
    """{computation: times it runs per call of the program}; 0 for unreachable ones.

    XLA prints a computation after every computation it calls, so walking the text backwards
    from the entry visits callers before callees.
    """
    order, lines, entry = _computations(hlo)
    runs = {name: 0 for name in order}
    if entry is None:                                  # a bare module: one computation
        return {name: 1 for name in order}
    runs[entry] = 1
    for name in reversed(order):
        if runs[name] == 0:
            continue
        for line in lines[name]:
            loop = _LOOP.search(line)
            trips = _TRIP_COUNT.search(line)
            n = int(trips.group(1)) if loop and trips else None
            if loop and n is None:
                n = _counted_trips(lines.get(loop.group(1), []))
            for callee in _CALLEES.findall(line):
                times = 1
                if n is not None and callee == loop.group(2):          # the body: n times
                    times = n
                elif n is not None and callee == loop.group(1):        # the test: n + 1
                    times = n + 1
                if callee in runs:
                    runs[callee] += runs[name] * times
            for group in _BRANCHES.findall(line):
                for callee in re.findall(r"%([\w.\-]+)", group):
                    if callee in runs:
                        runs[callee] += runs[name]
    return runs


def parse_collectives(hlo: str) -> List[Collective]:
    """Every collective instruction of compiled HLO text, in text order (see module doc).

    XLA:TPU splits an asynchronous collective into fusions (start, continuation, done) that
    each print a copy of the instruction, with the same channel_id and an
    async_collective_fusion_config: one collective, counted once (its first copy). Other
    collectives may share a channel_id (XLA:TPU gives every all-to-all channel 1)."""
    order, lines, _ = _computations(hlo)
    runs = executions(hlo)
    found, channels = [], set()
    for computation in order:
        for line in lines[computation]:
            m = _INSTRUCTION.match(line)
            if not m:
                continue
            channel = _CHANNEL.search(line)
            if channel and "async_collective_fusion_config" in line:
                if (m.group(3), channel.group(1)) in channels:
                    continue
                channels.add((m.group(3), channel.group(1)))
            shapes = tuple((t, tuple(int(d) for d in dims.split(",") if d))
                           for t, dims in _SHAPE.findall(m.group(2)))
            if m.group(4) and m.group(3) in ("all-gather", "collective-permute"):
                shapes = _start_result(shapes)
            found.append(Collective(name=m.group(1), op=m.group(3), shapes=shapes,
                                    computation=computation, group_size=_group_size(line),
                                    executions=runs.get(computation, 1)))
    return found


def _start_result(shapes):
    """An async all-gather-start / collective-permute-start returns (operands, results[,
    context scalars]): keep the results (XLA:CPU runs collectives synchronously; this is for
    GPU/TPU programs and untested here)."""
    arrays = tuple(s for s in shapes if s[1])
    return arrays[len(arrays) // 2:]


def collectives(hlo: str) -> List[Tuple[str, int]]:
    """[(op, bytes of its result on one device)] of every collective instruction in the text
    (each instruction once, loops not multiplied)."""
    return [(c.op, c.nbytes) for c in parse_collectives(hlo)]


def summarize(found: List[Collective]) -> Dict[str, Dict[str, int]]:
    """{op: {"ops": executed count, "bytes": executed bytes, "elements": executed elements,
    "trivial": executed ops on groups of one device (not in the others)}} for every op kind of
    OPS. Elements compare across dtypes: XLA:TPU may move a float32 array as bfloat16."""
    out = {op: {"ops": 0, "bytes": 0, "elements": 0, "trivial": 0} for op in OPS}
    for c in found:
        if c.trivial:
            out[c.op]["trivial"] += c.executions
        else:
            out[c.op]["ops"] += c.executions
            out[c.op]["bytes"] += c.executions * c.nbytes
            out[c.op]["elements"] += c.executions * c.elements
    return out


__all__ = ["Collective", "ITEM_BYTES", "OPS", "collectives", "executions", "parse_collectives",
           "summarize"]
