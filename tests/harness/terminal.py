"""Terminal-escape checks: hostile strings, and a finder for raw control bytes.

A string that reaches a terminal unescaped can move the cursor, rewrite the
window title, clear the screen or reorder what is shown (ESC sequences, CR,
BEL, C1 codes, bidi overrides). The tests put :data:`OSC_TITLE` and friends
into names, build steps, platforms, labels and registry messages, then check
a command's output with :func:`raw_controls`.
"""

from __future__ import annotations

import unicodedata

OSC_TITLE = "\x1b]0;pwned\x07"  # sets the terminal's title
CLEAR = "\x1b[2J"  # clears the screen
RED = "\x1b[31m"
CSI_C1 = "\x9b31m"  # the 8-bit CSI (C1 control)
BIDI = "\u202e"  # right-to-left override: "txt.exe" reads as "exe.txt"


def raw_controls(text: str) -> list[str]:
    """Every character of ``text`` a terminal would act on, except the newline
    that ends lines: C0 and C1 controls, DEL, and format characters (bidi)."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]


def escaped(text: str) -> str:
    """How layerslayer must show ``text`` (an independent statement of the rule):
    \\n \\t \\r, other controls below 0x100 as \\xNN, above as \\uNNNN (\\UNNNNNNNN); bytes that
    were not UTF-8 (surrogateescape) as \\xNN; everything printable as is."""
    names = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for c in text:
        code = ord(c)
        if c.isprintable():
            out.append(c)
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif c in names:
            out.append(names[c])
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
