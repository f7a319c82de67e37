"""``run_batch(job) -> BatchResult``: optimise every account of a job, resumably.

Each account's result is keyed by a content hash of its inputs (portfolio bytes, market bytes,
the model's validated dump, the effective spec, the solver). A re-run skips every account whose
``result.json`` carries the same hash. Every file is written atomically (temporary file, then
``os.replace``) and ``result.json`` is written last, after the account's other files: a killed
run leaves accounts either done (with all their files) or not done, never half done.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError, MarginoptError
from ..margins import load_model
from ..rebalance import RebalanceSpec, load_spec
from ..reports import atomic_write_bytes, atomic_write_text
from ._job import Account, BatchJob, load_job, parse_overrides, resolve_accounts
from ._isolate import IsolatedRunner, failure_record
from ._worker import MarketRef, Task, market_from_bytes, run_account, run_chunk

log = logging.getLogger("marginopt.batch")

SUMMARY_COLUMNS = ["account", "status", "margin_before_usd", "margin_after_usd", "margin_saved_usd",
                   "margin_saved_pct", "n_trades", "solve_seconds", "error", "error_class", "input_hash"]
_HASH_VERSION = b"marginopt-batch-1\n"
_ACCOUNT_FILES = ("proposal.json", "proposal.md", "report.html")


@dataclass
class BatchResult:
    """What a run did. ``summary`` has one row per account of the job (``SUMMARY_COLUMNS``);
    ``computed`` lists the accounts optimised by this run, ``skipped`` those already up to date,
    ``pending`` those left for the next run (``max_accounts``)."""

    output_dir: Path
    summary: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: wall time of the optimisation itself (without reading inputs, starting a cluster, summaries)
    compute_seconds: float = 0.0
    workers: str = "in-process"
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def errors(self) -> pd.DataFrame:
        return self.summary[self.summary["status"] == "error"]

    @property
    def n_errors(self) -> int:
        return int((self.summary["status"] == "error").sum())

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        ok = s[s["status"].isin(["optimal", "no_trade", "restores_limits"])]
        return {
            "output_dir": str(self.output_dir), "accounts": int(len(s)),
            "computed": len(self.computed), "skipped": len(self.skipped),
            "pending": len(self.pending), "errors": self.n_errors,
            "by_status": {k: int(v) for k, v in s["status"].value_counts().items()},
            "margin_before_usd": float(ok["margin_before_usd"].sum()),
            "margin_after_usd": float(ok["margin_after_usd"].sum()),
            "margin_saved_usd": float(ok["margin_saved_usd"].sum()),
            "seconds": self.seconds, "compute_seconds": self.compute_seconds,
            "workers": self.workers,
            "files": {k: str(v) for k, v in self.paths.items()},
        }


# --------------------------------------------------------------------------- inputs
def _sha(*parts: bytes) -> str:
    h = hashlib.sha256(_HASH_VERSION)
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _read(path: Path, what: str, field_name: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", source=str(path), field=field_name) from None
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.strerror})", source=str(path), field=field_name) from None


@dataclass
class _Prepared:
    index: int                                # position in the job's account list
    account: Account
    task: Task | None = None
    record: dict[str, Any] | None = None      # an error found before running


def _prepare(index: int, acc: Account, base_spec: RebalanceSpec, common: str) -> _Prepared:
    """Read the account's book, build its effective spec and hash; errors become its record."""
    try:
        if acc.problem:
            raise InputError(acc.problem)
        assert acc.portfolio is not None
        book = _read(acc.portfolio, "portfolio file", "portfolio")
        spec = base_spec
        if acc.spec_file is not None:
            spec = RebalanceSpec.from_file(acc.spec_file)
        if acc.spec_overrides:
            overrides = parse_overrides(acc.spec_overrides, acc.where)
            spec = RebalanceSpec.from_dict({**spec.model_dump(), **overrides},
                                           source=f"{acc.where} (spec_overrides)")
        spec_key = spec.model_dump_json()
        digest = _sha(common.encode(), acc.portfolio.suffix.lower().encode(), book, spec_key.encode())
        return _Prepared(index, acc, Task(acc.name, book, str(acc.portfolio), spec, spec_key, digest))
    except Exception as exc:  # noqa: BLE001 - one account's bad inputs never stop the others
        text = str(exc).strip().splitlines()
        msg = text[0] if text else type(exc).__name__
        if not isinstance(exc, MarginoptError):
            msg = f"{acc.where or acc.name}: {type(exc).__name__}: {msg}"
        return _Prepared(index, acc, record={
            "account": acc.name, "status": "error", "error": msg,
            "error_class": type(exc).__name__, "input_hash": "", "final": False})


def _done(folder: Path, digest: str, reports: bool) -> dict[str, Any] | None:
    """The stored record if the account is up to date for these inputs."""
    try:
        record = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("input_hash") != digest or not record.get("final", False):
        return None
    if record.get("status") != "error":
        needed = ["proposal.json", "proposal.md"] + (["report.html"] if reports else [])
        if not all((folder / n).exists() for n in needed):
            return None
    return record


# --------------------------------------------------------------------------- output
class _RunLog:
    """Appends timestamped lines to run.log (flushed per line) and mirrors them to the logger."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", buffering=1, encoding="utf-8")

    def __call__(self, msg: str, level: int = logging.INFO) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        self._fh.write(f"{stamp} {msg}\n")
        log.log(level, msg)

    def close(self) -> None:
        self._fh.close()


def _store(out: Path, result: Mapping[str, Any], reports: bool) -> dict[str, Any]:
    record = dict(result["record"])
    folder = out / "accounts" / record["account"]
    (folder / "result.json").unlink(missing_ok=True)   # not done until the new record lands
    files = result["files"]
    for name in _ACCOUNT_FILES:
        if name in files:
            atomic_write_text(folder / name, files[name])
        elif record["status"] == "error" or (name == "report.html" and not reports):
            (folder / name).unlink(missing_ok=True)     # no stale proposal from older inputs
    record["written_at"] = datetime.now(timezone.utc).isoformat()
    atomic_write_text(folder / "result.json", json.dumps(record, indent=1))
    return record


def _describe(record: Mapping[str, Any]) -> str:
    if record["status"] == "error":
        return f"error {record.get('error_class')}: {record.get('error')}"
    return (f"{record['status']}, saved {record['margin_saved_usd']:,.2f} USD "
            f"({record['margin_saved_pct']:.2f}%), {record['n_trades']} trades, "
            f"{record['solve_seconds']:.2f} s")


def summary_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([{c: r.get(c) for c in SUMMARY_COLUMNS} for r in records],
                         columns=SUMMARY_COLUMNS)
    for c in ("margin_before_usd", "margin_after_usd", "margin_saved_usd", "margin_saved_pct",
              "solve_seconds"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    frame["n_trades"] = pd.to_numeric(frame["n_trades"], errors="coerce").astype("Int64")
    for c in ("account", "status", "error", "error_class", "input_hash"):
        frame[c] = frame[c].fillna("").astype(str)
    return frame


def _write_summary(out: Path, frame: pd.DataFrame) -> dict[str, Path]:
    paths = {"summary_csv": out / "summary.csv", "summary_parquet": out / "summary.parquet",
             "chart": out / "margin_saved.png", "log": out / "run.log"}
    atomic_write_text(paths["summary_csv"], frame.to_csv(index=False))
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(paths["summary_parquet"], buf.getvalue())
    atomic_write_bytes(paths["chart"], margin_saved_chart(frame))
    return paths


def margin_saved_chart(frame: pd.DataFrame) -> bytes:
    """Margin saved per account (USD), largest first; errors counted in the title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = frame[frame["margin_saved_usd"].notna()].sort_values("margin_saved_usd", ascending=False)
    n_err = int((frame["status"] == "error").sum())
    n_pending = int((frame["status"] == "pending").sum())
    saved = ok["margin_saved_usd"].to_numpy(dtype=float)
    colours = np.where(saved >= 0, "#1a4f8b", "#c62828")
    few = len(ok) <= 40
    fig = Figure(figsize=(11, max(3.0, 0.28 * len(ok) + 1.2)) if few else (12, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if few:
        y = np.arange(len(ok))[::-1]
        ax.barh(y, saved, color=colours)
        ax.set_yticks(y, ok["account"].tolist(), fontsize=8)
        ax.set_xlabel("initial margin saved (USD)")
        ax.grid(axis="x", alpha=0.3)
    else:
        x = np.arange(len(ok))
        ax.bar(x, saved, width=1.0, color=colours)
        ax.set_xlim(-1, len(ok))
        ax.set_xticks([])
        ax.set_xlabel(f"{len(ok)} accounts, largest saving first")
        ax.set_ylabel("initial margin saved (USD)")
        ax.grid(axis="y", alpha=0.3)
        top = ok.head(5)
        text = "largest:\n" + "\n".join(f"{a}  {v:,.0f}" for a, v in
                                        zip(top["account"], top["margin_saved_usd"]))
        ax.text(0.985, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=8,
                family="monospace", bbox=dict(facecolor="white", edgecolor="#cccccc"))
    if few:
        ax.axvline(0, color="black", lw=0.6)
    else:
        ax.axhline(0, color="black", lw=0.6)
    extra = "".join([f", {n_err} in error" if n_err else "", f", {n_pending} pending" if n_pending else ""])
    (ax.xaxis if few else ax.yaxis).set_major_formatter(lambda v, _: f"{v:,.0f}")
    ax.set_title(f"Margin saved per account: {np.nansum(saved):,.0f} USD in all over {len(ok)} "
                 f"accounts{extra}", loc="left", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------- the run
def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="account", desc="batch", file=sys.stderr, dynamic_ncols=True)


def run_batch(job: BatchJob | str | Path | Mapping[str, Any], workers: int | None = None,
              scheduler: str | None = None, *, max_accounts: int | None = None,
              progress: bool | None = None,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> BatchResult:
    """Optimise every account of ``job`` (a ``BatchJob``, a job YAML path or a dict).

    In-process by default; ``workers=N`` starts a local Dask cluster of N single-threaded worker
    processes, ``scheduler`` connects to a running one (its workers import marginopt; inputs are
    sent as bytes, so they need not see the job's files). ``max_accounts`` computes at most that
    many accounts in this run (the others are reported ``pending`` and done by the next run).
    ``progress``: a tqdm bar (default: when stderr is a terminal). ``on_result`` is called with
    each account's record as it is stored."""
    t_start = time.perf_counter()
    job = load_job(job)
    if workers is not None and scheduler is not None:
        raise InputError("give --workers (a local cluster) or --scheduler (an existing one), not both",
                         field="workers")
    if workers is not None and workers < 1:
        raise InputError("workers must be at least 1", field="workers", value=workers)
    out = job.path(job.output_dir)
    assert out is not None
    market_path = job.path(job.market)
    assert market_path is not None
    options = tuple((k, v) for k, v in (("valuation_time", job.valuation_time),
                                        ("index_prices", job.index_prices)) if v is not None)
    market_bytes = _read(market_path, "market snapshot file", "market")
    opt_bytes = json.dumps([[k, str(v) if k == "valuation_time" else v] for k, v in options],
                           sort_keys=True).encode()
    market = MarketRef(_sha(market_bytes, opt_bytes), market_bytes, str(market_path), options)
    snap = market_from_bytes(market)                     # a bad market stops the job: exit 2
    model = load_model(job.model_ref, scenario_matrix=job.path(job.scenarios),
                       covariance=job.path(job.covariance))
    model_key = model.model_dump_json()
    inputs_bytes = b"".join(_read(p, "model input file", f) for p, f in
                            ((job.path(job.scenarios), "scenarios"), (job.path(job.covariance), "covariance"))
                            if p is not None)
    base_spec = load_spec(job.path(job.spec))
    common = _sha(market.key.encode(), model_key.encode(), inputs_bytes,
                  (job.solver or "").encode())
    accounts = resolve_accounts(job)

    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    for stale in [*out.glob(".*.tmp"), *out.glob("accounts/*/.*.tmp")]:
        stale.unlink(missing_ok=True)      # left by a killed run; never read as results
    runlog = _RunLog(out / "run.log")
    where = (f"scheduler {scheduler}" if scheduler else
             f"local Dask cluster of {workers} workers" if workers else "in-process")
    records: dict[int, dict[str, Any]] = {}      # by position in the account list
    prepared: list[_Prepared] = []
    skipped: list[str] = []
    try:
        for i, acc in enumerate(accounts):
            p = _prepare(i, acc, base_spec, common)
            if p.task is not None:
                previous = _done(out / "accounts" / acc.name, p.task.input_hash, job.reports)
                if previous is not None:
                    records[i] = previous
                    skipped.append(acc.name)
                    continue
            prepared.append(p)
        todo = [p for p in prepared if p.task is not None]
        pending: list[str] = []
        if max_accounts is not None and len(todo) > max_accounts:
            for p in todo[max_accounts:]:
                pending.append(p.account.name)
                records[p.index] = {"account": p.account.name, "status": "pending"}
            todo = todo[:max_accounts]
        index_of = {p.task.account: p.index for p in todo if p.task is not None}
        runlog(f"run start: marginopt {__version__}, {len(accounts)} accounts, model {model.name}, "
               f"market {market_path} ({snap.valuation_time:%Y-%m-%d %H:%M} UTC), {where}; "
               f"{len(skipped)} up to date, {len(todo)} to compute"
               + (f", {len(pending)} left for a later run" if pending else ""))
        for w in snap.warnings:                          # implausible but possible data
            runlog(f"warning: {w}", logging.WARNING)
        bar = _progress(len(todo) + sum(1 for p in prepared if p.task is None), progress)
        computed: list[str] = []
        done_count = [0]
        total = len(todo)

        def store(result: Mapping[str, Any], index: int | None = None, counted: bool = True,
                  write: bool = True) -> None:
            record = _store(out, result, job.reports) if write else dict(result["record"])
            records[index_of[record["account"]] if index is None else index] = record
            if counted:
                computed.append(record["account"])
                done_count[0] += 1
            runlog(f"{'computed' if counted else 'rejected'} {record['account']}"
                   + (f" [{done_count[0]}/{total}]" if counted else "") + f": {_describe(record)}")
            if bar is not None:
                bar.update(1)
            if on_result is not None:
                on_result(record)

        for p in prepared:                               # rows unusable before running
            if p.record is not None:
                # a row rejected for its own fields (no name, a name used twice or unfit for a
                # folder) is reported in the summary only: it must not touch another's folder
                store({"record": p.record, "files": {}}, index=p.index, counted=False,
                      write=p.account.problem is None)

        tasks = [p.task for p in todo if p.task is not None]
        compute = [0.0]
        if tasks and workers is None and scheduler is None:
            t0 = time.perf_counter()
            _run_isolated(tasks, market, model, model_key, job, store, lock)
            compute[0] = time.perf_counter() - t0
        elif tasks:
            compute[0] = _run_dask(tasks, market, model, model_key, job, workers, scheduler, store,
                                   runlog)
        if bar is not None:
            bar.close()
        frame = summary_frame(records.get(i, {"account": a.name, "status": "pending"})
                              for i, a in enumerate(accounts))
        paths = _write_summary(out, frame)
        seconds = time.perf_counter() - t_start
        n_err = int((frame["status"] == "error").sum())
        runlog(f"run end: computed {len(computed)}, skipped {len(skipped)} up to date, "
               f"{len(pending)} pending, {n_err} accounts in error; {seconds:.1f} s"
               + (f" ({len(computed) / seconds:.2f} accounts/s)" if computed else ""))
        return BatchResult(out, frame, computed, skipped, pending, seconds, compute[0], where, paths)
    except BaseException as exc:
        runlog(f"run stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
               logging.ERROR)
        raise
    finally:
        runlog.close()
        lock.close()


def _is_daemon() -> bool:
    """Run on each Dask worker: whether it may not start child processes."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


def _dask_failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _dask_error_record(task: Task, exc: BaseException) -> dict[str, Any]:
    """The record of an account whose own Dask task failed (its worker died, or the task was
    lost), in plain words. Not final: the next run tries it again."""
    from distributed.scheduler import KilledWorker

    if isinstance(exc, KilledWorker):
        return failure_record(
            task, f"{task.source}: the Dask worker optimising this account died (a crash inside a "
                  "solver or a native library, or out of memory); the other accounts were not "
                  "affected and the next run tries this one again", "AccountCrashed", 0.0)
    return failure_record(
        task, f"{task.source}: the Dask task optimising this account failed ({_dask_failure(exc)}); "
              "the other accounts were not affected and the next run tries this one again",
        "AccountFailed", 0.0)


def _run_isolated(tasks: list[Task], market: MarketRef, model, model_key: str, job: BatchJob,
                  store, lock) -> None:
    """In-process: each account in a child process (see ``_isolate``), so a native crash or a
    time-out is that account's error; directly when this process may not start children."""
    import multiprocessing

    if multiprocessing.current_process().daemon:   # e.g. run_batch called inside a Dask worker
        for task in tasks:
            store(run_account(task, market, model, model_key, job.solver, job.reports))
        return
    with IsolatedRunner(market, model, model_key, job.solver, job.reports,
                        job.account_time_limit_s, close_fds=(lock.fileno(),)) as runner:
        for task in tasks:
            store(runner.run(task))


def _lock(out: Path):
    """Hold ``run.lock`` for the run: a second run of the same job (an overlapping cron start)
    stops at once instead of racing the first. The OS drops the lock if the process dies."""
    fh = open(out / "run.lock", "a+")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise MarginoptError(f"{out}: another batch run is writing to this output folder "
                             "(run.lock is held); wait for it to finish") from None
    return fh


def _chunks(tasks: list[Task], n_workers: int, size: int | None) -> list[list[Task]]:
    if size is None:
        size = max(1, min(25, math.ceil(len(tasks) / max(4 * n_workers, 1))))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def _run_dask(tasks: list[Task], market: MarketRef, model, model_key: str, job: BatchJob,
              workers: int | None, scheduler: str | None, store, runlog) -> float:
    """Run the chunks on Dask, storing results as they come; returns the seconds from the
    cluster being ready to the last result."""
    import distributed
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is not None:
        client = Client(scheduler, timeout="30s")
    else:
        import dask
        # a task whose worker dies is not retried on the next worker: its chunk is re-run one
        # account per task instead (below), so a crashing account takes no other down with it
        # workers that may start children: each runs its accounts in a child process with the
        # job's time limit, as in-process runs do (see run_chunk)
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        n = len(client.scheduler_info(n_workers=-1)["workers"]) or (workers or 1)
        chunks = _chunks(tasks, n, job.chunk_size)
        runlog(f"dask {distributed.__version__}: {n} workers, {len(chunks)} tasks of up to "
               f"{len(chunks[0])} accounts")
        daemonic = [w for w, d in client.run(_is_daemon).items() if d]
        if daemonic:
            runlog(f"{len(daemonic)} of the cluster's workers are daemonic processes, which may not "
                   "start children: their accounts run without account_time_limit_s (start workers "
                   "with DASK_DISTRIBUTED__WORKER__DAEMON=False)", logging.WARNING)
        t0 = time.perf_counter()
        market_f = client.scatter(market, broadcast=True, hash=False)
        model_f = client.scatter(model, broadcast=True, hash=False)

        def submit(chunk: list[Task]):
            return client.submit(run_chunk, chunk, market_f, model_f, model_key, job.solver,
                                 job.reports, job.account_time_limit_s, pure=False)

        futures = {submit(chunk): chunk for chunk in chunks}
        pending = as_completed(list(futures))
        for fut in pending:
            chunk = futures.pop(fut)
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its chunk, not the run
                fut.release()
                if len(chunk) > 1:   # find the account at fault: each of the chunk on its own
                    runlog(f"a Dask task of {len(chunk)} accounts failed ({_dask_failure(exc)}); "
                           "running them one per task", logging.WARNING)
                    for task in chunk:
                        f = submit([task])
                        futures[f] = [task]
                        pending.add(f)
                    continue
                results = [_dask_error_record(chunk[0], exc)]
            for r in results:
                store(r)
            fut.release()
        return time.perf_counter() - t0
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
