"""Benchmark-harness shim for the GPU machines (never part of the image).

Their transformers 5.x fails to import some model classes that `import wan` reaches without using
them for t2v/i2v/ti2v (Wav2Vec2ForCTC/Wav2Vec2Processor through the speech-to-video pipeline,
AutoImageProcessor through diffusers' single-file loader); upstream pins transformers<=4.51.3,
where they import. Here a name that fails to import becomes a placeholder class that raises only
when used, and the failure is printed once to stderr.
"""

import sys

try:
    import transformers

    lazy_cls = type(transformers)
    original_getattr = lazy_cls.__getattr__

    def _getattr(self, name):
        try:
            return original_getattr(self, name)
        except (ModuleNotFoundError, RuntimeError, ImportError) as exc:
            if self.__name__ != "transformers" or not name[:1].isupper():
                raise
            reason = f"transformers.{name} is unavailable on this machine: {exc}"
            print(f"wan22ctl bench shim: {reason}; placeholder", file=sys.stderr)

            def _fail(*args, **kwargs):
                raise RuntimeError(reason)

            placeholder = type(name, (), {"__init__": _fail, "from_pretrained": classmethod(_fail)})
            setattr(self, name, placeholder)
            return placeholder

    lazy_cls.__getattr__ = _getattr
except ImportError:
    pass

# dashscope (prompt extension over a web API, unused offline) drags pydantic in on this machine:
# if it does not import, a stub module stands in; --use_prompt_extend would then fail loudly.
try:
    import dashscope  # noqa: F401
except Exception as exc:  # noqa: BLE001
    import types

    stub = types.ModuleType("dashscope")
    stub.__wan22ctl_stub__ = f"dashscope unavailable here: {exc}"
    sys.modules["dashscope"] = stub

# decord (video reading) and librosa (audio) are imported at module level by the speech-to-video and
# animate pipelines that `import wan` loads; t2v/i2v/ti2v never call them. Where they are not
# installed, a stub module stands in (using it fails loudly).
import importlib.machinery
import importlib.util
import types

def _stub_module(name: str) -> types.ModuleType:
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    stub.__wan22ctl_stub__ = f"{name} is not installed on this machine"

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def _fail(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr}: {name} is not installed on this machine")

        return type(attr, (), {"__init__": _fail, "__call__": _fail})

    stub.__getattr__ = __getattr__
    return stub


for _name in ("decord", "librosa"):
    if importlib.util.find_spec(_name) is None:
        sys.modules[_name] = _stub_module(_name)

# WAN22_BENCH_GPU_CAP_GIB=N (set by e2e_run.py --emulate-gpu-gib): emulate an N GiB card on a larger
# one. Every process that initializes CUDA (the launcher's generate.py) caps its caching allocator at
# N GiB of the card with torch.cuda.set_per_process_memory_fraction, right after CUDA initializes:
# an allocation past the cap fails with CUDA out of memory as it would on the smaller card.
import os as _os

class _CapOnCudaInit:
    """Meta-path hook: once torch.cuda has loaded, wrap its _lazy_init to cap the allocator right
    after CUDA initializes (nothing of torch is imported here, at interpreter start)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch.cuda":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _wrap_lazy_init(module)

        spec.loader.exec_module = exec_module
        return spec


def _wrap_lazy_init(tc):
    lazy_init, state = tc._lazy_init, {"done": False}

    def _capped_lazy_init():
        lazy_init()
        if state["done"]:
            return
        state["done"] = True  # before the calls below, which re-enter _lazy_init
        cap = float(_os.environ["WAN22_BENCH_GPU_CAP_GIB"])
        total = tc.get_device_properties(0).total_memory / 2**30
        tc.set_per_process_memory_fraction(min(1.0, cap / total))
        print(f"wan22ctl bench shim: GPU memory capped at {cap:g} of {total:.1f} GiB", file=sys.stderr)

    tc._lazy_init = _capped_lazy_init


if _os.environ.get("WAN22_BENCH_GPU_CAP_GIB"):
    sys.meta_path.insert(0, _CapOnCudaInit())
