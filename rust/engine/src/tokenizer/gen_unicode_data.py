# Generates unicode_data.rs from Python's unicodedata. Must run on Unicode 15.1 (Python 3.13), the
# version of the table llama.cpp ships. Usage (from this folder):
#   python3.13 gen_unicode_data.py unicode_data.rs
import sys, unicodedata
assert unicodedata.unidata_version == "15.1.0", unicodedata.unidata_version
CAT = {
    "Cn": 0x01,
    "Cc": 0x80, "Cf": 0x80, "Co": 0x80, "Cs": 0x80,
    "Ll": 0x04, "Lm": 0x04, "Lo": 0x04, "Lt": 0x04, "Lu": 0x04,
    "Mc": 0x10, "Me": 0x10, "Mn": 0x10,
    "Nd": 0x02, "Nl": 0x02, "No": 0x02,
    "Pc": 0x20, "Pd": 0x20, "Pe": 0x20, "Pf": 0x20, "Pi": 0x20, "Po": 0x20, "Ps": 0x20,
    "Sc": 0x40, "Sk": 0x40, "Sm": 0x40, "So": 0x40,
    "Zl": 0x08, "Zp": 0x08, "Zs": 0x08,
}
ranges = []
prev = None
for cp in range(0x110000):
    f = CAT[unicodedata.category(chr(cp))]
    if f != prev:
        ranges.append((cp, f))
        prev = f
out = []
out.append("//! Unicode general-category flags per code point, as range starts (each range runs to the next")
out.append("//! start). Generated from the Unicode 15.1 character database (Python 3.13 `unicodedata`), the")
out.append("//! same data and category-to-flag mapping as llama.cpp's `unicode-data.cpp`, so that")
out.append("//! pre-tokenization classifies every code point exactly as llama.cpp does. Do not edit by hand.")
out.append("")
out.append(f"/// `(first code point, flags)`; {len(ranges)} ranges, sorted, first starts at 0.")
out.append("#[rustfmt::skip]")
out.append("pub(super) static CPT_FLAG_RANGES: &[(u32, u8)] = &[")
line = "   "
for cp, f in ranges:
    item = f" (0x{cp:06X}, 0x{f:02X}),"
    if len(line) + len(item) > 100:
        out.append(line)
        line = "   "
    line += item
out.append(line)
out.append("];")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print(len(ranges))
d = dict(ranges)
for cp, f in [(0x31EF,0x40),(0x31F0,0x04),(0x2FF0,0x40),(0x3000,0x08),(0xD800,0x80),(0xF900,0x04),(0x10EFD,0x10),(0x110BD,0x80),(0x0CF3,0x10),(0x1C89,0x01),(0x0AD,0x80),(0x2066,0x80),(0x2065,0x01),(0x11242,0x01)]:
    assert d.get(cp) == f, (hex(cp), d.get(cp), f)
print("spot checks ok")
