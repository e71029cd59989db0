import numpy as np
import pytest
import tifffile
import torch

from tlseg.cli import main
from tlseg.config import ModelConfig, TrainConfig
from tlseg.errors import TlsegError
from tlseg.model import Model
from tlseg.synthetic import synthetic_field
from tlseg.train import load_folders, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "images").mkdir()
    (d / "masks").mkdir()
    for i in range(4):
        f = synthetic_field((128, 128), diameter=24, seed=100 + i)
        tifffile.imwrite(d / "images" / f"s{i}.tif", f["tl"])
        tifffile.imwrite(d / "masks" / f"s{i}.tif", f["labels"].astype(np.uint16))
    return d


TINY = ModelConfig(name="tiny", channels=(8, 16))
TC = TrainConfig(epochs=1, steps_per_epoch=6, batch_size=2, crop=64, checkpoint_every=2,
                 holdout_fraction=0.25)


def test_train_cli_smoke(data_dir, tmp_path, capsys):
    rc = main(["train", str(data_dir), "-o", str(tmp_path / "m"), "--epochs", "1",
               "--steps-per-epoch", "3", "--batch-size", "2", "--canonical-diameter", "20"])
    assert rc == 0
    model = Model.from_folder(tmp_path / "m")
    assert model.card["n_train_images"] == 3 and model.card["n_holdout_images"] == 1
    assert model.config.canonical_diameter == 20
    assert (tmp_path / "m" / "train_log.csv").read_text().count("\n") >= 2
    assert not (tmp_path / "m" / "checkpoint.pt").exists()


def test_interrupted_training_resumes_to_the_same_weights(data_dir, tmp_path, monkeypatch):
    # one thread: multi-threaded conv backward sums in a varying order (tiny float noise)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    torch.use_deterministic_algorithms(True)
    samples = load_folders([data_dir], canonical_diameter=TINY.canonical_diameter)
    ref = train(samples, tmp_path / "ref", model_config=TINY, train_config=TC)

    def stop_at_3(step, total, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(samples, tmp_path / "run", model_config=TINY, train_config=TC, progress=stop_at_3)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "weights.pt").exists()
    with pytest.raises(TlsegError, match="--resume"):
        train(samples, tmp_path / "run", model_config=TINY, train_config=TC)
    resumed = train(samples, tmp_path / "run", model_config=TINY, train_config=TC, resume=True)
    monkeypatch.undo()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    for a, b in zip(ref.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_training_data_errors(tmp_path):
    with pytest.raises(TlsegError, match="not a training data folder"):
        load_folders([tmp_path], canonical_diameter=30)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(TlsegError, match="no mask"):
        load_folders([tmp_path], canonical_diameter=30)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.zeros((30, 32), np.uint16))
    with pytest.raises(TlsegError, match="differs from the image"):
        load_folders([tmp_path], canonical_diameter=30)
