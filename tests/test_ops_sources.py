"""Native ops are found by convention: adding one adds files and edits no build file, no
shared C++ file and no shared module of ``facesal_fast/ops/``.

CMakeLists.txt globs the bindings (``csrc/*.cpp``), one CPU kernel per op
(``csrc/cpu/<op>_cpu.cpp``) and its CUDA twin (``csrc/cuda/<op>_cuda.cu``), as
pytorch_scatter's setup.py globs ``csrc/*.cpp``. Each kernel family ``f`` has its header
``csrc/f.h``, its binding ``csrc/f.cpp`` (registered with the module, so ``csrc/bindings.cpp``
binds no op), both kernels, its Python module ``facesal_fast/ops/f.py``, a row in
docs/architecture.md's table of native ops, and each op ``o`` it defines the entry points
``_C.o_cpu`` (and ``_C.o_cuda`` in a CUDA build) and an entry in ``ops._dispatch.OPS``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
#: Glob patterns CMakeLists.txt must use, relative to the project folder.
GLOBS = ("csrc/*.cpp", "csrc/cpu/*.cpp", "csrc/cuda/*.cu")


def cmake_problems(cmake: str) -> list[str]:
    """What in the text of a CMakeLists.txt breaks the convention: a source file named one by
    one, or a glob of :data:`GLOBS` missing or without ``CONFIGURE_DEPENDS``."""
    named = sorted(set(re.findall(r"csrc/[\w/]+\.(?:cpp|cu|cc|cxx)\b", cmake)))
    problems = [f"CMakeLists.txt names source files one by one (glob them instead): {named}"] * bool(named)
    globs = " ".join(re.findall(r"file\(\s*GLOB\b[^)]*\)", cmake))
    problems += [f"CMakeLists.txt does not glob {g}" for g in GLOBS if f"/{g}" not in globs and f" {g}" not in globs]
    problems += ["CMakeLists.txt's globs lack CONFIGURE_DEPENDS"] * (bool(globs) and "CONFIGURE_DEPENDS" not in globs)
    return problems


def kernels(source: str, device: str) -> set[str]:
    """Ops whose ``device`` kernel ``source`` defines at file level: ``void <op>_<device>(``."""
    return set(re.findall(rf"^void (\w+)_{device}\(", source, re.MULTILINE))


def op_problems(
    cpu: dict[str, str], cuda: dict[str, str], present: set[str], bound: set[str], registered: set[str], page: str
) -> list[str]:
    """What breaks the layout of the ops, given the files of ``csrc/cpu`` and ``csrc/cuda``
    (name -> text), the paths of the other files (relative to the project), the names ``_C``
    exports, the ops registered in ``ops._dispatch.OPS`` and the architecture page's text.
    Files of one family ``f``: ``csrc/f.h``, ``csrc/f.cpp``, ``csrc/cpu/f_cpu.cpp``,
    ``csrc/cuda/f_cuda.cu``, ``facesal_fast/ops/f.py``; each op ``o`` they define:
    ``_C.o_cpu``, ``_C.o_cuda`` and a registered ``o``."""
    problems = [
        f"csrc/cpu/{f}: a CPU kernel file is named <name>_cpu.cpp" for f in sorted(cpu) if not f.endswith("_cpu.cpp")
    ]
    problems += [
        f"csrc/cuda/{f}: a CUDA kernel file is named <name>_cuda.cu" for f in sorted(cuda) if not f.endswith("_cuda.cu")
    ]
    families = {f.removesuffix("_cpu.cpp") for f in cpu if f.endswith("_cpu.cpp")}
    families |= {f.removesuffix("_cuda.cu") for f in cuda if f.endswith("_cuda.cu")}
    for family in sorted(families):
        files = {
            f"csrc/{family}.h": f"csrc/{family}.h" in present,
            f"csrc/{family}.cpp (its binding)": f"csrc/{family}.cpp" in present,
            f"csrc/cpu/{family}_cpu.cpp": f"{family}_cpu.cpp" in cpu,
            f"csrc/cuda/{family}_cuda.cu": f"{family}_cuda.cu" in cuda,
            f"facesal_fast/ops/{family}.py": f"facesal_fast/ops/{family}.py" in present,
            f"a row of docs/architecture.md naming csrc/cpu/{family}_cpu.cpp": f"`csrc/cpu/{family}_cpu.cpp`" in page,
        }
        problems += [f"{family}: missing {what}" for what, there in files.items() if not there]
        on_cpu = kernels(cpu.get(f"{family}_cpu.cpp", ""), "cpu")
        on_cuda = kernels(cuda.get(f"{family}_cuda.cu", ""), "cuda")
        problems += [f"{family}: {op}_cpu has no CUDA twin {op}_cuda" for op in sorted(on_cpu - on_cuda)]
        problems += [f"{family}: {op}_cuda has no CPU twin {op}_cpu" for op in sorted(on_cuda - on_cpu)]
        entry = [f"{op}_cpu" for op in on_cpu] + [f"{op}_cuda" for op in on_cuda]
        problems += [f"{family}: _C has no entry point {name}" for name in sorted(entry) if name not in bound]
        problems += [f"{family}: {op} is not registered in ops._dispatch.OPS" for op in sorted(on_cpu - registered)]
    return problems


def bound_here(source: str) -> set[str]:
    """Functions a C++ ``source`` binds: the names of its ``m.def("<name>", ...)``."""
    return set(re.findall(r'\bm\.def\(\s*"(\w+)"', source))


def test_cmake_finds_the_sources_by_convention():
    problems = cmake_problems((ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_every_op_has_its_files_its_entry_points_and_its_row():
    from facesal_fast import _C
    from facesal_fast.ops import _dispatch

    cpu, cuda = (
        {p.name: p.read_text(encoding="utf-8") for p in (CSRC / device).iterdir() if p.suffix in (".cpp", ".cu")}
        for device in ("cpu", "cuda")
    )
    present = {p.relative_to(ROOT).as_posix() for p in [*CSRC.iterdir(), *(ROOT / "facesal_fast" / "ops").iterdir()]}
    # a CPU-only build has no <op>_cuda: count them as bound there (the CUDA tests skip)
    cuda_ops = {f"{op}_cuda" for text in cuda.values() for op in kernels(text, "cuda")}
    bound = set(dir(_C)) | (set() if _C.built_with_cuda() else cuda_ops)
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    problems = op_problems(cpu, cuda, present, bound, set(_dispatch.OPS), page)
    assert cpu and not problems, "\n".join(problems)


def test_each_family_binds_its_own_entry_points_and_the_module_none():
    """``_C.<op>_cpu`` / ``_cuda`` are bound in the family's ``csrc/<family>.cpp``, so adding
    an op leaves ``csrc/bindings.cpp`` as it is."""
    every_entry = set()
    for path in sorted((CSRC / "cpu").glob("*_cpu.cpp")):
        family = path.name.removesuffix("_cpu.cpp")
        entry = {f"{op}_cpu" for op in kernels(path.read_text(encoding="utf-8"), "cpu")}
        entry |= {
            f"{op}_cuda" for op in kernels((CSRC / "cuda" / f"{family}_cuda.cu").read_text(encoding="utf-8"), "cuda")
        }
        assert entry and entry <= bound_here((CSRC / f"{family}.cpp").read_text(encoding="utf-8")), family
        every_entry |= entry
    assert every_entry.isdisjoint(bound_here((CSRC / "bindings.cpp").read_text(encoding="utf-8")))


def test_the_convention_checks_fail_on_a_broken_layout():
    listed = "set(SOURCES csrc/bindings.cpp csrc/cpu/occlude_cpu.cpp)\nlist(APPEND SOURCES csrc/cuda/occlude_cuda.cu)\n"
    assert cmake_problems(listed) == [
        "CMakeLists.txt names source files one by one (glob them instead): "
        "['csrc/bindings.cpp', 'csrc/cpu/occlude_cpu.cpp', 'csrc/cuda/occlude_cuda.cu']",
        *(f"CMakeLists.txt does not glob {g}" for g in GLOBS),
    ]
    no_depends = 'file(GLOB S "${D}/csrc/*.cpp" "${D}/csrc/cpu/*.cpp")\nfile(GLOB C "${D}/csrc/cuda/*.cu")\n'
    assert cmake_problems(no_depends) == ["CMakeLists.txt's globs lack CONFIGURE_DEPENDS"]
    good = no_depends.replace("GLOB S", "GLOB S CONFIGURE_DEPENDS").replace("GLOB C", "GLOB C CONFIGURE_DEPENDS")
    assert cmake_problems(good) == []
    row = "`csrc/cpu/blur_cpu.cpp`"
    cpu, cuda = {"blur_cpu.cpp": "void box_blur_cpu(int a) {"}, {"blur_cuda.cu": "void box_blur_cuda(int a) {"}
    present = {"csrc/blur.h", "csrc/blur.cpp", "facesal_fast/ops/blur.py"}
    assert kernels(cpu["blur_cpu.cpp"], "cpu") == {"box_blur"} and kernels("  void f_cpu(", "cpu") == set()
    assert op_problems(cpu, cuda, present, {"box_blur_cpu", "box_blur_cuda"}, {"box_blur"}, row) == []
    assert op_problems({**cpu, "misc.cpp": ""}, {}, set(), {"box_blur_cpu"}, set(), "") == [
        "csrc/cpu/misc.cpp: a CPU kernel file is named <name>_cpu.cpp",
        "blur: missing csrc/blur.h",
        "blur: missing csrc/blur.cpp (its binding)",
        "blur: missing csrc/cuda/blur_cuda.cu",
        "blur: missing facesal_fast/ops/blur.py",
        "blur: missing a row of docs/architecture.md naming csrc/cpu/blur_cpu.cpp",
        "blur: box_blur_cpu has no CUDA twin box_blur_cuda",
        "blur: box_blur is not registered in ops._dispatch.OPS",
    ]
    assert op_problems(cpu, cuda, present, {"box_blur_cpu"}, {"box_blur"}, row) == [
        "blur: _C has no entry point box_blur_cuda"
    ]
    binding = 'm.def("box_blur_cpu", &box_blur_cpu);\n  m.def(\n      "box_blur_cuda",\n      [](int a) {});'
    assert bound_here(binding) == {"box_blur_cpu", "box_blur_cuda"} and bound_here('py::class_<P>(m, "P")') == set()
