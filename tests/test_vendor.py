"""ImageXpress plates read from the instrument's metadata: the HTD file beside a plate
folder, and MetaXpress acquisitions through bioio-imagexpress."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from tlseg.cli import main
from tlseg.errors import TlsegError
from tlseg.plate.demo import make_demo_plate
from tlseg.plate.layout import read_channel, scan_plate


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    root = tmp_path_factory.mktemp("vendor")
    return {md: make_demo_plate(root / str(md), replicates=2, sites=2, size=160,
                                metadata=md, seed=3)
            for md in (None, "htd", "acquisition")}


def test_htd_names_the_channels_and_keeps_the_file_names_working(plates):
    plate = scan_plate(plates["htd"]["plate"])
    assert plate.layout == "imagexpress"
    assert plate.channels == ["DAPI", "TL"]
    assert plate.resolve_channel("w1") == "TL" and plate.resolve_channel("TL") == "TL"
    sites, problems = plate.sites(["TL", "DAPI"])
    assert len(sites) == 16 and not problems
    assert sites[0].paths["TL"].name == "demo_A01_s1_w1.tif"


def test_htd_missing_image_extra_well_and_broken_file(plates, tmp_path):
    import shutil

    folder = tmp_path / "plate"
    shutil.copytree(plates["htd"]["plate"], folder)
    (folder / "demo_B02_s2_w2.tif").unlink()
    with pytest.raises(TlsegError, match=r"demo.HTD: 1 image\(s\) the HTD file lists are "
                                         r"missing.*B02 site 2 w2"):
        scan_plate(folder)
    # an imaged well the HTD does not select is counted, with a warning
    shutil.copy(folder / "demo_B01_s2_w2.tif", folder / "demo_B02_s2_w2.tif")
    for s in (1, 2):
        for w in (1, 2):
            shutil.copy(folder / f"demo_A01_s{s}_w{w}.tif", folder / f"demo_H12_s{s}_w{w}.tif")
    plate = scan_plate(folder)
    assert "H12" in plate.wells
    assert any("H12" in m and "not selected" in m for m in plate.duplicates)
    # a broken HTD is refused, naming it
    htd = folder / "demo.HTD"
    htd.write_text(htd.read_text().replace('"WellsSelection2", TRUE, ', '"WellsSelection2", '))
    with pytest.raises(TlsegError, match=r"demo.HTD: WellsSelection2 has 11 values"):
        scan_plate(folder)
    htd.write_text("garbage\n")
    with pytest.raises(TlsegError, match="not an HTD file"):
        scan_plate(folder)


def test_acquisition_read_through_bioio_imagexpress(plates):
    plate = scan_plate(plates["acquisition"]["plate"])
    assert plate.layout == "imagexpress-acquisition"
    assert plate.channels == ["DAPI", "TL"]
    assert plate.wells == ["A01", "A02", "B01", "B02", "C01", "C02", "D01", "D02"]
    sites, problems = plate.sites(["TL", "DAPI"])
    assert [s.site for s in sites[:2]] == [0, 1] and not problems
    # the pixels are those of the plane file, and of the same site of the folder plate
    tl = read_channel(sites[0].paths["TL"])
    folder_plate = plates[None]["plate"]
    assert tl.dtype == np.float32 and tl.shape == (160, 160)
    assert np.array_equal(tl, tifffile.imread(folder_plate / "demo_A01_s1_w1.tif"))


def test_acquisition_with_a_broken_descriptor_or_a_missing_plane(plates, tmp_path):
    import shutil

    folder = tmp_path / "acq"
    shutil.copytree(plates["acquisition"]["plate"], folder)
    plane = folder / "timepoint0" / "demo_t0_B01_s1_w1_z0.tif"
    plane.unlink()
    plate = scan_plate(folder)  # the manifest lists the plane: found when it is read
    site = next(s for s in plate.sites(["TL", "DAPI"])[0] if s.well == "B01" and s.site == 1)
    with pytest.raises(TlsegError, match=r"demo.jdce: scene B01-s1 channel 1 cannot be read"):
        read_channel(site.paths["DAPI"])
    (folder / "demo.jdce").write_text("{not json")
    with pytest.raises(TlsegError, match=r"demo.jdce: broken acquisition descriptor"):
        scan_plate(folder)


@pytest.mark.slow
def test_acquisition_and_htd_plates_count_as_the_folder_plate(plates, tmp_path):
    counts = {}
    for md, (tl, nuc) in ((None, ("w1", "w2")), ("htd", ("TL", "DAPI")),
                          ("acquisition", ("TL", "DAPI"))):
        out = tmp_path / str(md)
        assert main(["plate", "run", str(plates[md]["plate"]), "-o", str(out),
                     "--tl-channel", tl, "--nuclei-channel", nuc, "--workers", "1",
                     "--threads", "1", "--diameter", "28", "--nuclei-diameter", "14"]) == 0
        counts[md] = pd.read_csv(out / "wells.csv").set_index("well")[["n_cells", "n_nuclei"]]
    pd.testing.assert_frame_equal(counts["htd"], counts[None])
    pd.testing.assert_frame_equal(counts["acquisition"], counts[None])
