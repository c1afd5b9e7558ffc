"""Batch conversion of a photo library: pair each raw with its sRGB JPEG, encode the pairs in
worker processes (or on a Dask cluster) and record every result in a SQLite manifest.

Crash safety rests on three rules:
- the parent process is the manifest's only writer; workers get a task dict, return a result
  dict, and write outputs only through `formats.atomic` (temp file + rename);
- a pair is claimed (state 'running') before it is submitted, so a later run knows that
  metadata found in its JPEG may be its own (from a run killed before recording the result)
  and replaces it, where metadata in an unclaimed pair's JPEG is left alone ('existing');
- temp files (`.NAME.XXXXXXXX.part`) orphaned by a SIGKILL are removed on the next run.

Importing this module is cheap (no numpy, no torch): spawned workers set their thread
limits before the codec pulls those in.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from rawmeta.formats.errors import BadInputError, OutputError, RawmetaError

RAW_EXTS = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
    ".rw2", ".raw", ".rwl", ".pef", ".ptx", ".srw", ".3fr", ".fff", ".iiq", ".mos", ".mef",
    ".mrw", ".erf", ".kdc", ".dcr", ".x3f", ".gpr",
})
JPEG_EXTS = frozenset({".jpg", ".jpeg", ".jpe"})
MANIFEST_NAME = ".rawmeta-batch.sqlite"
LOCK_NAME = ".rawmeta-batch.lock"
TRASH_NAME = ".rawmeta-trash"
# formats.atomic's temp names: mkstemp(prefix=".NAME.", suffix=".part"), 8 random chars.
_PART_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.part$")
_OUTPUT_EXTS = JPEG_EXTS | {".rmeta"}
FINISHED = ("done", "verified", "trashed", "existing")


# --- finding pairs ---------------------------------------------------------------------

@dataclass
class Pair:
    raw: str                 # relative to the library root, POSIX separators
    jpeg: str | None = None  # None: no JPEG beside the raw
    error: str | None = None  # ambiguous pairing, reported as a failure


@dataclass
class Library:
    root: Path
    pairs: list[Pair] = field(default_factory=list)
    stale_parts: list[Path] = field(default_factory=list)

    @property
    def paired(self) -> list[Pair]:
        return [p for p in self.pairs if p.jpeg is not None or p.error]

    @property
    def lone_raws(self) -> list[str]:
        return [p.raw for p in self.pairs if p.jpeg is None and not p.error]


def discover(root: Path, skip: Iterable[Path] = ()) -> Library:
    """Walk `root` (never into symlinked folders) and pair raws with JPEGs by stem, any case."""
    root = Path(root)
    skip_real = {os.path.realpath(p) for p in skip} | {os.path.realpath(root / TRASH_NAME)}
    lib = Library(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if os.path.realpath(os.path.join(dirpath, d)) not in skip_real)
        rel_dir = Path(dirpath).relative_to(root)
        lib.pairs += _pair_folder(rel_dir, sorted(filenames))
        lib.stale_parts += [Path(dirpath, f) for f in filenames if _is_stale_part(f)]
    return lib


def _pair_folder(rel_dir: Path, names: list[str]) -> list[Pair]:
    raws: dict[str, list[str]] = {}
    jpegs: dict[str, list[str]] = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        group = raws if ext.lower() in RAW_EXTS else jpegs if ext.lower() in JPEG_EXTS else None
        if group is not None:
            group.setdefault(stem.lower(), []).append(name)
    pairs = []
    for stem, raw_names in sorted(raws.items()):
        candidates = jpegs.get(stem, [])
        pair = Pair((rel_dir / raw_names[0]).as_posix(),
                    (rel_dir / candidates[0]).as_posix() if candidates else None)
        if len(raw_names) > 1 or len(candidates) > 1:
            pair.error = f"ambiguous pairing: {', '.join(raw_names + candidates)} share one stem"
        pairs.append(pair)
    return pairs


def _is_stale_part(name: str) -> bool:
    m = _PART_RE.match(name)
    return m is not None and os.path.splitext(m["name"])[1].lower() in _OUTPUT_EXTS


# --- the manifest ----------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    raw TEXT NOT NULL, mode TEXT NOT NULL, jpeg TEXT, target TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    raw_bytes INTEGER, jpeg_bytes INTEGER, out_bytes INTEGER, payload_bytes INTEGER,
    bpp REAL, psnr REAL, verify_psnr REAL, error TEXT, updated REAL,
    PRIMARY KEY (raw, mode))
"""
_RESULT_COLUMNS = ("jpeg", "target", "state", "raw_bytes", "jpeg_bytes", "out_bytes",
                   "payload_bytes", "bpp", "psnr", "verify_psnr", "error")


class Manifest:
    """One row per (raw, mode): the single source of truth about what is done."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path = Path(path)
        try:
            if readonly:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            else:
                self.db = sqlite3.connect(self.path, timeout=30)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: survives process kills
                self.db.execute(_SCHEMA)
                self.db.commit()
            self.db.row_factory = sqlite3.Row
        except sqlite3.Error as e:
            raise OutputError(self.path, f"cannot open the batch manifest: {e}") from None

    def get(self, raw: str, mode: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM pairs WHERE raw=? AND mode=?", (raw, mode)).fetchone()

    def claim(self, raw: str, mode: str, jpeg: str | None, target: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO pairs (raw, mode, jpeg, target, state, attempts, updated) "
                "VALUES (?, ?, ?, ?, 'running', 1, ?) ON CONFLICT (raw, mode) DO UPDATE SET "
                "state='running', attempts=attempts+1, error=NULL, updated=excluded.updated",
                (raw, mode, jpeg, target, time.time()))

    def record(self, raw: str, mode: str, values: dict) -> None:
        cols = [c for c in _RESULT_COLUMNS if c in values]
        sets = ", ".join(f"{c}=?" for c in cols)
        with self.db:
            self.db.execute(
                "INSERT INTO pairs (raw, mode, state) VALUES (?, ?, 'pending') "
                "ON CONFLICT (raw, mode) DO NOTHING", (raw, mode))
            self.db.execute(f"UPDATE pairs SET {sets}, updated=? WHERE raw=? AND mode=?",
                            [values[c] for c in cols] + [time.time(), raw, mode])

    def totals(self, mode: str) -> dict:
        row = self.db.execute(
            "SELECT COUNT(*), SUM(raw_bytes + jpeg_bytes), SUM(out_bytes), AVG(bpp), "
            "AVG(CASE WHEN psnr < 1e300 THEN psnr END), "
            "AVG(CASE WHEN verify_psnr < 1e300 THEN verify_psnr END) "
            "FROM pairs WHERE mode=? AND state IN ('done', 'verified', 'trashed') "
            "AND payload_bytes IS NOT NULL", (mode,)).fetchone()  # not pre-existing metadata
        keys = ("converted_total", "bytes_before", "bytes_after", "mean_bpp", "mean_psnr",
                "mean_verify_psnr")
        return dict(zip(keys, tuple(row)))

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def run_lock(folder: Path):
    """One batch run per manifest at a time (the kernel drops the lock if we are killed)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(folder, "another rawmeta batch run is working on this manifest") from None
        yield
    finally:
        os.close(fd)


# --- the work of one pair (runs in a worker) ------------------------------------------

_GUARD: threading.Lock | None = None  # held during a task in pool workers; see _exit_with_parent


def run_task(task: dict) -> dict:
    """Encode (and/or verify) one pair. Never raises: failures come back as a result."""
    with _GUARD or contextlib.nullcontext():
        started = time.perf_counter()
        result = {"raw": task["raw_rel"], "mode": task["mode"]}
        try:
            if task["kind"] == "encode":
                result.update(_encode(task))
            else:
                result["state"] = "done"
            if task["verify"] and result["state"] in ("done", "existing"):
                result["verify_psnr"] = _verify(task)
                result["state"] = "verified"
        except MemoryError:
            result.update(state="failed", error="out of memory")
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the run
            result.update(state="failed", error=one_line_error(e))
        result["seconds"] = time.perf_counter() - started
        return result


def one_line_error(e: BaseException) -> str:
    if isinstance(e, RawmetaError):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename or ''}: {e.strerror}"
    else:
        text = f"{type(e).__name__}: {e}"
    return " ".join(text.split())


def _encode(task: dict) -> dict:
    from rawmeta import codec
    from rawmeta.formats import jpeg, rmeta
    from rawmeta.formats.atomic import write_atomic
    from rawmeta.srgb import render_jpeg

    _one_torch_thread()
    raw, target, replace = Path(task["raw"]), Path(task["target"]), task["replace"]
    if task["render_to"]:
        srgb_path, data = Path(task["render_to"]), render_jpeg(raw)
    else:
        srgb_path = Path(task["jpeg"])
        data = _read_input(srgb_path)
    in_place = not task["render_to"] and target == srgb_path
    if not replace and (jpeg.extract(data, srgb_path) is not None if in_place else target.exists()):
        return {"state": "existing", "error": "already carries rawmeta metadata" if in_place
                else f"{target.name} already exists"}
    result = codec.encode(raw, srgb_path, srgb_bytes=data)
    target.parent.mkdir(parents=True, exist_ok=True)
    if task["sidecar"]:
        if task["render_to"]:
            write_atomic(srgb_path, data, force=replace)
        rmeta.write_sidecar(target, result.payload, force=replace)
        out_bytes = len(data) + len(result.payload)
    else:
        out = jpeg.embed(data, result.payload, srgb_path)
        mode_from = None if task["render_to"] else srgb_path
        write_atomic(target, out, force=replace or in_place, mode_from=mode_from)
        out_bytes = len(out)
    return {"state": "done", "raw_bytes": raw.stat().st_size,
            "jpeg_bytes": 0 if task["render_to"] else len(data), "out_bytes": out_bytes,
            "payload_bytes": len(result.payload), "bpp": result.bpp, "psnr": result.psnr}


def _verify(task: dict) -> float:
    """Decode what is on disk now and measure it against the raw (normalised PSNR)."""
    from rawmeta import codec, raw as rawio
    from rawmeta.formats import jpeg, rmeta

    _one_torch_thread()
    srgb_path = Path(task["srgb_out"])
    data = _read_input(srgb_path)
    if task["sidecar"]:
        payload, source = rmeta.read_sidecar(task["target"]), task["target"]
    else:
        payload, source = jpeg.extract(data, srgb_path), srgb_path
    if payload is None:
        raise BadInputError(srgb_path, "verify: carries no rawmeta metadata")
    rebuilt, _ = codec.decode(payload, srgb_path, srgb_bytes=data, source=source)
    return raw_psnr(rawio.read_raw(task["raw"]), rebuilt)


def raw_psnr(original, rebuilt) -> float:
    """PSNR on the normalised visible mosaic, with the original's black and white levels."""
    from rawmeta import raw as rawio
    from rawmeta.metrics import psnr

    meta = original.meta
    if rebuilt.mosaic.shape != original.mosaic.shape:
        raise BadInputError(None, f"verify: rebuilt raw is {rebuilt.mosaic.shape}, "
                                  f"original {original.mosaic.shape}")
    return psnr(rawio.normalized_mosaic(original.mosaic, meta),
                rawio.normalized_mosaic(rebuilt.mosaic, meta))


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadInputError(path, f"cannot read: {e.strerror}") from None


def _one_torch_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


# --- executors -------------------------------------------------------------------------

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _worker_init(parent_pid: int) -> None:
    global _GUARD
    for var in _THREAD_ENV:  # before numpy/torch load: one thread per worker process
        os.environ[var] = "1"
    _GUARD = threading.Lock()
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    """An orphaned worker (parent SIGKILLed) finishes its current pair, then exits."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    with _GUARD:
        os._exit(0)


class ProcessRunner:
    """Local worker processes (spawned: no inherited locks, threads or sqlite handles)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = self._new_pool()
        self.pool_of: dict = {}  # future -> the pool that ran it

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))

    def submit(self, task: dict):
        future = self.pool.submit(run_task, task)
        self.pool_of[future] = self.pool
        return future

    def wait_any(self, futures: list) -> set:
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(futures, return_when=FIRST_COMPLETED)[0]

    def outcome(self, future) -> dict:
        from concurrent.futures.process import BrokenProcessPool

        pool = self.pool_of.pop(future, None)
        try:
            return future.result()
        except BrokenProcessPool:
            if pool is self.pool:  # replace it once; its other in-flight tasks fail the same way
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = self._new_pool()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner:
    """The same tasks on a Dask cluster: an existing scheduler, or a loopback LocalCluster.

    Workers need rawmeta installed and the library at the same path (a shared filesystem).
    """

    def __init__(self, jobs: int, scheduler: str | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise BadInputError(None, "the dask executor needs `pip install rawmeta[distributed]`") from None
        self.cluster = None
        if scheduler is None:
            self.cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None,
                                        env={v: "1" for v in _THREAD_ENV})
            scheduler = self.cluster.scheduler_address
        try:
            self.client = Client(scheduler, timeout=30)
        except OSError as e:
            self.close()
            raise OutputError(None, f"cannot reach the Dask scheduler {scheduler}: {e}") from None

    def submit(self, task: dict):
        return self.client.submit(run_task, task, pure=False)

    def wait_any(self, futures: list) -> set:
        from distributed import wait

        return wait(futures, return_when="FIRST_COMPLETED").done

    def outcome(self, future) -> dict:
        return future.result()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if getattr(self, "client", None) is not None:
                self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def run_windowed(tasks: list[dict], runner, window: int, on_claim: Callable[[dict], None],
                 on_result: Callable[[dict, dict], None]) -> None:
    """Keep at most `window` tasks in flight (bounded memory, claims close to the work)."""
    todo = iter(tasks)
    inflight: dict = {}

    def fill():
        while len(inflight) < window and (task := next(todo, None)) is not None:
            on_claim(task)
            inflight[runner.submit(task)] = task

    fill()
    while inflight:
        for future in runner.wait_any(list(inflight)):
            task = inflight.pop(future)
            try:
                result = runner.outcome(future)
            except Exception as e:  # noqa: BLE001 - a crashed worker fails only its pairs
                result = {"raw": task["raw_rel"], "mode": task["mode"], "state": "failed",
                          "error": f"worker died ({type(e).__name__}: {e})".strip()}
            on_result(task, result)
        fill()


# --- trash -----------------------------------------------------------------------------

def _inside(path: str | Path, root: str | Path) -> bool:
    path, root = os.fspath(path), os.fspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def move_to_trash(root: Path, raw_rel: str) -> Path:
    """Move root/raw_rel to root/.rawmeta-trash/raw_rel; never through a symlink out of root."""
    real_root = os.path.realpath(root)
    src, dest = root / raw_rel, root / TRASH_NAME / raw_rel
    if not (_inside(os.path.realpath(src), real_root) and _inside(os.path.realpath(src.parent), real_root)):
        raise BadInputError(src, "leads outside the library (symlink); raw kept")
    if (root / TRASH_NAME).is_symlink():
        raise OutputError(root / TRASH_NAME, "is a symlink; raw kept")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(os.path.realpath(dest.parent), real_root):
        raise OutputError(dest, "trash folder leads outside the library; raw kept")
    if os.path.lexists(dest):
        raise OutputError(dest, "already in the trash; raw kept")
    os.rename(src, dest)
    return dest


# --- planning and running a batch ------------------------------------------------------

@dataclass
class Options:
    root: Path
    out: Path | None = None
    sidecar: bool = False
    jobs: int = 1
    render_missing: bool = False
    verify: bool = False
    min_psnr: float | None = None
    delete_raw: bool = False
    dry_run: bool = False
    executor: str = "process"  # or "dask"
    scheduler: str | None = None

    @property
    def mode(self) -> str:
        return "sidecar" if self.sidecar else "embed"

    @property
    def base(self) -> Path:
        """Where outputs and the manifest live."""
        return self.out if self.out is not None else self.root


@dataclass
class Report:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    trashed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # verified raws not trashed, and why
    lone_raws: list[str] = field(default_factory=list)
    planned: dict[str, int] = field(default_factory=dict)
    totals: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"pairs": len(self.done) + len(self.skipped) + len(self.failed),
                "done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed),
                "trashed": len(self.trashed), "raws_without_jpeg": len(self.lone_raws),
                "seconds": round(self.seconds, 3), **self.totals}


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _target(opts: Options, jpeg_rel: str) -> Path:
    path = opts.base / jpeg_rel
    return path.with_suffix(".rmeta") if opts.sidecar else path


def _make_task(opts: Options, pair: Pair, kind: str, replace: bool) -> dict:
    render = pair.jpeg is None
    jpeg_rel = pair.jpeg or Path(pair.raw).with_suffix(".jpg").as_posix()
    render_to = opts.base / jpeg_rel if render else None
    target = _target(opts, jpeg_rel)
    srgb_out = target if not opts.sidecar else (render_to or opts.root / jpeg_rel)
    return {"kind": kind, "raw_rel": pair.raw, "jpeg_rel": jpeg_rel, "mode": opts.mode,
            "raw": str(opts.root / pair.raw), "jpeg": None if render else str(opts.root / jpeg_rel),
            "render_to": str(render_to) if render else None, "target": str(target),
            "srgb_out": str(srgb_out), "sidecar": opts.sidecar, "replace": replace,
            "verify": opts.verify, "size": _size(opts.root / pair.raw)}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _trashable(opts: Options, row) -> bool:
    return (opts.delete_raw and row is not None and row["state"] == "verified"
            and row["verify_psnr"] is not None and row["verify_psnr"] >= opts.min_psnr)


def plan(opts: Options, lib: Library, manifest: Manifest | None, report: Report):
    """Split the library into encode and verify tasks, skips and failures.

    A raw is trashed only right after a verification in the same run: an old 'verified'
    row is verified again, since the JPEG may have been edited or stripped since.
    """
    tasks = []
    for pair in lib.pairs:
        if pair.error:
            report.failed[pair.raw] = pair.error
            continue
        if pair.jpeg is None and not opts.render_missing:
            report.lone_raws.append(pair.raw)
            continue
        row = manifest.get(pair.raw, opts.mode) if manifest else None
        state = row["state"] if row else None
        target = _target(opts, pair.jpeg or Path(pair.raw).with_suffix(".jpg").as_posix())
        if state in FINISHED and target.exists():
            if opts.verify and (state in ("done", "existing") or (opts.delete_raw and state == "verified")):
                tasks.append(_make_task(opts, pair, "verify", replace=False))
            else:
                report.skipped.append(pair.raw)
        else:
            tasks.append(_make_task(opts, pair, "encode", replace=state not in (None, "pending")))
    report.planned = {"encode": sum(t["kind"] == "encode" for t in tasks),
                      "verify": sum(t["kind"] == "verify" for t in tasks)}
    return tasks


def run_batch(opts: Options, on_start: Callable[[int, int], None] | None = None,
              progress: Callable[[dict, dict], None] | None = None) -> Report:
    """Convert the library. `on_start(n_tasks, raw_bytes)` is called once the work is planned,
    `progress(task, result)` after each pair."""
    started = time.perf_counter()
    report = Report()
    skip = [opts.out] if opts.out is not None else []
    lib = discover(opts.root, skip)
    if opts.dry_run:
        manifest_path = opts.base / MANIFEST_NAME
        manifest = Manifest(manifest_path, readonly=True) if manifest_path.exists() else None
        plan(opts, lib, manifest, report)
        report.seconds = time.perf_counter() - started
        return report
    opts.base.mkdir(parents=True, exist_ok=True)
    with run_lock(opts.base):
        for part in lib.stale_parts:  # left by a killed run; the lock says no run owns them
            with contextlib.suppress(OSError):
                part.unlink()
        manifest = Manifest(opts.base / MANIFEST_NAME)
        try:
            _execute(opts, lib, manifest, report, on_start, progress)
            report.totals = manifest.totals(opts.mode)
        finally:
            manifest.close()
    report.seconds = time.perf_counter() - started
    return report


def _execute(opts, lib, manifest, report, on_start, progress) -> None:
    _reconcile_trash(opts, manifest)
    for pair in lib.pairs:
        if pair.error:
            manifest.record(pair.raw, opts.mode, {"state": "failed", "jpeg": pair.jpeg, "error": pair.error})
    tasks = plan(opts, lib, manifest, report)
    if on_start is not None:
        on_start(len(tasks), sum(t["size"] for t in tasks))
    if not tasks:
        return

    def on_claim(task):
        target = os.path.relpath(task["target"], opts.base)
        manifest.claim(task["raw_rel"], opts.mode, task["jpeg_rel"], target)

    def on_result(task, result):
        _record(opts, manifest, report, task, result)
        if progress is not None:
            progress(task, result)

    runner = (DaskRunner(opts.jobs, opts.scheduler) if opts.executor == "dask"
              else ProcessRunner(opts.jobs))
    try:
        run_windowed(tasks, runner, 2 * opts.jobs, on_claim, on_result)
    finally:
        runner.close()


def _record(opts, manifest, report, task, result) -> None:
    raw_rel, state = task["raw_rel"], result["state"]
    values = {k: v for k, v in result.items() if k in _RESULT_COLUMNS}
    manifest.record(raw_rel, opts.mode, values)
    if state == "failed":
        report.failed[raw_rel] = result.get("error") or "failed"
    elif state == "existing":
        report.skipped.append(raw_rel)
    else:
        report.done.append(raw_rel)
    if state == "verified":
        if _trashable(opts, manifest.get(raw_rel, opts.mode)):
            _trash(opts, manifest, report, raw_rel)
        elif opts.delete_raw:
            report.kept[raw_rel] = (f"verified PSNR {result['verify_psnr']:.2f} dB "
                                    f"< --min-psnr {opts.min_psnr:g}")


def _trash(opts, manifest, report, raw_rel) -> bool:
    try:
        move_to_trash(opts.root, raw_rel)
    except (RawmetaError, OSError) as e:
        report.kept[raw_rel] = one_line_error(e)
        return False
    manifest.record(raw_rel, opts.mode, {"state": "trashed"})
    report.trashed.append(raw_rel)
    return True


def _reconcile_trash(opts, manifest) -> None:
    """A run killed between moving a raw and recording it: the trash says what happened."""
    rows = manifest.db.execute("SELECT raw FROM pairs WHERE mode=? AND state='verified'", (opts.mode,))
    for (raw_rel,) in rows.fetchall():
        if not os.path.lexists(opts.root / raw_rel) and os.path.lexists(opts.root / TRASH_NAME / raw_rel):
            manifest.record(raw_rel, opts.mode, {"state": "trashed"})
