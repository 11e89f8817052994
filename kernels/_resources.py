"""GPU resource check of every kernel without a GPU: registers, spills (stack), shared memory.

Triton kernels: each op's launchers are run on meta tensors at given shapes while launches are
recorded (``_common.recording``), so what is checked is exactly what the launcher would launch there:
every kernel variant, forward and backward, with every configuration it may choose (its default
first, then the autotune candidates). Each one is compiled the way Triton's JIT compiles it
(the JIT's own argument binder, so the same alignment and divisibility specialisation) for
``GPUTarget("cuda", arch, 32)``, and the cubin's resource usage is read with the ``cuobjdump`` that
ships in Triton's wheel. CUDA kernels: the same ``cuobjdump`` reads the built ``_cuda`` module.

A row passes when nothing spills (stack 0, no local memory) and the shared memory (Triton's dynamic
allocation plus static) fits the architecture's per-block limit; ``EXCEPTIONS`` would hold a written,
measured reason for a row allowed to fail (none today). The same ``problems`` function prunes the
autotune candidates at run time (``resource_prune``).

The command line (``scripts/gpu_resources.py``) prints one table row per kernel × dtype × arch ×
configuration; ``--ci`` is the focused list the test suite runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

import torch

# Largest shared memory one block may use (opt-in), bytes: A100 (sm_80) 163 KiB, H100/H200 (sm_90) 227 KiB.
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
ARCHS = (80, 90)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# (kernel label, dtype, arch) -> the measured reason a row may spill or overflow. Empty: none may.
EXCEPTIONS: dict = {}

# Shapes the launchers are checked at: the GPU benchmark sizes (mclner.ops.roofline.GPU_CASES) and the
# default training shapes of the methods (projection width 128, sentence-level info_nce on 768-wide
# encoder states, biaffine width 128, CLN hidden width 128).
TRAINING_SHAPES = {
    "info_nce": [{"M": 4096, "P": 768}],
    "sup_con": [{"M": 4096, "N": 4096, "P": 128, "one_set": False}],
    "biaffine": [{"B": 16, "N": 64, "Db": 128, "C": 8}],
    "cln_head": [{"B": 16, "N": 64, "D": 768, "H": 128, "C": 8}],
}


@dataclass
class Row:
    """One kernel × dtype × arch × configuration and what its compiled code uses."""

    op: str
    kernel: str
    dtype: str
    arch: int
    config: str
    impl: str = "triton"
    regs: int = -1
    stack: int = -1
    local: int = -1
    smem: int = -1
    error: str = ""
    exception: str = ""
    default: bool = False
    seconds: float = 0.0

    def problems(self) -> list:
        return problems(self.regs, self.stack, self.local, self.smem, self.arch, self.error)

    @property
    def ok(self) -> bool:
        return not self.problems() or bool(self.exception)


def problems(regs: int, stack: int, local: int, smem: int, arch: int, error: str = "") -> list:
    """What makes a compiled kernel unfit for sm_`arch` (empty when it fits)."""
    if error:
        return [error]
    out = []
    if stack > 0:
        out.append(f"spills: stack {stack} B")
    if local > 0:
        out.append(f"local memory {local} B")
    limit = SMEM_LIMIT.get(arch)
    if limit is not None and smem > limit:
        out.append(f"shared memory {smem} B > {limit} B")
    return out


# ----------------------------------------------------------------------------- cuobjdump


def cuobjdump() -> Optional[str]:
    """The cuobjdump shipped in Triton's wheel (or one on PATH)."""
    try:
        import triton

        path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return shutil.which("cuobjdump")


_FUNC = re.compile(r"^\s*Function (\S+):\s*$")
_ARCH = re.compile(r"^arch = sm_(\d+)")


def parse_resource_usage(text: str) -> list:
    """(arch, mangled function name, {REG, STACK, SHARED, LOCAL, ...}) from `cuobjdump --dump-resource-usage`."""
    out, arch, fn = [], None, None
    for line in text.splitlines():
        m = _ARCH.match(line.strip())
        if m:
            arch = int(m.group(1))
            continue
        m = _FUNC.match(line)
        if m:
            fn = m.group(1)
            continue
        if fn is not None and "REG:" in line:
            vals = {k: int(v) for k, v in re.findall(r"([A-Z]+(?:\[\d+\])?):(\d+)", line)}
            out.append((arch, fn, vals))
            fn = None
    return out


def _dump(path: str) -> str:
    tool = cuobjdump()
    if tool is None:
        raise RuntimeError("no cuobjdump (Triton's NVIDIA backend ships one)")
    res = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"cuobjdump failed on {path}: {res.stderr.strip()[-300:]}")
    return res.stdout


def cubin_usage(cubin: bytes) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        entries = parse_resource_usage(_dump(path))
    if len(entries) != 1:
        raise RuntimeError(f"expected one kernel in the cubin, found {len(entries)}")
    return entries[0][2]


# ----------------------------------------------------------------------------- Triton: compile like the JIT


def _target(arch: int):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


def compile_launch(kernel, args: tuple, kwargs: dict, arch: int):
    """Compile `kernel` for sm_`arch` as `kernel[grid](*args, **kwargs)` would on such a GPU, through
    the JIT's own binder and argument packing (alignment / divisibility-by-16 specialisation, ints
    equal to 1 made constant) — without a driver."""
    import triton
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = kernel
    while not hasattr(fn, "params"):  # an Autotuner wraps the JITFunction
        fn = fn.fn
    target = _target(arch)
    backend = make_backend(target)
    kwargs = dict(kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    src = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(src, target=target, options=options.__dict__)


def compiled_usage(compiled) -> dict:
    """Registers, stack, local and shared memory (dynamic + static) of a compiled Triton kernel."""
    u = cubin_usage(compiled.asm["cubin"])
    return {"regs": u.get("REG", -1), "stack": u.get("STACK", 0), "local": u.get("LOCAL", 0),
            "smem": int(compiled.metadata.shared) + u.get("SHARED", 0)}


def fitting_configs(kernel, configs: list, named_args: dict, kwargs: dict, arch: int) -> list:
    """The triton.Configs of `configs` that compile for sm_`arch` without spills and within its shared
    memory, for the call `kernel[grid](**named_args, **kwargs)` (what triton.autotune hands its
    early_config_prune: `kwargs` also holds the launch's grid and warmup flag, which are no kernel
    arguments)."""
    fn = kernel
    while not hasattr(fn, "params"):
        fn = fn.fn
    names = {p.name for p in fn.params}
    call = {k: v for k, v in kwargs.items() if k in names}
    keep = []
    for c in configs:
        try:
            compiled = compile_launch(kernel, tuple(named_args.values()), {**call, **c.all_kwargs()}, arch)
            u = compiled_usage(compiled)
            bad = problems(u["regs"], u["stack"], u["local"], u["smem"], arch)
        except Exception as e:  # a configuration that does not compile is no candidate
            bad = [type(e).__name__]
        if not bad:
            keep.append(c)
    return keep


def resource_prune(kernel):
    """`early_config_prune` for triton.autotune: drop the configurations that spill or do not fit the
    current GPU's shared memory, by the same compile and check as the test suite's (the default,
    first, stays if none fits)."""

    def prune(configs, named_args, **kwargs):
        major, minor = torch.cuda.get_device_capability()
        return fitting_configs(kernel, list(configs), named_args, kwargs, 10 * major + minor) or list(configs[:1])

    return prune


# ----------------------------------------------------------------------------- what each op launches


def _meta(*shape, dtype):
    return torch.empty(*shape, device="meta", dtype=dtype)


def op_launches(op: str, shape: dict, dtype: torch.dtype, arch: int) -> list:
    """Every launch the op's Triton forward and backward make at `shape` (meta tensors, nothing runs)."""
    from ._common import recording

    f32 = torch.float32
    with recording(arch) as rec:
        if op == "info_nce":
            kn = importlib.import_module("mclner.kernels.info_nce")
            M, P = shape["M"], shape["P"]
            a, b, v = _meta(M, P, dtype=dtype), _meta(M, P, dtype=dtype), _meta(M, dtype=f32)
            kn.nce_lse(a, b, 0.1, True)
            kn.nce_lse(b, a, 0.1, False)
            kn.nce_grad(a, b, 0.1, v, v, v, v)  # symmetric: both terms
            kn.nce_grad(a, b, 0.1, v, v, None, None)  # row loss only: da
            kn.nce_grad(b, a, 0.1, None, None, v, v)  # row loss only: db
        elif op == "sup_con":
            ks = importlib.import_module("mclner.kernels.sup_con")
            M, N, P = shape["M"], shape["N"], shape["P"]
            x, y = _meta(M, P, dtype=dtype), _meta(N, P, dtype=dtype)
            lx, ly = _meta(M, dtype=torch.int32), _meta(N, dtype=torch.int32)
            tx, ty = (_meta(M, dtype=f32),) * 3, (_meta(N, dtype=f32),) * 3
            if shape.get("one_set", True):
                ks.sc_stats(x, x, lx, lx, 0.1, True)
                ks.sc_grad(x, x, lx, lx, 0.1, True, tx, tx)
            else:
                ks.sc_stats(x, y, lx, ly, 0.1, False)
                ks.sc_grad(x, y, lx, ly, 0.1, False, tx, None)
                ks.sc_grad(y, x, ly, lx, 0.1, False, None, ty)
        elif op == "biaffine":
            kb = importlib.import_module("mclner.kernels.biaffine")
            B, N, Db, C = shape["B"], shape["N"], shape["Db"], shape["C"]
            P, he = _meta(B, N, C, Db, dtype=dtype), _meta(B, N, Db, dtype=dtype)
            kb.biaffine_pairs_forward(P, _meta(B, N, C, dtype=f32), he)
            kb.biaffine_pairs_backward(_meta(B, N, N, C, dtype=dtype), P, he)
        elif op == "cln_head":
            kc = importlib.import_module("mclner.kernels.cln_head")
            B, N, D, H, C = shape["B"], shape["N"], shape["D"], shape["H"], shape["C"]
            # The per-word tensors are fp32 whatever the weights' dtype (see cln_head_triton).
            g, n, u = _meta(B, N, D, dtype=f32), _meta(B, N, D, dtype=f32), _meta(B, N, H, dtype=f32)
            W1, W2, b2 = _meta(H, D, dtype=dtype), _meta(C, H, dtype=dtype), _meta(C, dtype=dtype)
            kc.cln_grid_forward(g, n, u, W1, W2, b2)
            kc.cln_grid_backward(g, n, u, W1, W2, _meta(B, N, N, C, dtype=dtype))
        else:
            raise ValueError(f"unknown op {op!r}")
    return rec


_FLAGS_SKIP = {"UPCAST", "IEEE"}


def kernel_label(launch) -> str:
    """Kernel name plus the variant flags set for this launch, e.g. `_nce_bwd_kernel[HAS_OWN,HAS_OTH]`."""
    fn = launch.kernel
    flags = [k for k, v in launch.consts.items() if isinstance(v, bool) and v and k not in _FLAGS_SKIP]
    return fn.__name__ + (f"[{','.join(flags)}]" if flags else "")


def config_label(config: dict) -> str:
    blocks = "x".join(str(v) for k, v in config.items() if k.startswith("BLOCK_"))
    return f"{blocks} w{config['num_warps']} s{config['num_stages']}"


def _spec_key(launch, config: dict, arch: int) -> str:
    """Identity of what would be compiled (kernel, specialised signature, constexprs, options)."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    binder = create_function_from_signature(fn.signature, fn.params, make_backend(_target(arch)))
    _, spec, _ = binder(*launch.args, **launch.consts, **config)
    return repr((fn.__name__, spec, sorted(config.items()), arch))


@dataclass(frozen=True)
class Case:
    op: str
    shape: tuple
    dtype: str
    arch: int
    index: int  # launch number within op_launches
    config: int  # configuration number within that launch
    label: str = ""
    default: bool = field(default=False)


def _all_shapes(op: str, training: bool) -> list:
    from mclner.ops.roofline import GPU_CASES

    shapes = [dict(c.shape) for c in GPU_CASES.values() if c.op == op]
    return shapes + (TRAINING_SHAPES.get(op, []) if training else [])


def cases(ops: Iterable[str], dtypes: Iterable[str], archs: Iterable[int], defaults_only: bool,
          training: bool = True) -> list:
    """Distinct compile cases: one per kernel variant × dtype × arch × configuration (duplicates the
    launchers make at several shapes or for both directions compiled once)."""
    seen, out = set(), []
    for op in ops:
        for shape in _all_shapes(op, training):
            for dt in dtypes:
                for arch in archs:
                    for i, ln in enumerate(op_launches(op, shape, DTYPES[dt], arch)):
                        configs = ln.configs[:1] if defaults_only else ln.configs
                        for j, c in enumerate(configs):
                            key = _spec_key(ln, c, arch)
                            if key in seen:
                                continue
                            seen.add(key)
                            out.append(Case(op, tuple(sorted(shape.items())), dt, arch, i, j,
                                            f"{kernel_label(ln)} {config_label(c)}", j == 0))
    return out


def run_case(case: Case) -> Row:
    ln = op_launches(case.op, dict(case.shape), DTYPES[case.dtype], case.arch)[case.index]
    config = ln.configs[case.config]
    label = kernel_label(ln)
    row = Row(case.op, label, case.dtype, case.arch, config_label(config), default=case.default)
    row.exception = EXCEPTIONS.get((label, case.dtype, case.arch), "")
    t0 = time.perf_counter()
    try:
        compiled = compile_launch(ln.kernel, ln.args, {**ln.consts, **config}, case.arch)
        u = compiled_usage(compiled)
        row.regs, row.stack, row.local, row.smem = u["regs"], u["stack"], u["local"], u["smem"]
        ptx = compiled.asm["ptx"]
        if case.dtype != "fp32" and "mma" not in ptx:
            row.error = "no tensor-core (mma) instruction in the PTX"
    except Exception as e:  # reported in the table and failed by the check
        row.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
    row.seconds = time.perf_counter() - t0
    return row


def _init_worker() -> None:
    os.environ["TRITON_INTERPRET"] = "0"


def run_cases(todo: list, jobs: int) -> list:
    if jobs <= 1:
        return [run_case(c) for c in todo]
    import multiprocessing

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker) as ex:
        return list(ex.map(run_case, todo))


# ----------------------------------------------------------------------------- CUDA module


_CUDA_TYPES = {"float": "fp32", "__half": "fp16", "__nv_bfloat16": "bf16"}


def _demangle(names: list) -> list:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    out = res.stdout.splitlines()
    return out if len(out) == len(names) else names


def cuda_module_path() -> Optional[str]:
    """The built `_cuda` extension next to the installed (or in-place built) mclner, if any."""
    import glob

    import mclner

    hits = sorted(glob.glob(os.path.join(os.path.dirname(mclner.__file__), "_cuda.*so")))
    return hits[0] if hits else None


def _cuda_name(mangled: str, demangled: str) -> tuple:
    """(op, short kernel name, dtype) of a CUDA kernel, e.g. ('biaffine', 'pair_gemm_kernel<bf16, 2>', 'bf16')."""
    m = re.search(r"_GLOBAL__N__\w+?_\d+_([a-z_]+?)_cu_", mangled)
    op = m.group(1) if m else ("cln_head" if "cln_cuda" in mangled else "cuda")
    name = demangled.removeprefix("void ")
    for ns in ("(anonymous namespace)::", "mclner::", "cln_cuda::", "pair_tiles::"):
        name = name.replace(ns, "")
    name = name.split("(", 1)[0].strip()
    dtype = "-"
    for ctype, short in _CUDA_TYPES.items():
        if re.search(rf"<{re.escape(ctype)}\b", name):
            dtype = short
        name = re.sub(rf"\b{re.escape(ctype)}\b(?=[,>])", short, name) if ctype != "float" else name
    name = re.sub(r"<float(?=[,>])", "<fp32", name)
    return op, name, dtype


def cuda_rows(path: str) -> list:
    entries = parse_resource_usage(_dump(path))
    names = _demangle([fn for _, fn, _ in entries])
    rows = []
    for (arch, mangled, u), name in zip(entries, names):
        op, kernel, dtype = _cuda_name(mangled, name)
        rows.append(Row(op, kernel, dtype, arch, "fixed", "cuda", u.get("REG", -1), u.get("STACK", 0),
                        u.get("LOCAL", 0), u.get("SHARED", 0), default=True))
        rows[-1].exception = EXCEPTIONS.get((kernel, dtype, arch), "")
    return rows


# ----------------------------------------------------------------------------- report


def table(rows: list) -> str:
    head = "| op | impl | kernel | dtype | arch | config | regs | stack | smem (B) | check |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        bad = r.problems()
        check = "ok" if not bad else ("allowed: " + r.exception if r.exception else "FAIL: " + "; ".join(bad))
        cfg = r.config + (" (default)" if r.default and r.impl == "triton" else "")
        lines.append(f"| {r.op} | {r.impl} | {r.kernel} | {r.dtype} | sm_{r.arch} | {cfg} | {r.regs} | {r.stack} | "
                     f"{r.smem} | {check} |")
    return "\n".join(lines)


# Focused list of the test suite (under 4 minutes on 2 cores): every kernel variant's default
# configuration at the GPU benchmark shapes, bf16 (the training dtype) and fp32 (the FMA path, the
# register-hungriest) on both archs, fp16 on sm_90; the full sweep adds fp16 everywhere, every
# autotune candidate and the training shapes.
CI_SELECTION = [(("fp32", "bf16"), (80, 90)), (("fp16",), (90,))]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ci", action="store_true", help="the focused list of the test suite")
    parser.add_argument("--ops", nargs="+", default=["biaffine", "cln_head", "info_nce", "sup_con"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--archs", nargs="+", type=int, default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--defaults-only", action="store_true", help="only each launch's default configuration")
    parser.add_argument("--no-cuda", action="store_true", help="leave out the CUDA module's kernels")
    parser.add_argument("--cuda-module", help="the built _cuda extension (default: next to mclner)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"
    import triton.backends

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        print("gpu_resources: this Triton has no NVIDIA backend", file=sys.stderr)
        return 3
    t0 = time.perf_counter()
    if args.ci:
        todo = []
        for dts, archs in CI_SELECTION:
            todo += cases(args.ops, dts, archs, defaults_only=True, training=False)
    else:
        todo = cases(args.ops, args.dtypes, args.archs, args.defaults_only)
    rows = run_cases(todo, args.jobs)
    if not args.no_cuda:
        path = args.cuda_module or cuda_module_path()
        if path:
            rows += [r for r in cuda_rows(path) if r.arch in args.archs]
        else:
            print("gpu_resources: no built _cuda module: CUDA kernels left out", file=sys.stderr)
    text = table(rows)
    print(text)
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows)} rows, {len(failed)} failing, {time.perf_counter() - t0:.0f} s "
          f"(compile: {sum(r.seconds for r in rows):.0f} s over {args.jobs} jobs)")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"ok": r.ok} for r in rows], f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
