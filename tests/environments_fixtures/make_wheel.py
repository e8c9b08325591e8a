#!/usr/bin/env python3
"""Writes a pure-Python wheel by hand, for the environments tests (no network, no
setuptools): notebox_demo-1.0-py3-none-any.whl, whose `notebox_demo.VALUE` is VALUE.

    make_wheel.py OUT_DIR VALUE

Prints the wheel's path. A wheel is a zip: the package, and a dist-info folder with
METADATA, WHEEL and a RECORD of every file's sha256 (pip checks them).
"""
import base64
import hashlib
import os
import sys
import zipfile

NAME = "notebox_demo"
VERSION = "1.0"
DIST_INFO = f"{NAME}-{VERSION}.dist-info"


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def main():
    out_dir, value = sys.argv[1], sys.argv[2]
    files = {
        f"{NAME}/__init__.py": f"VALUE = {value!r}\n".encode(),
        f"{DIST_INFO}/METADATA": (
            "Metadata-Version: 2.1\n"
            "Name: notebox-demo\n"
            f"Version: {VERSION}\n"
            "Summary: A wheel made by hand for Notebox's tests\n"
        ).encode(),
        f"{DIST_INFO}/WHEEL": (
            "Wheel-Version: 1.0\n"
            "Generator: notebox-tests\n"
            "Root-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ).encode(),
    }
    record = "".join(record_line(p, d) + "\n" for p, d in files.items())
    files[f"{DIST_INFO}/RECORD"] = (record + f"{DIST_INFO}/RECORD,,\n").encode()
    path = os.path.join(out_dir, f"{NAME}-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            # A fixed date: the same VALUE gives the same bytes.
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            wheel.writestr(info, data)
    print(path)


if __name__ == "__main__":
    main()
