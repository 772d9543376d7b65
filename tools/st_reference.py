#!/usr/bin/python3
"""st_reference.py - a small, independent safetensors reader/writer (pure Python + torch), used to
cross-check kiln's .kiln container (src/io/safetensors.c) against the format as the reference
implementation (huggingface/safetensors, Rust) defines it. Debian's python3-torch (1.13) has no
safetensors package, hence this file.

  /usr/bin/python3 tools/st_reference.py --write tests/data/torch_written.safetensors
      writes the fixture tests/test_io.c loads (no Python needed to run the tests)
  /usr/bin/python3 tools/st_reference.py --verify FILE [--dump]
      checks FILE the way the Rust safetensors loader does and loads every tensor with torch;
      exit status 0 when valid, 1 otherwise (the reason is printed)

Format: u64 little-endian N, N bytes of UTF-8 JSON (may be padded with spaces), data section.
The JSON object maps "__metadata__" (optional) to {str: str} and each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section).
The Rust loader additionally requires: the header starts with '{', the byte ranges sorted by
offset are contiguous from 0 and cover the data section exactly (no holes, no overlaps).
"""

import argparse
import json
import struct
import sys

import torch

# safetensors dtype -> (torch dtype or None, element size)
DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
    "U16": (None, 2),
    "U32": (None, 4),
    "U64": (None, 8),
    "F8_E4M3": (None, 1),
    "F8_E5M2": (None, 1),
}
TORCH_TO_ST = {v[0]: k for k, v in DTYPES.items() if v[0] is not None}

MAX_HEADER = 100_000_000


def tensor_bytes(t):
    """C-order little-endian bytes of a torch tensor."""
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    # view as bytes without numpy (bf16 has no numpy type)
    return bytes(t.reshape(-1).view(torch.uint8).numpy().tobytes()) if t.dtype != torch.bool \
        else bytes(t.reshape(-1).to(torch.uint8).numpy().tobytes())


def save(path, tensors, metadata=None):
    """Writes like safetensors.torch.save_file: data sorted by (alignment desc, name), header
    keys in that order with __metadata__ first, header space-padded to a multiple of 8."""
    items = sorted(tensors.items(), key=lambda kv: (-DTYPES[TORCH_TO_ST[kv[1].dtype]][1], kv[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, t in items:
        b = tensor_bytes(t)
        header[name] = {"dtype": TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


class Invalid(Exception):
    pass


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Invalid(f"duplicate key {k!r}")
        d[k] = v
    return d


def load(path):
    """Validates like the Rust loader; returns (metadata, {name: tensor or None})."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise Invalid("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER:
        raise Invalid(f"header length {n} too large")
    if 8 + n > len(buf):
        raise Invalid(f"header length {n} beyond file size {len(buf)}")
    raw = buf[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"header is not UTF-8: {e}")
    if not text.startswith("{"):
        raise Invalid("header does not start with '{'")
    try:
        hdr = json.loads(text, object_pairs_hook=_no_dups)
    except json.JSONDecodeError as e:
        raise Invalid(f"header is not JSON: {e}")
    if not isinstance(hdr, dict):
        raise Invalid("header is not an object")
    meta = hdr.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise Invalid("__metadata__ is not {str: str}")
    data = buf[8 + n:]
    entries = []
    for name, e in hdr.items():
        if not isinstance(e, dict):
            raise Invalid(f"{name}: entry is not an object")
        dt, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if dt not in DTYPES:
            raise Invalid(f"{name}: unknown dtype {dt!r}")
        if not isinstance(shape, list) or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise Invalid(f"{name}: bad shape {shape!r}")
        if not isinstance(offs, list) or len(offs) != 2 or not all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs):
            raise Invalid(f"{name}: bad data_offsets {offs!r}")
        numel = 1
        for s in shape:
            numel *= s
        if offs[1] - offs[0] != numel * DTYPES[dt][1]:
            raise Invalid(f"{name}: data_offsets {offs} do not match shape {shape} of {dt}")
        entries.append((offs[0], offs[1], name, dt, shape))
    entries.sort()
    pos = 0
    for b, e, name, _, _ in entries:
        if b != pos:
            raise Invalid(f"{name}: data_offsets start at {b}, expected {pos} (hole or overlap)")
        pos = e
    if pos != len(data):
        raise Invalid(f"data section is {len(data)} bytes, tensors cover {pos}")
    out = {}
    for b, e, name, dt, shape in entries:
        tdt = DTYPES[dt][0]
        if tdt is None:
            out[name] = None
            continue
        chunk = bytearray(data[b:e])
        if tdt == torch.bool:
            if any(x > 1 for x in chunk):
                raise Invalid(f"{name}: bool byte not 0/1")
            t = torch.tensor(list(chunk), dtype=torch.uint8).to(torch.bool)
        elif len(chunk) == 0:
            t = torch.empty(0, dtype=tdt)
        else:
            t = torch.frombuffer(chunk, dtype=tdt).clone()
        out[name] = t.reshape(shape)
    return meta or {}, out


def fixture():
    """The tensors of tests/data/torch_written.safetensors (tests/test_io.c knows the values)."""
    return {
        "a.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5,  # 0, .5, ..., 2.5
        "b.f64": torch.arange(4, dtype=torch.float64) - 1.25,  # -1.25 ... 1.75
        "c.f16": torch.arange(3, dtype=torch.float16) / 4,  # 0, .25, .5
        "d.bf16": torch.arange(4, dtype=torch.bfloat16).reshape(2, 2) * 2,  # 0, 2, 4, 6
        "e.i64": torch.arange(-3, 3, dtype=torch.int64) * 1000000000000,
        "f.i32": torch.arange(5, dtype=torch.int32) * -7,
        "g.i8": torch.arange(-4, 4, dtype=torch.int8),
        "h.u8": torch.arange(250, 256, dtype=torch.uint8),
        "i.bool": torch.tensor([True, False, True, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float32),  # 0-d
        "empty": torch.zeros(0, 4, dtype=torch.float32),  # size 0
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="FILE", help="write the test fixture")
    g.add_argument("--verify", metavar="FILE", help="validate FILE like the Rust loader")
    ap.add_argument("--dump", action="store_true", help="with --verify: print every tensor")
    a = ap.parse_args()
    if a.write:
        save(a.write, fixture(), {"producer": "tools/st_reference.py",
                                  "torch": torch.__version__.split("+")[0]})
        meta, ts = load(a.write)
        ref = fixture()
        assert set(ts) == set(ref)
        for k, v in ref.items():
            assert torch.equal(ts[k], v), k
        print(f"wrote {a.write}: {len(ts)} tensors")
        return 0
    try:
        meta, ts = load(a.verify)
    except (Invalid, OSError) as e:
        print(f"{a.verify}: INVALID: {e}")
        return 1
    print(f"{a.verify}: valid safetensors, {len(ts)} tensors, metadata {json.dumps(meta)}")
    for name, t in ts.items():
        if t is None:
            print(f"  {name}: (dtype without a torch equivalent)")
        else:
            print(f"  {name}: {str(t.dtype).replace('torch.', '')} {list(t.shape)}")
            if a.dump:
                print("   ", t.tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
