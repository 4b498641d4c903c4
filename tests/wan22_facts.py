"""Extract the facts the kit relies on from a Wan2.2 checkout into tests/facts/wan22.json.

    git clone https://github.com/Wan-Video/Wan2.2 .upstream/Wan2.2     # an ignored folder
    git -C .upstream/Wan2.2 checkout "$(grep ^WAN22_REF= .env.example | cut -d= -f2)"
    python tests/wan22_facts.py .upstream/Wan2.2                        # rewrites tests/facts/wan22.json

The tests compare the stand-in generate.py (tests/standins/) and the catalog against this file,
so CI needs neither the network nor upstream's code (which is never committed here). Upstream is
read with `ast`, never imported (it needs torch and CUDA): every `add_argument` of `_parse_args()`
in order (flags, action, type, default, choices; `choices=list(WAN_CONFIGS.keys())` resolved
against `wan/configs/__init__.py`), SIZE_CONFIGS and SUPPORTED_SIZES, and each task config's
literal attributes after `update(wan_shared_cfg)`, and requirements.txt as it is (the stand-in
tree's copy, which the image build installs in CI, must equal it byte for byte). Stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

FACTS_PATH = Path(__file__).resolve().parent / "facts" / "wan22.json"
UPSTREAM_REPO = "https://github.com/Wan-Video/Wan2.2"


def _literal(node: ast.AST):
    """The value of a literal expression; tuples become lists (JSON has no tuples)."""
    value = ast.literal_eval(node)
    return _jsonable(value)


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _module_assignments(tree: ast.Module) -> dict[str, ast.AST]:
    return {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def config_tables(wan: Path) -> dict:
    """WAN_CONFIGS (task -> config variable and module), SIZE_CONFIGS, SUPPORTED_SIZES."""
    tree = ast.parse((wan / "wan" / "configs" / "__init__.py").read_text())
    names = _module_assignments(tree)
    imported = {alias.asname or alias.name: node.module for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
    wan_configs = {}
    for key, value in zip(names["WAN_CONFIGS"].keys, names["WAN_CONFIGS"].values):
        wan_configs[ast.literal_eval(key)] = (value.id, imported[value.id])
    return {
        "wan_configs": wan_configs,
        "size_configs": _literal(names["SIZE_CONFIGS"]),
        "supported_sizes": _literal(names["SUPPORTED_SIZES"]),
    }


def _config_attributes(path: Path, variable: str, shared: dict | None) -> dict:
    """`variable.attr = <literal>` statements of a config module, after `variable.update(shared)`."""
    attrs: dict = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if (isinstance(func, ast.Attribute) and func.attr == "update" and getattr(func.value, "id", None) == variable
                    and shared is not None):
                attrs.update(shared)
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Attribute) and getattr(target.value, "id", None) == variable:
                try:
                    attrs[target.attr] = _literal(node.value)
                except ValueError:
                    pass  # not a literal (torch.bfloat16, a nested EasyDict): not a fact we keep
    return attrs


def task_configs(wan: Path, tables: dict) -> dict:
    configs = wan / "wan" / "configs"
    shared = _config_attributes(configs / "shared_config.py", "wan_shared_cfg", None)
    return {task: _config_attributes(configs / f"{module}.py", variable, shared)
            for task, (variable, module) in tables["wan_configs"].items()}


def _resolve_choices(node: ast.AST, tables: dict):
    # upstream writes choices=list(WAN_CONFIGS.keys()) / list(SIZE_CONFIGS.keys())
    if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "list" and node.args
            and isinstance(node.args[0], ast.Call) and getattr(node.args[0].func, "attr", None) == "keys"):
        table = node.args[0].func.value.id
        return list({"WAN_CONFIGS": tables["wan_configs"], "SIZE_CONFIGS": tables["size_configs"]}[table])
    return _literal(node)


def generate_arguments(wan: Path, tables: dict) -> list[dict]:
    """Every add_argument of generate.py's `_parse_args()`, in order, normalised."""
    tree = ast.parse((wan / "generate.py").read_text())
    parse_args = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_parse_args")
    arguments = []
    for node in ast.walk(parse_args):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        flags = [ast.literal_eval(a) for a in node.args]
        arguments.append((node.lineno, {
            "flags": flags,
            "dest": next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-").replace("-", "_"),
            "action": ast.literal_eval(kw["action"]) if "action" in kw else "store",
            "type": kw["type"].id if "type" in kw else None,
            "default": _literal(kw["default"]) if "default" in kw else None,
            "choices": _resolve_choices(kw["choices"], tables) if "choices" in kw else None,
            "nargs": _literal(kw["nargs"]) if "nargs" in kw else None,
            "required": _literal(kw["required"]) if "required" in kw else False,
        }))
    return [a for _, a in sorted(arguments, key=lambda pair: pair[0])]  # the file's order


def extract(wan: Path, commit: str) -> dict:
    tables = config_tables(wan)
    return {
        "source": {"repo": UPSTREAM_REPO, "commit": commit,
                   "files": ["generate.py", "requirements.txt", "wan/configs/__init__.py", "wan/configs/shared_config.py",
                             *sorted(f"wan/configs/{m}.py" for _, m in tables["wan_configs"].values())],
                   "extracted_by": "tests/wan22_facts.py"},
        "generate_arguments": generate_arguments(wan, tables),
        "size_configs": tables["size_configs"],
        "supported_sizes": tables["supported_sizes"],
        "task_configs": task_configs(wan, tables),
        "requirements_txt": (wan / "requirements.txt").read_text(encoding="utf-8"),
    }


def load() -> dict:
    """The committed facts (what the tests read)."""
    return json.loads(FACTS_PATH.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a Wan2.2 git checkout at the pinned commit")
    parser.add_argument("--output", type=Path, default=FACTS_PATH)
    args = parser.parse_args(argv)
    try:
        commit = subprocess.run(["git", "-C", str(args.checkout), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        print(f"{args.checkout} is not a git checkout of Wan2.2", file=sys.stderr)
        return 2
    dirty = subprocess.run(["git", "-C", str(args.checkout), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"{args.checkout} has local changes; extract from a clean checkout", file=sys.stderr)
        return 2
    facts = extract(args.checkout, commit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(facts, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {len(facts['generate_arguments'])} arguments, "
          f"{len(facts['task_configs'])} task configs, Wan2.2 @ {commit[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
