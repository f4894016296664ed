"""Stage checks: Great Expectations suites and SQL checks; publishes the store only if all pass."""
from deepmouse.config import load_params
from deepmouse.pipeline import run_checks_stage
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("checks", lambda a: run_checks_stage(load_params(a.params), a.db, a.means, a.sql_checks, a.out, a.publish,
                                                   a.verdicts, a.published_files),
              "db", "means", "sql_checks", "out", "publish", "verdicts", "published_files")
