import numpy as np

from tlseg.analysis.metrics import average_precision
from tlseg.io.imagej import imagej_to_labels, labels_to_imagej
from tlseg.synthetic import synthetic_field


def test_imagej_round_trip(tmp_path):
    lab = synthetic_field((128, 128), diameter=24, seed=2)["labels"]
    n = labels_to_imagej(lab, tmp_path / "RoiSet.zip")
    assert n == len(np.unique(lab)) - 1
    back = imagej_to_labels(tmp_path / "RoiSet.zip", lab.shape)
    s = average_precision(lab, back)
    assert s["ap75"] > 0.9 and s["n_pred"] == n
