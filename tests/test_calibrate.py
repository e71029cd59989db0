"""tlseg plate calibrate: the label-free model fine-tuned on a plate's nuclear stain."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import tifffile

import tlseg
from tlseg.cli import main
from tlseg.config import ModelConfig
from tlseg.plate.nuclei_tuning import tune_to_nuclei
from tlseg.training.nucleus_labels import calibration_labels
from tlseg.training.targets import cut_cells


def test_labels_keep_one_nucleus_cells_split_at_several_trust_far_background_doubt_the_rest():
    cells = np.zeros((80, 80), int)
    cells[5:15, 5:15] = 1    # one nucleus: a cell
    cells[5:15, 60:70] = 2   # no nucleus, far from every nucleus: debris, background
    cells[20:32, 5:30] = 3   # two nuclei: touching cells drawn as one, split at them
    cells[5:15, 20:28] = 4   # no nucleus but next to one: unknown
    nuclei = np.zeros_like(cells)
    nuclei[8:12, 8:12] = 1
    nuclei[24:28, 8:12] = 2
    nuclei[24:28, 22:26] = 3
    nuclei[60:64, 60:64] = 4  # a lone nucleus outside every cell: its outline unknown
    labels = calibration_labels(cells, nuclei, diameter=10)
    assert set(np.unique(labels[cells == 1])) == {1}
    assert set(np.unique(labels[cells == 2])) == {0}
    parts = set(np.unique(labels[cells == 3]))
    assert len(parts) == 2 and min(parts) > 4  # two new cells, one at each nucleus
    assert labels[26, 10] != labels[26, 24] and labels[26, 10] in parts
    assert labels[26, 5] == labels[26, 10] and labels[26, 29] == labels[26, 24]
    assert set(np.unique(labels[cells == 4])) == {tlseg.UNKNOWN}
    assert labels[62, 62] == tlseg.UNKNOWN and labels[45, 75] == 0
    unsplit = calibration_labels(cells, nuclei, diameter=10, split=False)
    assert set(np.unique(unsplit[cells == 3])) == {tlseg.UNKNOWN}


def test_a_monolayer_the_model_misses_is_tiled_with_whole_cells_at_the_nuclei():
    # a confluent field read as background throughout: every nucleus lies outside every
    # label-free cell, and the seeded cells tile the field, touching, with known outlines
    nuclei = np.zeros((60, 60), int)
    k = 0
    for y in range(5, 60, 10):
        for x in range(5, 60, 10):
            k += 1
            nuclei[y - 2:y + 3, x - 2:x + 3] = k  # nuclei half a cell across
    labels = calibration_labels(np.zeros_like(nuclei), nuclei, diameter=10)
    assert len(np.unique(labels[labels > 0])) == k == 36
    assert (labels > 0).all()  # the field is tiled
    assert len(cut_cells(labels)) == 0  # every cell has shape targets, not only "a cell"
    assert (calibration_labels(np.zeros_like(nuclei), nuclei, diameter=10, seed=False)
            == tlseg.UNKNOWN).all()


def test_split_at_nuclei_keeps_each_part_inside_its_own_cell():
    from tlseg.training.nucleus_labels import split_at_nuclei

    # two touching cells, each with two nuclei; cell 2's left nucleus sits nearer the
    # shared border than cell 1's right one, yet no part may cross the border
    cells = np.zeros((10, 30), int)
    cells[1:9, 1:15] = 1
    cells[1:9, 15:29] = 2
    nuclei = np.zeros_like(cells)
    nuclei[3:5, 3:5] = 1
    nuclei[3:5, 6:8] = 2
    nuclei[3:5, 16:18] = 3
    nuclei[3:5, 25:27] = 4
    parts = split_at_nuclei(cells, nuclei)
    assert parts.max() == 4 and (parts[cells == 0] == 0).all()
    for cell in (1, 2):
        inside = set(np.unique(parts[cells == cell]))
        assert len(inside) == 2 and 0 not in inside
    assert not set(np.unique(parts[cells == 1])) & set(np.unique(parts[cells == 2]))
    assert parts[4, 14] == parts[4, 7] != parts[4, 15]  # cell 1's edge goes to its own


def test_the_check_sites_span_the_held_aside_wells_not_the_first_row():
    from types import SimpleNamespace

    from tlseg.plate.calibrate import MAX_CHECK_SITES, spread_sites

    # a dilution series held aside: 15 wells of 2 sites, densities rising row by row
    wells = [f"{r}{c:02d}" for r in "ABCD" for c in range(1, 5)][:15]
    sites = [SimpleNamespace(well=w, site=k) for w in wells for k in (1, 2)]
    picked = spread_sites(sites, MAX_CHECK_SITES)
    assert len(picked) == MAX_CHECK_SITES == len({s.well for s in picked})
    assert picked[0].well == "A01" and picked[-1].well == wells[-1]
    assert {s.well[0] for s in picked} == set("ABCD")  # every density level


def test_instance_settings_tuned_to_nuclei_drop_debris_without_nuclei():
    yy, xx = np.mgrid[:120, :200]
    prob, dist = np.zeros((120, 200), np.float32), np.zeros((120, 200), np.float32)
    centres = []
    for i, (y, x) in enumerate([(30, 30), (30, 90), (30, 150), (90, 30), (90, 90), (90, 150)]):
        r = np.hypot(yy - y, xx - x)
        inside = r < 14
        dist[inside] = np.maximum(dist[inside], 1 - r[inside] / 14)
        if i < 4:  # cells, each with its nucleus
            prob[inside] = 0.97
            centres.append((y, x))
        else:  # faint debris with no nucleus
            prob[inside] = 0.62
    maps = np.stack([prob, dist, np.zeros_like(prob)])
    model = tlseg.Model(ModelConfig(name="t", channels=(8, 16), canonical_diameter=30,
                                    flows=False))
    tuned, record = tune_to_nuclei(model, [(maps, np.array(centres))])
    assert record["match_model_settings"] == [4, 2, 0]
    assert record["match_tuned_settings"] == [4, 0, 0] and record["settings_changed"]
    assert tuned.min_mean_prob > 0.62 or tuned.fg_threshold > 0.62
    # already right: the model's own settings are kept
    kept, record = tune_to_nuclei(model, [(maps[:, :60], np.array(centres)[:3])])
    assert kept == model.config.instances and record["f1_model_settings"] == 1.0


class _Repeating(tlseg.Model):
    """Stands in for a calibrated model on a field whose objects repeat on a lattice:
    with the structure steps on it drops ``dropped`` (ids of its full labels)."""

    labels = None
    dropped = ()

    def predict_instances(self, image, *, diameter=None, **kwargs):
        inst = self.config.instances
        out = self.labels.copy()
        if inst.repeat_similarity > 0 or inst.remove_pattern:
            out[np.isin(out, self.dropped)] = 0
        return out, {"diameter": diameter, "pattern": "lattice"}


def test_structure_steps_are_turned_off_only_where_what_they_drop_holds_nuclei(tmp_path):
    from tlseg.plate.nuclei_tuning import check_structures

    labels = np.zeros((60, 200), np.int32)
    centres = []
    for i in range(10):  # ten cells in a row, each with its nucleus
        labels[20:40, 20 * i + 2:20 * i + 18] = i + 1
        centres.append((30, 20 * i + 10))
    cfg = ModelConfig(name="t", channels=(8, 16), canonical_diameter=30)
    cfg = replace(cfg, instances=replace(cfg.instances, repeat_similarity=0.8,
                                         remove_pattern=True))
    card = {"calibration": {}}
    pairs, yx = [("A01", np.zeros((60, 200)), None)], [np.array(centres, float)]
    # a regular monolayer: the steps drop cells that hold nuclei -> turned off
    cells = type("Monolayer", (_Repeating,), {"labels": labels, "dropped": (2, 4, 6, 8)})(
        cfg, card=card)
    off = check_structures(cells, pairs, yx, 30, tmp_path / "a")
    assert off.config.instances.repeat_similarity == 0 and not off.config.instances.remove_pattern
    record = off.card["calibration"]["structures"]
    assert record["turned_off"] and record["match_without"] == [10, 0, 0]
    assert "repeat_similarity: 0.0" in (tmp_path / "a" / "tuning.yaml").read_text()
    # a chip: what they drop holds no nucleus (posts) -> kept on
    posts = labels.copy()
    posts[45:55, 50:60], posts[45:55, 150:160] = 11, 12
    chip = type("Chip", (_Repeating,), {"labels": posts, "dropped": (11, 12)})(cfg, card=card)
    kept = check_structures(chip, pairs, yx, 30, tmp_path / "b")
    assert kept.config.instances == cfg.instances
    assert not kept.card["calibration"]["structures"]["turned_off"]


def test_a_setting_does_not_move_for_a_cell_or_two_of_one_field():
    # 60 cells with a nucleus each, one faint object and one small one without: each
    # move that drops one of them matches one cell better (F1 + 0.008), under the gain a
    # move needs; the model's own settings stay
    model = tlseg.Model(ModelConfig(name="t", channels=(8, 16), canonical_diameter=30,
                                    flows=False))
    def site(rows):  # rows of 10 cells, then the faint object and the small one
        cells = [(30 + 60 * i, 30 + 60 * j, 14) for i in range(rows) for j in range(10)]
        y = 30 + 60 * rows
        maps = _disc_maps(cells + [(y, 60, 14), (y, 240, 6)], shape=(y + 30, 600))
        maps[0][y - 25:y + 26, 35:86][maps[1][y - 25:y + 26, 35:86] > 0] = 0.62
        return maps, np.array([c[:2] for c in cells])

    tuned, record = tune_to_nuclei(model, [site(6)])
    assert record["match_model_settings"] == [60, 2, 0]
    assert tuned == model.config.instances and not record["settings_changed"]
    # the same two objects beside 20 cells weigh enough to move a setting
    tuned, record = tune_to_nuclei(model, [site(2)])
    assert record["match_model_settings"] == [20, 2, 0]
    assert record["settings_changed"]


def _disc_maps(discs, shape=(120, 260)):
    """Foreground and distance maps of sharp discs (y, x, radius), canonical pixels."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    prob, dist = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for y, x, r in discs:
        d = np.hypot(yy - y, xx - x)
        inside = d < r
        prob[inside] = 0.97
        dist[inside] = np.maximum(dist[inside], 1 - d[inside] / r)
    return np.stack([prob, dist, np.zeros_like(prob)])


def test_the_size_floor_tuned_to_nuclei_keeps_a_margin_under_the_cells():
    # the calibration site: four cells of 0.87 canonical cell areas with a nucleus each,
    # two objects of 0.49 without one, which nothing but their size tells apart
    model = tlseg.Model(ModelConfig(name="t", channels=(8, 16), canonical_diameter=30,
                                    flows=False))
    cells = [(30, 30, 14), (30, 90, 14), (90, 30, 14), (90, 90, 14)]
    site = _disc_maps(cells + [(30, 160, 10.5), (90, 160, 10.5)])
    tuned, record = tune_to_nuclei(model, [(site, np.array([c[:2] for c in cells]))])
    # a floor over half a cell would match this site one to one, and drop the smaller
    # cells of the plate's other fields: the floor stays at 0.4 of a cell at most
    assert tuned.min_area_fraction <= 0.4
    assert record["match_tuned_settings"][0] == 4
    other = _disc_maps([(30, 30 + 60 * k, 10.5) for k in range(4)])  # smaller cells
    labels = tlseg.inference.postprocess.instances_from_maps(
        other, canonical_diameter=30, config=tuned)
    assert labels.max() == 4


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory):
    root = tmp_path_factory.mktemp("cal")
    return tlseg.make_demo_plate(root, replicates=2, sites=1, size=320, seed=4)


def test_missing_channel_other_shapes_and_too_few_nuclei_write_nothing(small_plate, tmp_path,
                                                                      capsys):
    folder = small_plate["plate"]
    out = tmp_path / "model"
    assert main(["plate", "calibrate", str(folder), "-o", str(out), "--tl-channel", "w1",
                 "--nuclei-channel", "w9"]) == 2
    assert "w9" in capsys.readouterr().err and not out.exists()
    with pytest.raises(tlseg.TlsegError, match="at least 30 are needed"):
        tlseg.calibrate(folder, out, tl_channel="w1", nuclei_channel="w2", wells=["A01"],
                        diameter=28, nuclei_diameter=14)
    assert not out.exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in folder.glob("*_A01_*"):
        image = tifffile.imread(f)
        tifffile.imwrite(odd / f.name, image if "_w1" in f.name else image[:-8])
    for wells, plate_map, why in (
            (["seeding_density=5000"], None, "needs a plate map"),
            (["dose=1"], small_plate["plate_map"], "no column 'dose'.*seeding_density"),
            (["seeding_density=7"], small_plate["plate_map"],
             r"no well .*\(values: 1250, 2500, 5000, 10000\)")):
        with pytest.raises(tlseg.TlsegError, match=why):
            tlseg.calibrate(folder, out, tl_channel="w1", nuclei_channel="w2", wells=wells,
                            plate_map=plate_map, diameter=28, nuclei_diameter=14)
        assert not out.exists()
    with pytest.raises(tlseg.TlsegError, match="must be the same field"):
        tlseg.calibrate(odd, out, tl_channel="w1", nuclei_channel="w2", diameter=28,
                        nuclei_diameter=14)
    assert not out.exists()
    # a folder holding an unfinished calibration or a model is refused before any work
    for name, why in (("checkpoint.pt", "pass --resume"), ("weights.pt", "holds a trained")):
        held = tmp_path / f"held-{name}"
        held.mkdir()
        (held / name).write_bytes(b"")
        with pytest.raises(tlseg.TlsegError, match=why):
            tlseg.calibrate(tmp_path / "no-plate-here", held, tl_channel="w1",
                            nuclei_channel="w2")
        assert [p.name for p in held.iterdir()] == [name]


@pytest.mark.slow
def test_calibrated_model_counts_a_plate_without_the_stain(small_plate, tmp_path, capsys):
    out = tmp_path / "calibrated"
    rc = main(["plate", "calibrate", str(small_plate["plate"]), "-o", str(out),
               "--tl-channel", "w1", "--nuclei-channel", "w2", "--plate-map",
               str(small_plate["plate_map"]), "--wells", "seeding_density=5000,d1",
               "--steps", "4", "--diameter", "28", "--nuclei-diameter", "14"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    # the condition stands for its wells, d1 for D01; their conditions are named
    assert "(wells C01, C02, D01; cell_line synthetic; seeding_density 5000, 10000)" in printed
    assert "before" in printed and "after" in printed
    assert "training cells from" in printed and "cells seeded at packed nuclei" in printed
    # the work before the progress bar is announced site by site
    assert printed.index("labels from calibration site 1 of 3") < printed.index(
        "training cells from")
    card = tlseg.load_model(out).card["calibration"]
    assert card["wells"] == ["C01", "C02", "D01"] and "D02" in card["held_aside_wells"]
    assert card["conditions"]["D01"] == {"cell_line": "synthetic", "seeding_density": 10000}
    # five held-aside sites, fewer than the check's limit: every held-aside well checked
    assert card["checked_wells"] == card["held_aside_wells"] == ["A01", "A02", "B01", "B02",
                                                                 "D02"]
    assert "on 5 sites of held-aside wells A01, A02, B01, B02, D02" in printed
    assert card["labels"]["cells_kept"] > 0 and card["before"]["nuclei"] > 0
    assert "cells_split" in card["labels"]  # cells split at their nuclei, recorded
    tuning = card["instances"]
    assert tuning["f1_tuned_settings"] >= tuning["f1_model_settings"]
    # a plate run with the calibrated model estimates the diameter it was calibrated at
    kept = card["diameter_estimate"]
    assert kept["calibrated_at"] == 28
    assert kept["diameter_calibration"] == pytest.approx(
        kept["diameter_calibration_before"] * 28 / kept["estimate_before"], rel=1e-3)
    from tlseg.plate.layout import scan_plate
    from tlseg.plate.prepare import plate_diameter

    sites, _ = scan_plate(small_plate["plate"]).sites(["w1"])
    assert plate_diameter(tlseg.load_model(out), sites, "w1") == pytest.approx(28, rel=0.03)
    results = tmp_path / "results"
    assert main(["plate", "run", str(small_plate["plate"]), "-o", str(results),
                 "--tl-channel", "w1", "--model", str(out), "--diameter", "28",
                 "--workers", "1"]) == 0
    assert pd.read_csv(results / "wells.csv")["n_cells"].sum() > 0
    report = (results / "report.html").read_text()
    assert ("calibrated with the nuclear stain on wells C01, C02, D01 (cell_line synthetic; "
            "seeding_density 5000, 10000)") in report
    assert "On 5 sites of the held-aside wells A01, A02, B01, B02, D02" in report
    # a run without a nuclear channel names no nuclei model and draws no nuclei
    assert "nuclei model" not in report and "magenta" not in report


@pytest.mark.slow
def test_calibrating_on_a_monolayer_teaches_the_model_to_separate_its_cells(tmp_path):
    from tlseg.synthetic import synthetic_field

    # a confluent phase-contrast sheet, which tl-cells reads as background throughout
    plate = tmp_path / "plate"
    plate.mkdir()
    fields = [synthetic_field((256, 256), diameter=24, modality="phase", confluent=True,
                              seed=seed) for seed in (1, 2)]
    for well, f in zip(("A01", "A02"), fields):
        tifffile.imwrite(plate / f"conf_{well}_s1_w1.tif", f["tl"])
        tifffile.imwrite(plate / f"conf_{well}_s1_w2.tif", f["nuclei"])
    other = fields[1]
    base = tlseg.load_model("tl-cells")
    assert base.segment(other["tl"], diameter=24).max() < 0.2 * other["n_cells"]
    model = tlseg.calibrate(plate, tmp_path / "cal", tl_channel="w1", nuclei_channel="w2",
                            wells=["A01"], diameter=24, nuclei_diameter=12, steps=120)
    assert model.card["calibration"]["labels"]["cells_seeded"] > 0.8 * fields[0]["n_cells"]
    after = model.segment(other["tl"], diameter=24)
    assert tlseg.evaluate(after, other["labels"])["AP50"] > 0.7  # 0.96 on the CPU


def test_the_report_says_when_calibration_agreed_less_on_held_aside_wells(tmp_path):
    import yaml

    from tlseg.plate.report import _calibration

    sites = {"n_sites": 7, "nuclei": 444}
    card = {"calibration": {"wells": ["A01"], "held_aside_wells": ["A02", "A03"],
                            "before": {**sites, "label_free": 411, "mean_abs_rel_error": 0.096},
                            "after": {**sites, "label_free": 387, "mean_abs_rel_error": 0.126}}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    text = _calibration(str(tmp_path))
    assert "411 label-free cells before, mean |relative error| 9.6 %" in text
    assert ("<b>On the held-aside wells the calibrated model agrees less with the nuclei "
            "than the base model (mean |relative error| 9.6 % -&gt; 12.6 %)") in text
    card["calibration"]["after"].update(label_free=445, mean_abs_rel_error=0.045)
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    assert "agrees less" not in _calibration(str(tmp_path))
    card = {"calibration": {"wells": ["A01"], "held_aside_wells": []}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    assert "<b>No well is held aside, so the calibration is not measured" in _calibration(
        str(tmp_path))


def test_a_calibration_with_no_well_held_aside_says_so_before_it_starts(small_plate, tmp_path,
                                                                       caplog):
    one = tmp_path / "one"
    one.mkdir()
    for f in small_plate["plate"].glob("*_A01_*"):
        (one / f.name).write_bytes(f.read_bytes())
    with pytest.raises(tlseg.TlsegError, match="at least 30 are needed"):
        tlseg.calibrate(one, tmp_path / "model", tl_channel="w1", nuclei_channel="w2",
                        diameter=28, nuclei_diameter=14)
    assert "no well is held aside" in caplog.text
