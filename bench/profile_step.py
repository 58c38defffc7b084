"""Where one training step's time goes: a per-op profiler table and, in bf16, which oneDNN kernel ran each matmul.

    python -m bench.profile_step [--shape tiny|0.1b] [--dtype bf16|fp32] [--rows 25] [--no-onednn] [--compile]
                                 [--threads N] [--device cuda] [--model ours|nanoGPT-style|HF GPT-2]

The step is the one ``bench.train_step`` times for our model (forward + chunked head/CE + backward + fused AdamW), run
once to warm up and then once under ``torch.profiler``: the table lists ops by self time with their share of the step
and the three phases. With oneDNN's verbose mode on for a second step, every oneDNN primitive that ran is grouped by
kind and implementation: ``brg_matmul:*amx*`` is a matmul on the AMX tiles, anything else in bf16 is a fallback
(e.g. ``gemm:jit`` or ``ref``); ``brgemm ukernel`` rows are the blocks of SDPA's flash attention. bf16 matmuls that
ATen runs without oneDNN (and every fp32 one: MKL) do not appear there, only in the op table. A diagnostic, not a
benchmark: it has no same-run baseline and is not in ``python -m bench``. On a shared host, small ops wait for
descheduled worker threads and their shares inflate: ``--threads 1`` attributes the time to the work. ``--device cuda``
lists ops by the kernel time they launched, with the number of ATen calls (on a GPU, each is a launch or more);
``--model`` profiles one of the compared models instead of ours (``bench.gpu_check`` profiles ours and the reference).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from bench.common import is_cuda
from bench.train_step import DTYPES, SHAPES, T, batch_size, build_model, loss_fn
from dnagpt.utils.heap import keep_freed_memory

PHASES = ("forward", "backward", "optimizer")


def make_labelled_step(shape: str, dtype: torch.dtype, compile: bool = False, device: str = "cpu",
                       name: str = "ours") -> Callable[[], None]:  # fmt: skip
    """One training step of model ``name`` (``bench.train_step``'s ours, nanoGPT-style or HF GPT-2) at ``shape`` on
    ``device``, at that device's bench batch, with the phases labelled for the profiler."""
    model = build_model(name, shape, device)
    if model is None:
        raise SystemExit(f"{name} is not available here (transformers not installed: pip install -e .[bench])")
    if compile:
        model.compile()
    ids = torch.randint(34, SHAPES[shape][3], (batch_size(shape, device), T + 1), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        with record_function("forward"), torch.autocast(ids.device.type, dtype=torch.bfloat16,
                                                        enabled=dtype == torch.bfloat16):  # fmt: skip
            loss = loss_fn(name, model, ids)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def op_table(step: Callable[[], None], rows: int, device: str = "cpu") -> str:
    """Markdown table of the ``rows`` ops with the most self time in one profiled ``step``, and the phases.

    On CPU the time is the host's; on CUDA it is the device's (the kernels each op launched), the phases' shares are
    still of host time, and the op calls counted are what launches kernels one by one."""
    cuda = is_cuda(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=False) as prof:
        step()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    self_time = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    total = sum(self_time(e) for e in events)
    host = sum(e.self_cpu_time_total for e in events)
    phases = {e.key: e.cpu_time_total for e in events if e.key in PHASES}
    ops = sorted((e for e in events if e.key not in PHASES), key=self_time, reverse=True)
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    where = "device" if cuda else "CPU"
    lines = [f"step: {total / 1e3:.1f} ms self {where}, {calls} ATen calls; host phases: "
             + ", ".join(f"{k} {v / host:.0%}" for k, v in phases.items()),
             "", f"| op | self {where} ms | share | calls |", "|---|---:|---:|---:|"]  # fmt: skip
    for e in ops[:rows]:
        lines.append(f"| `{e.key}` | {self_time(e) / 1e3:.1f} | {self_time(e) / total:.1%} | {e.count} |")
    return "\n".join(lines)


@contextlib.contextmanager
def captured_stdout_fd() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 1 (oneDNN's verbose lines) into the yielded list."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield lines
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().splitlines()


@dataclass
class KernelGroup:
    """oneDNN primitives of one kind and implementation, and the problem shapes that took most of their time."""

    calls: int = 0
    ms: float = 0.0
    shapes: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def parse_onednn(lines: list[str]) -> dict[tuple[str, str, str], KernelGroup]:
    """Group oneDNN v1 verbose ``exec`` lines by (kind, implementation, source dtype).

    Line layout: ``onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,<prop>,<memory descs>,<attrs>,<aux>,<problem>,
    <ms>``; the memory descriptors start with the source's ``src:<dtype>:...``. ``ukernel`` lines (``brgemm``, no
    implementation named) are the micro-kernels ATen calls itself, e.g. in SDPA's CPU flash attention.
    """
    groups: dict[tuple[str, str, str], KernelGroup] = defaultdict(KernelGroup)
    for line in lines:
        fields = line.split(",")
        if len(fields) < 13 or fields[:2] != ["onednn_verbose", "v1"] or fields[3] != "exec":
            continue
        kind = fields[5] if fields[2] == "primitive" else f"{fields[5]} {fields[2]}"
        impl, mds, problem, ms = fields[6] or "-", fields[8], fields[11], float(fields[12])
        src = next((md.split(":")[1] for md in mds.split() if md.startswith("src")), "?")
        g = groups[kind, impl, src]
        g.calls += 1
        g.ms += ms
        g.shapes[problem] += ms
    return groups


def onednn_table(step: Callable[[], None]) -> str:
    """Markdown table of the oneDNN primitives one ``step`` ran, by time, with each group's costliest shapes."""
    with captured_stdout_fd() as lines, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        step()
    groups = parse_onednn(lines)
    if not groups:
        return "no oneDNN primitive ran (fp32 matmuls run in MKL, not oneDNN)"
    total = sum(g.ms for g in groups.values())
    out = ["| kind | implementation | src | calls | ms | share | costliest shapes (ms) |",
           "|---|---|---|---:|---:|---:|---|"]  # fmt: skip
    for (kind, impl, src), g in sorted(groups.items(), key=lambda kv: -kv[1].ms):
        top = sorted(g.shapes.items(), key=lambda kv: -kv[1])[:3]
        shapes = "; ".join(f"{p} ({ms:.1f})" for p, ms in top)
        out.append(f"| {kind} | `{impl}` | {src} | {g.calls} | {g.ms:.1f} | {g.ms / total:.0%} | {shapes} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=list(SHAPES))
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument("--rows", type=int, default=25, help="ops listed, by self time")
    parser.add_argument("--no-onednn", action="store_true", help="skip the oneDNN kernel table")
    parser.add_argument("--compile", action="store_true", help="profile the torch.compile'd model (compiles first)")
    parser.add_argument("--threads", type=int, help="torch threads; 1 gives clean shares on a loaded host")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (CUDA: kernel time per op, no oneDNN table)")
    parser.add_argument("--model", default="ours", choices=["ours", "nanoGPT-style", "HF GPT-2"])
    args = parser.parse_args(argv)
    keep_freed_memory()  # what training sets (extras.keep_freed_memory): the bench times that
    if args.threads:
        torch.set_num_threads(args.threads)
    step = make_labelled_step(args.shape, DTYPES[args.dtype], args.compile, args.device, args.model)
    step()  # warm-up: allocator, oneDNN primitive cache, compilation
    print(f"## {args.model}, {args.shape} {args.dtype} on {args.device}, {torch.get_num_threads()} threads, CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}, AMX tiles {torch.cpu._is_amx_tile_supported()}\n")
    print(op_table(step, args.rows, args.device))
    if not args.no_onednn and not is_cuda(args.device):
        print()
        print(onednn_table(step))


if __name__ == "__main__":
    main()
