"""LoRA files for Wan2.2's DiT: which formats the kit reads, how each key maps onto WanModel's
parameters, and which expert each file goes to. Pure: file headers in, a checked mapping out.

Formats, recognised key by key after a known prefix (`diffusion_model.`, `model.diffusion_model.`,
`transformer.`, `base_model.model.`) is stripped:

    Wan-native / lightx2v  blocks.0.self_attn.q.lora_down.weight, .lora_up.weight, .alpha
                           (also .lora_A / .lora_B, and the full differences .diff, .diff_b, .diff_m
                           that lightx2v files carry for norms, biases and the modulation)
    ComfyUI / kohya        lora_unet_blocks_0_self_attn_q.lora_down.weight, .lora_up.weight, .alpha
    diffusers / PEFT       blocks.0.attn1.to_q.lora_A.weight, .lora_B.weight (diffusers' module
                           names: attn1/attn2, ffn.net.0.proj, norm2, condition_embedder, proj_out)

A file is checked from its safetensors header alone, before any weights load: a key that fits no
format, or names no parameter of the model, or a pair whose shapes do not fit the parameter,
refuses the whole file with the first such keys named. Without `.alpha` keys a LoRA applies with
alpha = rank (factor 1), as diffusers does. On an A14B task a LoRA file goes to one expert, named
by `--lora-high` / `--lora-low`; a folder in the Wan2.2-Lightning layout
(`high_noise_model.safetensors` + `low_noise_model.safetensors`) routes each file to its expert.

The host (`generate`, `plan`) checks with this module before anything starts; the container side
(`agent.lora`) checks again against the checkpoint it loads and merges. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field

EXPERT_FILES = {"high": "high_noise_model.safetensors", "low": "low_noise_model.safetensors"}
EXPERT_SUBFOLDERS = {"high_noise_model": "high", "low_noise_model": "low"}
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
KOHYA_PREFIX = "lora_unet_"
# (suffix, role): role "down"/"up" are the LoRA factors A/B, "alpha" their scale, "diff*" full differences
SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"),
)
# diffusers' module names -> Wan's (the inverse of diffusers' convert_wan_to_diffusers renames;
# diffusers' norm2 is Wan's cross-attention norm3)
DIFFUSERS_TOP = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("scale_shift_table", "head.modulation"),
    ("proj_out", "head.head"),
)
DIFFUSERS_BLOCK = (
    ("attn1.to_q", "self_attn.q"), ("attn1.to_k", "self_attn.k"), ("attn1.to_v", "self_attn.v"),
    ("attn1.to_out.0", "self_attn.o"), ("attn1.norm_q", "self_attn.norm_q"), ("attn1.norm_k", "self_attn.norm_k"),
    ("attn2.to_q", "cross_attn.q"), ("attn2.to_k", "cross_attn.k"), ("attn2.to_v", "cross_attn.v"),
    ("attn2.to_out.0", "cross_attn.o"), ("attn2.norm_q", "cross_attn.norm_q"), ("attn2.norm_k", "cross_attn.norm_k"),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("scale_shift_table", "modulation"), ("norm2", "norm3"),
)
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
SHOWN_KEYS = 3


class LoraError(ValueError):
    """A LoRA file or flag the kit refuses; the message is one line naming the file and the fix."""


# --------------------------------------------------------------------------- Wan's parameters


def wan_parameters(config: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of upstream's WanModel (42bf4cf `wan/modules/model.py`) and its shape, from
    the checkpoint's config.json (patch_size, text_dim, qk_norm and cross_attn_norm are not saved
    there: upstream's defaults, which every Wan2.2 task uses)."""
    dim, ffn, layers = int(config["dim"]), int(config["ffn_dim"]), int(config["num_layers"])
    in_dim, out_dim = int(config["in_dim"]), int(config["out_dim"])
    freq, text = int(config.get("freq_dim", 256)), int(config.get("text_dim", 4096))
    patch = tuple(int(p) for p in config.get("patch_size", (1, 2, 2)))
    params: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        params[f"{name}.weight"], params[f"{name}.bias"] = (fan_out, fan_in), (fan_out,)

    params["patch_embedding.weight"], params["patch_embedding.bias"] = (dim, in_dim, *patch), (dim,)
    linear("text_embedding.0", text, dim)
    linear("text_embedding.2", dim, dim)
    linear("time_embedding.0", freq, dim)
    linear("time_embedding.2", dim, dim)
    linear("time_projection.1", dim, 6 * dim)
    for i in range(layers):
        block = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for proj in "qkvo":
                linear(f"{block}.{attn}.{proj}", dim, dim)
            params[f"{block}.{attn}.norm_q.weight"] = params[f"{block}.{attn}.norm_k.weight"] = (dim,)
        params[f"{block}.norm3.weight"] = params[f"{block}.norm3.bias"] = (dim,)
        linear(f"{block}.ffn.0", dim, ffn)
        linear(f"{block}.ffn.2", ffn, dim)
        params[f"{block}.modulation"] = (1, 6, dim)
    linear("head.head", dim, out_dim * patch[0] * patch[1] * patch[2])
    params["head.modulation"] = (1, 2, dim)
    return params


def read_config(ckpt_dir: str, expert: str | None) -> dict | None:
    """The DiT's config.json for an expert ("high", "low") or the single DiT (None); None if absent."""
    sub = {"high": "high_noise_model", "low": "low_noise_model"}.get(expert or "", "")
    try:
        with open(os.path.join(ckpt_dir, sub, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- files


def read_header(path: str) -> dict[str, dict]:
    """A safetensors file's tensor table {key: {dtype, shape, data_offsets}} (file offsets made
    absolute); LoraError when the file is not safetensors."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise LoraError(f"LoRA {path} is not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            size = os.fstat(f.fileno()).st_size
            if n > min(size - 8, 100 << 20):
                raise LoraError(f"LoRA {path} is not a safetensors file (bad header length); "
                                "the kit reads .safetensors LoRAs only")
            table = json.loads(f.read(n))
    except OSError as exc:
        raise LoraError(f"cannot read LoRA {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError):
        raise LoraError(f"LoRA {path} is not a safetensors file (header is not JSON); "
                        "the kit reads .safetensors LoRAs only") from None
    if not isinstance(table, dict):
        raise LoraError(f"LoRA {path} is not a safetensors file")
    table.pop("__metadata__", None)
    out = {}
    for key, info in table.items():
        start, end = info["data_offsets"]
        out[key] = {"dtype": info["dtype"], "shape": tuple(info["shape"]), "offsets": (8 + n + start, 8 + n + end)}
    return out


@dataclass
class Term:
    """One update of one parameter: a LoRA pair (B·A, scaled by alpha/rank) or a full difference."""

    target: str  # Wan parameter name, e.g. blocks.0.self_attn.q.weight
    kind: str  # "lora" or "diff"
    keys: dict[str, str]  # role -> file key: down, up, alpha (lora); diff (diff)
    rank: int = 0
    alpha: float | None = None  # read at load; None: the file has no alpha for this pair


@dataclass
class LoraFile:
    """A checked LoRA file: its format and every term, each naming its target parameter."""

    path: str
    format: str
    terms: list[Term]
    keys: int  # tensors in the file
    header: dict = field(repr=False, default_factory=dict)

    @property
    def has_alpha(self) -> bool:
        return any("alpha" in t.keys for t in self.terms)


def _strip(key: str) -> tuple[str, str, str] | None:
    """(naming, module path, role) of a key; None when its suffix is no LoRA role."""
    for suffix, role in SUFFIXES:
        if key.endswith(suffix):
            module = key[: -len(suffix)]
            break
    else:
        return None
    if module.startswith(KOHYA_PREFIX):
        return "kohya", module[len(KOHYA_PREFIX):], role
    for prefix in PREFIXES:
        if module.startswith(prefix):
            module = module[len(prefix):]
            break
    return "native", module, role


def _diffusers_to_wan(module: str) -> str | None:
    for old, new in DIFFUSERS_TOP:
        if module == old:
            return new
    m = _BLOCK_RE.match(module)
    if m:
        for old, new in DIFFUSERS_BLOCK:
            if m.group(2) == old:
                return f"blocks.{m.group(1)}.{new}"
    return None


def _modules(params) -> set[str]:
    return {name.rsplit(".", 1)[0] for name in params}


def _target(naming: str, module: str, role: str, params, kohya: dict[str, str]) -> tuple[str, str] | None:
    """(Wan parameter name, format label) the key updates; None when it names no parameter."""
    if naming == "kohya":
        module = kohya.get(module)
        if module is None:
            return None
        label = "kohya"
    else:
        label = "wan"
        if role == "diff_m":
            name = f"{module}.modulation"
            return (name, label) if name in params else None
        if f"{module}.weight" not in params and f"{module}.bias" not in params:
            module, label = _diffusers_to_wan(module), "diffusers"
            if module is None:
                return None
    if role == "diff_m":
        name = f"{module}.modulation"
    else:
        name = f"{module}.bias" if role == "diff_b" else f"{module}.weight"
    return (name, label) if name in params else None


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def parse(path: str, header: dict, params: dict[str, tuple[int, ...]]) -> LoraFile:
    """Map every key of `header` onto `params` (Wan parameter name -> shape); LoraError naming the
    first keys that fit no format or no parameter, or whose shapes do not fit it."""
    kohya = {m.replace(".", "_"): m for m in _modules(params)}
    groups: dict[tuple[str, str], dict[str, str]] = {}
    unknown: list[str] = []
    labels: set[str] = set()
    for key in header:
        parsed = _strip(key)
        hit = _target(*parsed, params, kohya) if parsed else None
        if hit is None:
            unknown.append(key)
            continue
        target, label = hit
        labels.add(label)
        role = parsed[2]
        kind = "lora" if role in ("down", "up", "alpha") else "diff"
        slot = groups.setdefault((target, kind), {})
        slot["diff" if kind == "diff" else role] = key
    if unknown:
        shown = ", ".join(sorted(unknown)[:SHOWN_KEYS])
        raise LoraError(f"LoRA {path}: {len(unknown)} of {len(header)} keys fit no LoRA format for this "
                        f"model's parameters (first: {shown}); known formats: Wan-native/lightx2v, ComfyUI/kohya, "
                        "diffusers/PEFT")
    terms, bad = [], []
    for (target, kind), keys in sorted(groups.items()):
        want = params[target]
        if kind == "diff":
            if _numel(header[keys["diff"]]["shape"]) != _numel(want):
                bad.append(f"{keys['diff']} {list(header[keys['diff']]['shape'])} vs {target} {list(want)}")
            terms.append(Term(target, "diff", keys))
            continue
        if "down" not in keys or "up" not in keys:
            have = next(iter(keys.values()))
            bad.append(f"{have} has no {'lora_up/lora_B' if 'up' not in keys else 'lora_down/lora_A'} partner")
            continue
        down, up = header[keys["down"]]["shape"], header[keys["up"]]["shape"]
        rank = down[0] if down else 0
        fits = (len(down) >= 2 and len(up) >= 2 and up[1] == rank and up[0] == want[0]
                and _numel(down[1:]) == _numel(want[1:]) and _numel(up[2:]) == 1)
        if not fits:
            bad.append(f"{keys['up']} {list(up)} · {keys['down']} {list(down)} vs {target} {list(want)}")
        terms.append(Term(target, "lora", keys, rank=rank))
    if bad:
        raise LoraError(f"LoRA {path}: {len(bad)} update(s) do not fit this model's parameters "
                        f"(first: {'; '.join(bad[:SHOWN_KEYS])}); is it a LoRA for another Wan model?")
    for info in header.values():
        if info["dtype"] not in DTYPES:
            raise LoraError(f"LoRA {path}: tensors of dtype {info['dtype']}; the kit reads F32, F16, BF16 and F64")
    fmt = "+".join(sorted(labels)) or "empty"
    if not terms:
        raise LoraError(f"LoRA {path} holds no tensors")
    return LoraFile(path=path, format=fmt, terms=terms, keys=len(header), header=header)


def check(path: str, params: dict[str, tuple[int, ...]]) -> LoraFile:
    """Read a LoRA file's header and map it onto `params` (no tensor is read)."""
    if not os.path.isfile(path):
        raise LoraError(f"LoRA file {path} does not exist")
    return parse(path, read_header(path), params)


# --------------------------------------------------------------------------- specs and routing


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA as the user named it: a file (or a Lightning-layout folder), its scale, its expert."""

    path: str
    scale: float = 1.0
    expert: str | None = None  # "high", "low", or None: the single DiT / a Lightning folder's own routing

    @classmethod
    def parse(cls, text: str, expert: str | None = None) -> "LoraSpec":
        """`PATH[:SCALE]` (a trailing `:number` is the scale)."""
        path, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep:
            try:
                scale = float(tail)
                path = head
            except ValueError:
                pass
        if not path:
            raise LoraError(f"LoRA {text!r}: give a file (PATH or PATH:SCALE)")
        if scale != scale or abs(scale) > 100:
            raise LoraError(f"LoRA {text!r}: scale {tail} is not a number between -100 and 100")
        return cls(path=path, scale=scale, expert=expert)

    def text(self) -> str:
        return f"{self.path}:{self.scale:g}"


def route(specs: list[LoraSpec], moe: bool, flag: str = "--lora") -> list[LoraSpec]:
    """Each LoRA file with the expert it merges into ("high"/"low" on A14B, None on one-DiT tasks).

    A folder in the Lightning layout expands to its two files; on A14B a single file given to plain
    `--lora` is refused (which expert it was trained for is not in the file).
    """
    out: list[LoraSpec] = []
    high, low = f"{flag}-high", f"{flag}-low"
    for spec in specs:
        if not os.path.exists(spec.path):
            raise LoraError(f"LoRA {spec.path} does not exist")
        if os.path.isdir(spec.path):
            files = {e: os.path.join(spec.path, name) for e, name in EXPERT_FILES.items()}
            present = {e: p for e, p in files.items() if os.path.isfile(p)}
            if not moe:
                raise LoraError(f"LoRA {spec.path} is a folder; this task has one DiT: name the .safetensors file")
            if spec.expert is not None:
                if spec.expert not in present:
                    raise LoraError(f"LoRA folder {spec.path} has no {EXPERT_FILES[spec.expert]}")
                out.append(LoraSpec(present[spec.expert], spec.scale, spec.expert))
                continue
            if len(present) != 2:
                raise LoraError(f"LoRA folder {spec.path} is not in the Lightning layout (needs "
                                f"{' and '.join(EXPERT_FILES.values())}); name a file with {high} or {low}")
            out += [LoraSpec(p, spec.scale, e) for e, p in present.items()]
            continue
        if moe and spec.expert is None:
            raise LoraError(f"{flag} {spec.path}: an A14B task has two experts and a LoRA file is trained for one; "
                            f"use {high} (high-noise expert, early steps) or {low} (low-noise expert, late steps)")
        if not moe and spec.expert is not None:
            raise LoraError(f"{high if spec.expert == 'high' else low} is for the A14B tasks (two experts); "
                            f"use {flag} on a one-DiT task")
        out.append(spec)
    return out


def prepare(specs: list[LoraSpec], ckpt_dir: str, moe: bool, flag: str = "--lora") -> list[tuple[LoraSpec, LoraFile]]:
    """Route and check every LoRA against the checkpoint's own config (header reads only)."""
    checked = []
    for spec in route(specs, moe, flag):
        config = read_config(ckpt_dir, spec.expert)
        if config is None:
            raise LoraError(f"cannot check LoRA {spec.path}: no DiT config.json in {ckpt_dir} "
                            f"({'the ' + spec.expert + '-noise expert' if spec.expert else 'the model'})")
        checked.append((spec, check(spec.path, wan_parameters(config))))
    return checked




def canonical(specs: list[LoraSpec]) -> list[dict]:
    """A routed LoRA set as comparable data: each file's real path, scale and expert, in a fixed order."""
    items = [{"file": os.path.realpath(s.path), "scale": float(s.scale), "expert": s.expert} for s in specs]
    return sorted(items, key=lambda d: (d["expert"] or "", d["file"], d["scale"]))


def describe(lora_set: list[dict]) -> str:
    """`high: a.safetensors:1, low: b.safetensors:1`, or `no LoRA`."""
    if not lora_set:
        return "no LoRA"
    return ", ".join(f"{d['expert'] + ': ' if d.get('expert') else ''}{os.path.basename(d['file'])}:{d['scale']:g}"
                     for d in lora_set)
