"""The denoising timesteps each solver visits, and which A14B expert runs each step. Pure math.

Flow matching in Wan2.2 shifts a noise level s in [0, 1] to `shift·s / (1 + (shift − 1)·s)` and
feeds the model t = 1000·s. The MoE pipelines run the high-noise expert while t ≥ boundary·1000
and the low-noise one after. The formulas are upstream's (`wan/utils/fm_solvers_unipc.py`:
`set_timesteps`; `wan/utils/fm_solvers.py`: `get_sampling_sigmas`) and, for `euler`, the
Wan2.2-Lightning authors' (`wan/utils/fm_solvers_euler.py` in ModelTC/Wan2.2-Lightning:
`linspace(1000, 0, steps + 1)` shifted, the last value dropped). Computed in float64 here, for
plans and messages; the samplers themselves run in float32, so a timestep within 1e-4 of the
boundary could fall on the other side (none of the catalog's presets comes near it).
"""

from __future__ import annotations

NUM_TRAIN_TIMESTEPS = 1000
SOLVERS = ("unipc", "dpm++", "euler")


def shifted(sigma: float, shift: float) -> float:
    return shift * sigma / (1 + (shift - 1) * sigma)


def timesteps(solver: str, steps: int, shift: float, num_train: int = NUM_TRAIN_TIMESTEPS) -> list[float]:
    """The model's timestep at each of `steps` denoising steps (first = noisiest)."""
    if steps < 1:
        return []
    if solver == "unipc":
        sigma_max = 1 - 1 / num_train  # 1 − alphas[0] of its training schedule
        sigmas = [sigma_max * (1 - i / steps) for i in range(steps)]
    elif solver == "dpm++":
        sigmas = [1 - i / steps for i in range(steps)]
    elif solver == "euler":
        sigmas = [(num_train * (1 - i / steps)) / num_train for i in range(steps)]
    else:
        raise ValueError(f"unknown solver {solver!r}")
    return [shifted(s, shift) * num_train for s in sigmas]


def expert_split(solver: str, steps: int, shift: float, boundary: float | None) -> tuple[int, int] | None:
    """(steps on the high-noise expert, steps on the low-noise expert); None for a one-model task."""
    if boundary is None:
        return None
    ts = timesteps(solver, steps, shift)
    high = sum(1 for t in ts if t >= boundary * NUM_TRAIN_TIMESTEPS)
    return high, len(ts) - high
