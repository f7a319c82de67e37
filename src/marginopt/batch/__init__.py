"""Scheduled batch jobs: optimise many accounts from one job file, resumably, in-process or on Dask.

    from marginopt.batch import run_batch
    result = run_batch("job.yaml", workers=4)
    result.summary            # one row per account
"""

from ._job import Account, BatchJob, load_job, resolve_accounts
from ._run import SUMMARY_COLUMNS, BatchResult, margin_saved_chart, run_batch, summary_frame

__all__ = ["Account", "BatchJob", "BatchResult", "SUMMARY_COLUMNS", "load_job",
           "margin_saved_chart", "resolve_accounts", "run_batch", "summary_frame"]
