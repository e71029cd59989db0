"""OME-Zarr plates: read a plate written by ome-zarr-py's own writer, convert folders,
write labels and the per-cell table back, and open the result with ome-zarr's Reader
and napari-ome-zarr."""

import json
import warnings

import dask
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr.format import FormatV04, FormatV05
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader
from ome_zarr.reader import Plate as PlateSpec
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

import tlseg
from tlseg.cli import main
from tlseg.errors import TlsegError
from tlseg.plate.layout import scan_plate
from tlseg.plate.zarr import field_of, read_channel, write_field_results


def _omero(names):
    window = {"start": 0.0, "end": 4000.0, "min": 0.0, "max": 65535.0}
    return {"channels": [{"label": n, "color": "FFFFFF", "window": window} for n in names]}


def write_with_ome_zarr(folder_plate, out, fmt=None):
    """The folder plate's sites as an OME-Zarr plate written by ome-zarr-py's writer
    alone (NGFF 0.5 unless ``fmt``): columns named ``1``, ``2`` (not ``01``), fields
    ``c, z, y, x`` with one plane, channels named in omero."""
    fmt = fmt or FormatV05()
    plate = scan_plate(folder_plate)
    sites, _ = plate.sites(["w1", "w2"])
    wells = sorted({s.well for s in sites})
    rows = sorted({w[0] for w in wells})
    cols = sorted({str(int(w[1:])) for w in wells}, key=int)
    root = zarr.open_group(str(out), mode="w", zarr_format=fmt.zarr_format)
    write_plate_metadata(root, rows, cols, [f"{w[0]}/{int(w[1:])}" for w in wells], fmt=fmt)
    for well in wells:
        group = root.require_group(f"{well[0]}/{int(well[1:])}")
        mine = [s for s in sites if s.well == well]
        write_well_metadata(group, [{"path": str(i)} for i in range(len(mine))], fmt=fmt)
        for i, s in enumerate(mine):
            stack = np.stack([tifffile.imread(s.paths[c]) for c in ("w1", "w2")])[:, None]
            with dask.config.set(scheduler="synchronous"):
                write_image(stack, group.require_group(str(i)), scale_factors=[], fmt=fmt,
                            axes="czyx", omero=_omero(["w1", "w2"]))
    return out


@pytest.fixture
def tiny(tmp_path):
    """A 4-well, 2-site demo folder plate of 64x64 fields."""
    return tlseg.make_demo_plate(tmp_path / "demo", replicates=1, sites=2, size=64)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_convert_keeps_wells_sites_channel_names_and_pixels(tiny, tmp_path, version):
    out = tlseg.convert_plate(tiny["plate"], tmp_path / "p.zarr", ngff_version=version,
                              pixel_size=0.65)
    plate = scan_plate(out)
    assert plate.layout == "ome-zarr"
    assert plate.wells == ["A01", "B01", "C01", "D01"] and plate.channels == ["w1", "w2"]
    sites, problems = plate.sites(["w1", "w2"])
    assert [s.key for s in sites][:2] == ["A01_s1", "A01_s2"] and len(sites) == 8
    assert problems == []
    for s in sites[:3]:
        for ch in ("w1", "w2"):
            tif = tiny["plate"] / f"demo_{s.well}_s{s.site}_{ch}.tif"
            np.testing.assert_array_equal(read_channel(s.paths[ch]), tlseg.read_image(tif))
    # the NGFF version asked for, the pixel size, and ome-zarr's Reader sees the plate
    loc = parse_url(str(out), fmt=FormatV04() if version == "0.4" else FormatV05())
    assert loc.version == version
    attrs = loc.create("B/01/1").root_attrs
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] \
        == [1.0, 0.65, 0.65]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["w1", "w2"]
    node = next(Reader(loc)())
    assert any(isinstance(spec, PlateSpec) for spec in node.specs)
    # never over an existing plate, never half a plate
    with pytest.raises(TlsegError, match="already exists"):
        tlseg.convert_plate(tiny["plate"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "p.zarr"]


def test_a_plate_from_ome_zarrs_own_writer_reads_like_the_folder(tiny, tmp_path):
    out = write_with_ome_zarr(tiny["plate"], tmp_path / "w.zarr")
    plate = scan_plate(out)
    folder = scan_plate(tiny["plate"])
    assert plate.wells == folder.wells and plate.channels == ["w1", "w2"]
    zs, _ = plate.sites(["w1", "w2"])
    fs, _ = folder.sites(["w1", "w2"])
    assert [s.key for s in zs] == [s.key for s in fs]
    for z, f in zip(zs, fs):
        np.testing.assert_array_equal(read_channel(z.paths["w2"]), tlseg.read_image(f.paths["w2"]))
    # an unknown channel is refused as for a folder, naming the plate's channels
    with pytest.raises(TlsegError, match="channels found: w1, w2"):
        plate.resolve_channel("DAPI")


def test_a_field_with_several_planes_is_refused_in_one_line(tmp_path):
    fmt = FormatV05()
    root = zarr.open_group(str(tmp_path / "z.zarr"), mode="w", zarr_format=3)
    write_plate_metadata(root, ["A"], ["1"], ["A/1"], fmt=fmt)
    well = root.require_group("A/1")
    write_well_metadata(well, [{"path": "0"}], fmt=fmt)
    with dask.config.set(scheduler="synchronous"):
        write_image(np.zeros((1, 2, 3, 32, 32), np.uint16), well.require_group("0"),
                    scale_factors=[], fmt=fmt, axes="tczyx", omero=_omero(["tl", "dapi"]))
    plate = scan_plate(tmp_path / "z.zarr")
    assert plate.channels == ["dapi", "tl"]
    path = plate.files.set_index("channel").loc["tl", "path"]
    with pytest.raises(TlsegError) as err:
        read_channel(path)
    msg = str(err.value)
    assert "\n" not in msg and "(1, 2, 3, 32, 32)" in msg and "3 z-planes" in msg


def test_not_a_plate_and_write_zarr_on_a_folder_are_clear_errors(tiny, tmp_path, capsys):
    img = zarr.open_group(str(tmp_path / "image.zarr"), mode="w", zarr_format=2)
    with dask.config.set(scheduler="synchronous"):
        write_image(np.zeros((32, 32), np.uint8), img, scale_factors=[], fmt=FormatV04(),
                    axes="yx")
    with pytest.raises(TlsegError, match="an image, not an OME-Zarr HCS plate"):
        scan_plate(tmp_path / "image.zarr")
    with pytest.raises(TlsegError, match="needs an OME-Zarr plate"):
        tlseg.run_plate(tiny["plate"], tmp_path / "out", tl_channel="w1", write_zarr=True)
    assert not (tmp_path / "out").exists()


def test_labels_and_table_written_into_a_field_open_in_ome_zarr_and_napari(tiny, tmp_path):
    out = tlseg.convert_plate(tiny["plate"], tmp_path / "p.zarr", pixel_size=0.5)
    site = scan_plate(out).sites(["w1", "w2"])[0][0]
    field = field_of(site.paths["w1"])
    cells = np.zeros((64, 64), np.int32)
    cells[4:20, 4:20], cells[30:50, 30:50] = 1, 2
    nuclei = (cells > 0).astype(np.int32)
    table = pd.DataFrame({"well": "A01", "site": 1, "label": [1, 2], "area": [256.0, 400.0]})
    for _ in range(2):  # a resumed run writes the site again: nothing doubles
        write_field_results(field, cells=cells, nuclei=nuclei, table=table)
    assert zarr.open_group(str(field / "labels")).attrs["labels"] == ["cells", "nuclei"]
    nodes = list(Reader(parse_url(str(field / "labels" / "cells"), fmt=FormatV04()))())
    label = next(n for n in nodes if any(isinstance(s, Label) for s in n.specs)
                 and n.zarr.basename() == "cells")
    np.testing.assert_array_equal(np.asarray(label.data[0]), cells)
    ms = label.zarr.root_attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.5]
    tattrs = zarr.open_group(str(field / "tables" / "cells")).attrs.asdict()
    assert tattrs["type"] == "feature_table" and tattrs["region"] == {"path": "../labels/cells"}
    pd.testing.assert_frame_equal(pd.read_parquet(field / "tables" / "cells" / "table.parquet"),
                                  table)
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr._reader")
    reader = napari_ome_zarr.napari_get_reader(str(out))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = reader(str(out))
    kinds = [kind for _, _, kind in layers]
    assert kinds.count("labels") == 2 and "image" in kinds


def test_plate_convert_on_the_command_line(tiny, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert main(["plate", "convert", str(tiny["plate"]), "-o", str(out), "--layout",
                 "imagexpress", "--ngff-version", "0.5"]) == 0
    assert "OME-Zarr plate written" in capsys.readouterr().out
    assert json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    assert main(["plate", "convert", str(tiny["plate"]), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


# -- plate runs (Dask) -----------------------------------------------------------------

SETTINGS = {"tl_channel": "w1", "nuclei_channel": "w2", "diameter": 28.0,
            "nuclei_diameter": 14.0, "workers": 1, "threads": 1}


@pytest.fixture(scope="module")
def folder_run(plate, tmp_path_factory):
    """The 2x2-well demo plate run from its folder."""
    return tlseg.run_plate(plate["plate"], tmp_path_factory.mktemp("folder") / "out",
                           **SETTINGS)


@pytest.mark.slow
def test_ome_zarr_plate_runs_to_the_folders_counts_and_gets_its_labels(plate, folder_run,
                                                                       tmp_path):
    zplate = write_with_ome_zarr(plate["plate"], tmp_path / "plate.zarr")
    result = tlseg.run_plate(zplate, tmp_path / "out", write_zarr=True, **SETTINGS)
    assert result["failed"] == [] and result["record"]["layout"] == "ome-zarr"
    cols = ["well", "n_sites", "n_cells", "n_nuclei"]
    pd.testing.assert_frame_equal(result["wells"][cols], folder_run["wells"][cols])
    assert result["wells"]["well"].tolist() == ["A01", "A02", "B01", "B02"]
    # every field has its labels, matching the run's masks, and its table
    sites = result["sites"].set_index("key")
    for key, rec in sites.iterrows():
        well, site = key.split("_s")
        field = zplate / well[0] / str(int(well[1:])) / str(int(site) - 1)
        loc = parse_url(str(field / "labels" / "cells"), fmt=FormatV05())
        node = next(n for n in Reader(loc)() if n.zarr.basename() == "cells")
        labels = np.asarray(node.data[0])
        assert labels.shape == (1, 192, 192)  # the field's z axis, less c
        assert len(np.unique(labels)) - 1 == rec["n_cells"]
        mask = tlseg.read_labels(tmp_path / "out" / "masks" / f"{key}_nuclei.tif")
        nuclei = zarr.open_array(str(field / "labels" / "nuclei" / "0"), mode="r")[0]
        np.testing.assert_array_equal(nuclei, mask)
        cells = pd.read_parquet(field / "tables" / "cells" / "table.parquet")
        assert len(cells) == rec["n_cells"]
    # a second run with --write-zarr has nothing left to do
    again = tlseg.run_plate(zplate, tmp_path / "out", write_zarr=True, **SETTINGS)
    assert again["processed"] == 0


@pytest.mark.slow
def test_converted_plate_runs_from_the_command_line_with_write_zarr(plate, folder_run,
                                                                   tmp_path, capsys):
    zplate = tmp_path / "conv.zarr"
    assert main(["plate", "convert", str(plate["plate"]), "-o", str(zplate)]) == 0
    out = tmp_path / "out"
    # first without --write-zarr: sites done; then with it, they are done again into
    # the plate, with the same counts
    args = ["plate", "run", str(zplate), "-o", str(out), "--tl-channel", "w1",
            "--nuclei-channel", "w2", "--workers", "1", "--threads", "1", "--diameter", "28",
            "--nuclei-diameter", "14"]
    assert main(args) == 0
    assert not (zplate / "A" / "01" / "0" / "labels").exists()
    assert main([*args, "--write-zarr"]) == 0
    assert "8 site(s) segmented this run" in capsys.readouterr().out
    wells = pd.read_csv(out / "wells.csv")
    cols = ["well", "n_cells", "n_nuclei"]
    pd.testing.assert_frame_equal(wells[cols], folder_run["wells"][cols])
    napari_ome_zarr = pytest.importorskip("napari_ome_zarr._reader")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = napari_ome_zarr.napari_get_reader(str(zplate))(str(zplate))
    labels = [data for data, _, kind in layers if kind == "labels"]
    assert len(labels) == 2 and labels[0][0].shape == (2 * 192, 2 * 192)  # the 2x2 wells
