"""`sample_solver="euler"`: the first-order flow-matching sampler the Wan2.2-Lightning LoRAs were
distilled with, for upstream's pipelines (which know only unipc and dpm++).

The Lightning authors' sampler (ModelTC/Wan2.2-Lightning, `wan/utils/fm_solvers_euler.py`,
`EulerScheduler`): noise levels `linspace(1000, 0, steps + 1) / 1000`, each shifted to
`shift·s / (1 + (shift − 1)·s)`; the model sees t = 1000·s at every level but the last, and a step
is `x + (s_next − s)·v` in float32. Their 4-step, shift-5 schedule is t = 1000, 937.5, 833.3, 625:
two steps on each A14B expert at boundaries 0.875 (T2V) and 0.9 (I2V).

`FlowEulerScheduler` has the surface the pipelines use of `FlowUniPCMultistepScheduler`
(constructor keywords, `set_timesteps(steps, device=, shift=)`, `timesteps`, `step(...)` returning
a tuple), and `generate()` of WanT2V / WanI2V / WanTI2V is wrapped so that
`sample_solver="euler"` runs their unipc branch with this class in that name. generate.py's own
argument parser accepts only unipc and dpm++, so `wanrun` passes `--sample_solver unipc` and
calls `install(force=True)`: that process then samples every unipc request with Euler.

Wan's own Python imports this module: the standard library, torch and the kit's `speedups` (same rule).
"""

from __future__ import annotations

import torch

PIPELINES = {"wan.text2video": "WanT2V", "wan.image2video": "WanI2V", "wan.textimage2video": "WanTI2V"}
_forced = {"on": False}


class FlowEulerScheduler:
    """Euler steps on the Lightning schedule (see the module docstring)."""

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 **_ignored):
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift
        self.sigmas = self.timesteps = None
        self._index = 0

    def set_timesteps(self, num_inference_steps: int, device=None, shift: float | None = None, **_ignored):
        if shift is not None:
            self.shift = shift
        n = self.num_train_timesteps
        # as the Lightning code builds them: float32 levels, shifted in float32
        levels = torch.tensor([n * (1 - i / num_inference_steps) for i in range(num_inference_steps + 1)],
                              dtype=torch.float32, device=device)
        sigmas = levels / n
        self.sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        self.timesteps = (self.sigmas * n)[:-1].clone()
        self._index = 0

    def step(self, model_output, timestep, sample, return_dict: bool = False, generator=None, **_ignored):
        sigma = self.sigmas[self._index].to(sample.device)
        sigma_next = self.sigmas[self._index + 1].to(sample.device)
        self._index += 1
        return (sample.to(torch.float32) + (sigma_next - sigma) * model_output,)


def install(force: bool = False) -> None:
    """Teach the pipelines `sample_solver="euler"`; with `force`, use it for every unipc request too."""
    from wan22ctl.agent import speedups

    _forced["on"] = force
    for name in PIPELINES:
        speedups.after_load(name, patch_pipeline_module)


def patch_pipeline_module(module) -> None:
    from wan22ctl.agent import speedups

    def solver_switch(original, call, bound):
        solver = bound.arguments.get("sample_solver")
        if solver != "euler" and not (_forced["on"] and solver == "unipc"):
            return call()
        bound.arguments["sample_solver"] = "unipc"
        unipc = module.FlowUniPCMultistepScheduler
        module.FlowUniPCMultistepScheduler = FlowEulerScheduler
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            module.FlowUniPCMultistepScheduler = unipc

    speedups.wrap_generate(getattr(module, PIPELINES[module.__name__]), "_wan22_euler", solver_switch)
