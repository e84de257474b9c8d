"""Run the fuzz harnesses: python -m tests.fuzz [--seconds N] [--target T ...] [--engine E].

--engine atheris (the default when atheris is installed): each target runs in its own
process under libFuzzer for its share of the time, starting from tests/fuzz/corpus/<T>/ and
the target's seeds; new interesting inputs go to a scratch directory (--update-corpus merges
the ones that add coverage into the repository's corpus, keeping it minimal).  A crash, a
hang (> --timeout s for one input), an out-of-memory or an undocumented exception stops the
target, writes the input to --artifacts and makes the run fail.
--engine random: the same harnesses fed with random bytes and random mutations of the
corpus (no coverage guidance; for machines without atheris).

Prints, per target, the executions, executions per second and the outcome.
"""
import argparse
import importlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TARGETS = ("fuzz_load", "fuzz_api", "fuzz_state")
HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
MAX_LEN = 4096


def _module(name):
    return importlib.import_module(f"tests.fuzz.{name}")


def corpus_files(target):
    d = os.path.join(CORPUS, target)
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def _limit_memory(mb):
    """Make a runaway allocation a MemoryError, not the OOM killer (address-space limit;
    not under AddressSanitizer, whose shadow memory needs terabytes of address space)."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))
    except (ImportError, ValueError, OSError):
        pass


def _worker_atheris(target, seconds, timeout, scratch, artifacts, rss_mb):
    import atheris
    with atheris.instrument_imports(include=["fastnn"]):
        import fastnn  # noqa: F401
    mod = _module(target)
    os.makedirs(scratch, exist_ok=True)
    for i, s in enumerate(mod.seeds()):
        with open(os.path.join(scratch, f"seed-{i}"), "wb") as f:
            f.write(s)
    args = [sys.argv[0], scratch] + ([os.path.join(CORPUS, target)]
                                     if os.path.isdir(os.path.join(CORPUS, target)) else [])
    args += [f"-max_total_time={seconds}", f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}",
             f"-max_len={MAX_LEN}", f"-artifact_prefix={artifacts}{os.sep}{target}-",
             "-print_final_stats=1"]
    atheris.Setup(args, mod.test_one_input)
    atheris.Fuzz()


def update_corpus(target, scratch, max_size=1024, max_files=64):
    """Copy the inputs libFuzzer kept (each one added coverage when it was found), the
    smallest first, into tests/fuzz/corpus/<target>/ -- small files only, at most max_files
    there in all, named by their content hash.  (libFuzzer's -merge would minimize better but
    re-executes sys.argv, which a `python -m` harness cannot survive.)"""
    import hashlib
    dest = os.path.join(CORPUS, target)
    os.makedirs(dest, exist_ok=True)
    have = len(os.listdir(dest))
    found = sorted((os.path.getsize(os.path.join(scratch, f)), f) for f in os.listdir(scratch)
                   if not f.startswith("seed-"))
    added = 0
    for size, f in found:
        if size > max_size or have + added >= max_files:
            break
        with open(os.path.join(scratch, f), "rb") as fh:
            data = fh.read()
        path = os.path.join(dest, hashlib.sha1(data).hexdigest()[:16])
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(data)
            added += 1
    return added


def _mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        op = rng.randint(0, 3)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randint(0, len(b)), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        else:
            i = rng.randint(0, len(b))
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b[:MAX_LEN])


def _worker_random(target, seconds, timeout, artifacts, seed):
    mod = _module(target)
    pool = list(mod.seeds()) + [open(p, "rb").read() for p in corpus_files(target)]
    rng = random.Random(seed)
    n, t0 = 0, time.time()

    def hang(signum, frame):
        raise TimeoutError(f"one input took more than {timeout} s")
    signal.signal(signal.SIGALRM, hang)
    while time.time() - t0 < seconds:
        data = _mutate(rng, rng.choice(pool)) if rng.random() < 0.8 else \
            bytes(rng.randrange(256) for _ in range(rng.randint(0, 256)))
        signal.alarm(timeout)
        try:
            mod.test_one_input(data)
        except BaseException:
            path = os.path.join(artifacts, f"{target}-crash-{n}")
            with open(path, "wb") as f:
                f.write(data)
            print(f"#{n} {target}: input written to {path}", flush=True)
            raise
        finally:
            signal.alarm(0)
        n += 1
    dt = time.time() - t0
    print(f"stat::number_of_executed_units: {n}\nstat::average_exec_per_sec: "
          f"{int(n / dt) if dt else 0}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="total time, split over targets")
    ap.add_argument("--target", action="append", choices=TARGETS)
    try:
        import atheris  # noqa: F401
        default = "atheris"
    except ImportError:
        default = "random"
    ap.add_argument("--engine", choices=("atheris", "random"), default=default)
    ap.add_argument("--timeout", type=int, default=20, help="seconds one input may take")
    ap.add_argument("--rss-mb", type=int, default=4096, help="memory limit of a target")
    ap.add_argument("--artifacts", default=None, help="where crashing inputs are written")
    ap.add_argument("--update-corpus", action="store_true",
                    help="merge new coverage-increasing inputs into tests/fuzz/corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    artifacts = os.path.abspath(args.artifacts or tempfile.mkdtemp(prefix="fastnn-fuzz-art-"))
    os.makedirs(artifacts, exist_ok=True)
    if args.worker:
        sys.argv = [sys.argv[0]] + rest
        if args.engine == "atheris":
            _worker_atheris(args.worker, int(args.seconds), args.timeout, args.scratch,
                            artifacts, args.rss_mb)
        else:
            _limit_memory(args.rss_mb)
            _worker_random(args.worker, args.seconds, args.timeout, artifacts, args.seed)
        return 0
    targets = args.target or list(TARGETS)
    share = max(1, int(args.seconds / len(targets)))
    failed = []
    root = os.path.dirname(os.path.dirname(HERE))
    for t in targets:
        scratch = tempfile.mkdtemp(prefix=f"fastnn-fuzz-{t}-")
        cmd = [sys.executable, "-m", "tests.fuzz", "--worker", t, "--engine", args.engine,
               "--seconds", str(share), "--timeout", str(args.timeout), "--rss-mb",
               str(args.rss_mb), "--artifacts", artifacts, "--scratch", scratch,
               "--seed", str(args.seed)]
        print(f"== {t}: {share} s with {args.engine}", flush=True)
        t0 = time.time()
        p = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace")
        dt = time.time() - t0
        stats = [ln for ln in p.stdout.splitlines() if ln.startswith("stat::")]
        execs = next((ln.split()[-1] for ln in stats if "executed_units" in ln), "?")
        eps = next((ln.split()[-1] for ln in stats if "exec_per_sec" in ln), "?")
        print(f"   {t}: {execs} executions in {dt:.0f} s ({eps}/s), exit {p.returncode}",
              flush=True)
        if p.returncode != 0:
            failed.append(t)
            print("\n".join(p.stdout.splitlines()[-60:]), flush=True)
        elif args.update_corpus and args.engine == "atheris":
            print(f"   {t}: {update_corpus(t, scratch)} inputs added to the corpus")
        shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print(f"FUZZ FAILURES in {failed}; inputs in {artifacts}", flush=True)
        return 1
    print("fuzz: no failures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
