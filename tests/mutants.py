"""Mutation check of the pure core: 25 one-line mutants at behaviour edges, each must fail a test.

    python tests/mutants.py                # baseline, then every mutant; a table and the score
    python tests/mutants.py L1 R2          # only these
    python tests/mutants.py --list         # where each mutant lands (nothing is run)

Each mutant names its module, a snippet of code that occurs exactly once there, the snippet's
replacement, and the tests that should notice. The snippet, not a line number, finds the place,
so the list survives edits around it; when the module has moved, the snippet is looked for in
every module of the package. A snippet found nowhere, or more than once, is reported as `stale`
with the reason (fix the list, the code moved on). First comes a baseline: each mutant's tests
must pass on the real code, or no mutant result means anything. Every mutated file is
restored after its run, also on Ctrl-C; tests run with a fresh bytecode cache
(PYTHONPYCACHEPREFIX), so a mutant of the same size in the same second is never masked by, nor
leaves behind, a stale .pyc. Tests run with CI=1 (tests/ci_policy.py): the ones that need olah
(I1, I2; found as the suite finds it, WAN22CTL_OLAH_CLI) fail the baseline when it is missing
instead of letting a mutant pass by skipping. Exit status 0 when at least --min-killed mutants
are killed.

A mutant is killed when its tests fail (pytest exit 1) or run past --timeout; any other pytest
exit (collection error, no tests selected) is an `error`: the tests named here no longer exist.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wan22ctl"


@dataclass(frozen=True)
class Mutant:
    id: str
    module: str  # path under the repository root where the snippet is expected
    snippet: str  # occurs exactly once in the module
    mutation: str  # what replaces it
    tests: tuple[str, ...]  # pytest arguments that must fail with the mutant applied
    why: str  # the behaviour the mutant breaks


L, C, S = "wan22ctl/plan/launch.py", "wan22ctl/catalog.py", "wan22ctl/settings.py"
T, R = "wan22ctl/agent/server/store.py", "wan22ctl/agent/server/requests.py"
O, D, I = "wan22ctl/agent/outputs.py", "wan22ctl/plan/download.py", "wan22ctl/hub/integrity.py"
PLAN, UPSTREAM = "tests/test_plan_launch.py", "tests/test_upstream.py"
SETTINGS, STORE, SERVER = "tests/test_settings.py", "tests/test_server_store.py", "tests/test_server.py"
DPLAN, DOWNLOAD = "tests/test_download_plan.py", "tests/test_download.py"

MUTANTS: tuple[Mutant, ...] = (
    # --- the 13 that survived the hand mutation of issue 23
    Mutant("L1", L, "elif frames < 1 or frames % 4 != 1:", "elif frames < 1 or frames % 2 != 1:",
           (PLAN, "-k", "invalid_request"), "79 frames (4n+3) accepted"),
    Mutant("L3", L, "budget = mem * OFFLOAD_HEADROOM", "budget = mem",
           (PLAN, "-k", "plan_matrix"), "offload decided without the 10 % memory headroom"),
    Mutant("C1", C, "frame_num=81, sample_steps=40, sample_shift=12.0", "frame_num=81, sample_steps=40, sample_shift=5.0",
           (PLAN, UPSTREAM, "-k", "defaults or catalog"), "t2v-A14B default shift 12.0 becomes 5.0"),
    Mutant("S3", S, 'never stored in the container spec", secret=True', 'never stored in the container spec", secret=False',
           (SETTINGS, "-k", "secrets"), "WAN22_API_KEY shown by `config`"),
    Mutant("S4", S, "if not v.isdigit() or not 0 < int(v) < 65536:", "if not v.isdigit():",
           (SETTINGS, "-k", "ports"), "ports 0 and 65536 accepted"),
    Mutant("T2", T, "if job is None or job.state in TERMINAL:", "if job is None:",
           (STORE, SERVER, "-k", "finished_job or cancel_running"), "a finished job marked cancel-requested"),
    Mutant("R1", R, "if isinstance(v, bool) or not isinstance(v, int):", "if not isinstance(v, int):",
           (SERVER, "-k", "validation_errors"), "JSON true accepted as an integer"),
    Mutant("R2", R, "if len(prompt) > MAX_PROMPT_CHARS:", "if len(prompt) > MAX_PROMPT_CHARS * 10:",
           (SERVER, "-k", "validation_errors"), "prompt cap x10"),
    Mutant("R3", R, "MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE",
           "MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE", (SERVER, "-k", "image_checks"), "image height unchecked"),
    Mutant("R4", R, "if not task.moe or len(guide) != 2:", "if len(guide) != 2:",
           (SERVER, "-k", "ti2v_server"), "a guide-scale pair accepted for ti2v-5B"),
    Mutant("O2", O, "os.O_CREAT | os.O_EXCL | os.O_WRONLY", "os.O_CREAT | os.O_WRONLY",
           (PLAN, "-k", "publish"), "the no-hard-link fallback overwrites an existing video"),
    Mutant("D1", D, "if 0 < local.partial <= remote.size else 0", "if 0 < local.partial else 0",
           (DPLAN,), "a partial larger than the remote file counted as resumable"),
    Mutant("I1", I, "return file_digest(path) == step.sha256", "return True",
           (DOWNLOAD, "-k", "flipped_byte"), "sha256 never compared"),
    # --- 12 more edges of the same modules
    Mutant("L2", L, "if sample_steps < 1:", "if sample_steps < 0:",
           (PLAN, "-k", "invalid_request"), "zero sampling steps accepted"),
    Mutant("C2", C, "for n in range(1, max_gpus + 1) if num_heads % n == 0", "for n in range(1, max_gpus) if num_heads % n == 0",
           (PLAN, "-k", "plan_matrix"), "the last GPU never counted for Ulysses"),
    Mutant("S1", S, "if int(v) < 1:", "if int(v) < 0:",
           (SETTINGS, "-k", "gpus"), "GPUS=0 accepted"),
    Mutant("S2", S, "        if spec.key in environ:\n", "        if spec.key in environ and in_file is None:\n",
           (SETTINGS, "-k", "precedence"), "the environment no longer overrides .env"),
    Mutant("T1", T, "WHERE state='queued' ORDER BY seq LIMIT 1", "WHERE state='queued' ORDER BY seq DESC LIMIT 1",
           (STORE, "-k", "fifo"), "the queue is served newest first"),
    Mutant("T3", T, 'policy == "requeue" and attempts < max_attempts', 'policy == "requeue" and attempts <= max_attempts',
           (STORE, "-k", "crash_loop"), "a crash-looping job gets one try too many"),
    Mutant("R5", R, '"sample_steps", -MAX_STEPS, MAX_STEPS)', '"sample_steps", -MAX_STEPS, MAX_STEPS * 10)',
           (SERVER, "-k", "validation_errors"), "steps cap x10"),
    Mutant("O1", O, "if os.path.exists(sidecar):", "if os.path.exists(sidecar) and os.path.exists(dst):",
           (PLAN, "-k", "publish"), "a sidecar whose video is gone no longer reserves its name"),
    Mutant("O3", O, "if pos + box_size > size:", "if pos + box_size >= size:",
           (PLAN, "-k", "mp4_check"), "an MP4 whose last box ends at the end of the file called truncated"),
    Mutant("D2", D, "return sum(f.size - f.have_bytes for f in self.files", "return sum(f.size for f in self.files",
           (DPLAN, "-k", "partials"), "bytes of a resumable partial counted again"),
    Mutant("D3", D, "needed[fs_path] = needed.get(fs_path, 0) + m.fetch_bytes", "needed[fs_path] = m.fetch_bytes",
           (DPLAN, "-k", "space_verdict"), "two models on one filesystem not added up"),
    Mutant("I2", I, 'return hashlib.sha1(f"blob {step.size}\\0".encode())', "return hashlib.sha1()",
           (DOWNLOAD, "-k", "lands_in_wan_layout"), "git blob ids of regular files computed without the header"),
)


@dataclass
class Place:
    path: Path | None
    problem: str | None = None
    moved: bool = False


def locate(m: Mutant) -> Place:
    """The file that holds the snippet exactly once (the module named, else anywhere in the package)."""
    expected = REPO / m.module
    if expected.is_file():
        count = expected.read_text(encoding="utf-8").count(m.snippet)
        if count == 1:
            return Place(expected)
        if count > 1:
            return Place(None, f"snippet occurs {count} times in {m.module}; make it longer")
    hits = [(p, p.read_text(encoding="utf-8").count(m.snippet)) for p in sorted(PACKAGE.rglob("*.py"))]
    hits = [(p, n) for p, n in hits if n]
    if len(hits) == 1 and hits[0][1] == 1:
        return Place(hits[0][0], moved=True)
    where = "absent from " + (m.module if expected.is_file() else f"{m.module} (gone)")
    if hits:
        return Place(None, f"{where}; found {sum(n for _, n in hits)} times in "
                           f"{', '.join(str(p.relative_to(REPO)) for p, _ in hits)}")
    return Place(None, f"{where} and from every module of wan22ctl/")


def run_pytest(args: tuple[str, ...], timeout: float) -> tuple[str, float, list[str], str]:
    """(outcome, seconds, failed test ids, output tail): outcome is passed | failed | timeout | error."""
    # CI=1: a test whose prerequisite is missing (olah for I1, I2) fails instead of passing by skipping
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", CI="1")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wan22ctl-mutants-") as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the tests' own servers and CLIs too
            out, _ = proc.communicate()
            return "timeout", time.monotonic() - start, [], out[-2000:]
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", out, re.M)
    outcome = {0: "passed", 1: "failed"}.get(proc.returncode, "error")
    return outcome, time.monotonic() - start, failed, out[-2000:]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    parser.add_argument("--list", action="store_true", help="show where each mutant lands; run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the real code")
    parser.add_argument("--min-killed", type=int, default=24, help="exit 1 below this many killed (default 24)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    args = parser.parse_args(argv)
    known = {m.id: m for m in MUTANTS}
    unknown = [i for i in args.ids if i not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[i] for i in args.ids] if args.ids else list(MUTANTS)
    places = {m.id: locate(m) for m in chosen}

    if args.list:
        for m in chosen:
            p = places[m.id]
            where = p.problem and f"STALE: {p.problem}" or str(p.path.relative_to(REPO)) + (" (moved)" if p.moved else "")
            print(f"{m.id:3} {where}\n    - {m.snippet.strip()}\n    + {m.mutation.strip()}\n    tests: {' '.join(m.tests)}")
        return 0

    signal.signal(signal.SIGTERM, _raise_interrupt)
    if not args.no_baseline:
        for selection in dict.fromkeys(m.tests for m in chosen if places[m.id].path is not None):
            outcome, seconds, failed, tail = run_pytest(selection, args.timeout)
            print(f"baseline {' '.join(selection)}: {outcome} in {seconds:.0f} s", flush=True)
            if outcome != "passed":
                print(tail, file=sys.stderr)
                print("these tests fail on the real code; fix them first (a mutant result would mean nothing)",
                      file=sys.stderr)
                return 2

    rows = []
    for m in chosen:
        place = places[m.id]
        if place.path is None:
            rows.append((m, "stale", 0.0, place.problem))
            continue
        original = place.path.read_bytes()
        text = original.decode("utf-8")
        try:
            place.path.write_text(text.replace(m.snippet, m.mutation, 1), encoding="utf-8")
            outcome, seconds, failed, tail = run_pytest(m.tests, args.timeout)
        finally:
            place.path.write_bytes(original)
        status = {"failed": "killed", "timeout": "killed", "passed": "SURVIVED", "error": "error"}[outcome]
        detail = failed[0] if failed else ("ran past the timeout" if outcome == "timeout" else m.why)
        if outcome == "error":
            detail = "pytest could not run these tests: " + tail.strip().splitlines()[-1]
        if place.moved:
            detail += f" (found in {place.path.relative_to(REPO)})"
        rows.append((m, status, seconds, detail))
        print(f"{m.id:3} {status:8} {seconds:5.0f} s  {detail}", flush=True)

    killed = sum(1 for _, status, _, _ in rows if status == "killed")
    print()
    print(f"{'id':3}  {'module':36}  {'result':8}  {'the behaviour it breaks / what caught it'}")
    for m, status, seconds, detail in rows:
        print(f"{m.id:3}  {m.module:36}  {status:8}  {m.why}" + (f"  <- {detail}" if detail != m.why else ""))
    print(f"\nscore: {killed} of {len(rows)} mutants killed")
    return 0 if killed >= min(args.min_killed, len(rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
