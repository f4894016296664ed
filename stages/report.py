"""Stage report: the report page, its figures, layer-profile plot data and the headline metrics."""
from deepmouse.pipeline import run_report
from deepmouse.stage import run_stage

if __name__ == "__main__":
    run_stage("report", lambda a: run_report(a.db, a.out), "db", "out")
