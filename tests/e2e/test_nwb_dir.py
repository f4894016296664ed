"""`data.source: nwb_dir`: a folder of Brain Observatory NWB files, and what it refuses.

The whole pipeline on such a folder (nested, files renamed) is the null run of test_null.py,
which reads its recordings from one.
"""

import shutil

import pytest

from deepmouse.config import parse_params
from deepmouse.errors import SourceError
from deepmouse.pipeline import run_pull

pytestmark = pytest.mark.slow

SMALL = {"experiments_per_area": 1, "neurons_per_experiment": 20, "n_repeats": 20, "image_height": 92,
         "image_width": 118}


@pytest.fixture(scope="module")
def nwb_folder(tmp_path_factory):
    """Allen-layout NWB files in a nested folder, as a user's own download would be."""
    params = parse_params({"data": {"simulated": SMALL}})
    staging = tmp_path_factory.mktemp("staging")
    run_pull(params, staging, progress=lambda _: None)
    folder = tmp_path_factory.mktemp("my_allen_downloads")
    for i, nwb in enumerate(sorted(staging.glob("*.nwb"))):
        target = folder / f"batch{i % 2}" / f"ophys_{nwb.name}"
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(nwb, target)
    return folder


def test_empty_folder_and_duplicate_experiments_are_named(tmp_path, nwb_folder):
    (tmp_path / "empty").mkdir()
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(tmp_path / "empty")}})
    with pytest.raises(SourceError, match=r"data\.nwb_dir: no \.nwb files in .*empty"):
        run_pull(params, tmp_path / "out")
    doubled = tmp_path / "doubled"
    shutil.copytree(nwb_folder, doubled)
    first = sorted(doubled.glob("**/*.nwb"))[0]
    shutil.copy2(first, doubled / "copy_of_first.nwb")
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(doubled)}})
    with pytest.raises(SourceError, match="two files hold experiment"):
        run_pull(params, tmp_path / "out2", progress=lambda _: None)
