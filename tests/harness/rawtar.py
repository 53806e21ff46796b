"""Hand-made tar pieces for the cases tarfile will not write."""

MTIME = 1_700_000_000
END = bytes(1024)  # the end-of-archive marker: two zero blocks


def raw_header(name: bytes, size: int = 0, typeflag: bytes = b"0", *, size_field: bytes | None = None,
               magic: bytes = b"ustar\x0000", linkname: bytes = b"", prefix: bytes = b"",
               mode: bytes = b"0000644\0", checksum: int | None = None, signed_sum: bool = False) -> bytes:
    "A hand-made 512-byte header (for the cases tarfile will not write)."
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else b"%011o\0" % size
    h[136:148] = b"%011o\0" % MTIME
    h[156:157] = typeflag
    h[157 : 157 + len(linkname)] = linkname
    h[257:265] = magic
    h[265:269] = b"root"
    h[297:301] = b"root"
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b" " * 8
    if checksum is None:
        checksum = sum(b - 256 if (signed_sum and b > 127) else b for b in h)
    h[148:156] = b"%06o\0 " % checksum
    return bytes(h)


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)
