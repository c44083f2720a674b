#!/usr/bin/env python3
"""Decodes a TensorBoard event file with plain Python (no tensorflow/tensorboard needed).

Checks the TFRecord framing (masked CRC32C of length and data) and prints one JSON object per
Event: wall_time, step, file_version, and summary values (tag, simple_value, histo, text).
Usage: read_events.py EVENTS_FILE
"""
import json
import struct
import sys


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fields(buf):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _varint(buf, i)
            val, i = buf[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wire)
        if i > len(buf):
            raise ValueError("field %d runs past the end" % num)
        yield num, wire, val


def _varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _doubles(b):
    return list(struct.unpack("<%dd" % (len(b) // 8), b))


def decode_histo(buf):
    names = {1: "min", 2: "max", 3: "num", 4: "sum", 5: "sum_squares"}
    out = {"bucket_limit": [], "bucket": []}
    for num, _, val in fields(buf):
        if num in names:
            out[names[num]] = struct.unpack("<d", val)[0]
        elif num == 6:
            out["bucket_limit"] += _doubles(val)
        elif num == 7:
            out["bucket"] += _doubles(val)
    return out


def decode_value(buf):
    out = {}
    for num, _, val in fields(buf):
        if num == 1:
            out["tag"] = val.decode()
        elif num == 2:
            out["simple_value"] = struct.unpack("<f", val)[0]
        elif num == 5:
            out["histo"] = decode_histo(val)
        elif num == 8:
            for n2, _, v2 in fields(val):
                if n2 == 8:
                    out["text"] = v2.decode()
    return out


def decode_event(buf):
    out = {}
    for num, _, val in fields(buf):
        if num == 1:
            out["wall_time"] = struct.unpack("<d", val)[0]
        elif num == 2:
            out["step"] = val
        elif num == 3:
            out["file_version"] = val.decode()
        elif num == 5:
            out["values"] = [decode_value(v) for n, _, v in fields(val) if n == 1]
    return out


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[i + 8:i + 12])
        if len_crc != masked(header):
            sys.exit("bad length crc at offset %d" % i)
        record = data[i + 12:i + 12 + length]
        (data_crc,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
        if len(record) != length or data_crc != masked(record):
            sys.exit("bad data crc at offset %d" % i)
        print(json.dumps(decode_event(record)))
        i += 16 + length


if __name__ == "__main__":
    main(sys.argv[1])
