# Put on the builder's PYTHONPATH (never in an image): compiles the C
# sources of one extension in parallel, one compiler process per core.
# distutils compiles them one after the other, which leaves every core but
# one idle while, say, psycopg2's 36 files compile. Each file is compiled
# exactly as before by the same per-file step; the objects, their order and
# the link are unchanged, so the built files are the same bytes.
#
# Only where that step is known to keep no state between files: the stock
# Unix compiler, or a wrapper of it that touches none of the compiler's
# settings (psycopg2 counts files). A recipe that swaps the compiler per
# file (CUDA's nvcc, C++ flags for .cpp files) compiles serially, as written.
#
# The same compilers get -g0 after every other flag: no debug info, which
# costs a third of the compile and is stripped from the image anyway (and
# carries build paths). Not through CFLAGS: setuptools takes CFLAGS from
# the environment *instead of* the interpreter's (-O2 -DNDEBUG -fwrapv), so
# CFLAGS=-g0 compiled extensions unoptimised and with assertions on. A
# build that asks for debug info (build_ext --debug) keeps it.
import sys
import types

_STATEFUL = frozenset(
    (
        "compiler",
        "compiler_so",
        "compiler_cxx",
        "linker_so",
        "set_executable",
        "set_executables",
        "spawn",
        "_compile",
    )
)


def _stock(fn):
    return fn.__qualname__ in ("UnixCCompiler._compile", "Compiler._compile") and (
        fn.__module__ or ""
    ).endswith(("unixccompiler", "compilers.C.unix"))


def _names(code):
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _names(c)


def _stateless(fn, depth=0):
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType) or depth > 4:
        return False
    if _stock(fn):
        return True
    if _STATEFUL.intersection(_names(fn.__code__)):
        return False
    wrapped = [
        c.cell_contents
        for c in fn.__closure__ or ()
        if isinstance(c.cell_contents, (types.FunctionType, types.MethodType))
    ]
    return bool(wrapped) and all(_stateless(w, depth + 1) for w in wrapped)


def _parallel_safe(compiler):
    if "spawn" in vars(compiler) or type(compiler).spawn.__module__.split(".")[-1] not in (
        "ccompiler",
        "base",
    ):
        return False
    return _stateless(vars(compiler).get("_compile", type(compiler)._compile))


# compile(sources, output_dir, macros, include_dirs, debug, extra_preargs,
# extra_postargs, depends): the same in the stdlib's and setuptools' copy.
_DEBUG, _POSTARGS = 3, 5


def _without_debug_info(args, kwargs):
    debug = args[_DEBUG] if len(args) > _DEBUG else kwargs.get("debug")
    if debug:
        return args, kwargs
    if len(args) > _POSTARGS:
        args = list(args)
        args[_POSTARGS] = list(args[_POSTARGS] or ()) + ["-g0"]
    else:
        kwargs = dict(kwargs)
        kwargs["extra_postargs"] = list(kwargs.get("extra_postargs") or ()) + ["-g0"]
    return args, kwargs


def _patch(module):
    import os
    from concurrent.futures import ThreadPoolExecutor

    cls = getattr(module, "CCompiler", None)
    if cls is None or getattr(cls.compile, "_slimpack", False):
        return
    serial = cls.compile
    jobs = len(os.sched_getaffinity(0))

    def compile(self, sources, *args, **kwargs):
        safe = _parallel_safe(self)
        if safe:
            args, kwargs = _without_debug_info(args, kwargs)
        if jobs < 2 or len(sources) < 2 or not safe:
            return serial(self, sources, *args, **kwargs)
        with ThreadPoolExecutor(jobs) as pool:
            parts = [pool.submit(serial, self, [s], *args, **kwargs) for s in sources]
            return [o for p in parts for o in p.result()]

    compile._slimpack = True
    cls.compile = compile


class _AfterImport:
    """Patches distutils' compiler module (setuptools' copy, or the
    stdlib's) when a build imports it, and costs nothing otherwise."""

    names = ("distutils.ccompiler", "setuptools._distutils.ccompiler")

    def find_spec(self, name, path=None, target=None):
        if name not in self.names:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            try:
                _patch(module)
            except Exception:
                pass

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterImport())
