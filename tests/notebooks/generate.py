"""Writes real notebooks with Jupyter's own tools, inside a notebook container: nbformat
builds them, nbconvert executes them with a real kernel (outputs: stream, execute_result,
display_data with a PNG, an error), and older nbformat 4 minor versions are written by
nbformat too. Used by tests/it/share.rs."""
import os
import struct
import subprocess
import zlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def png(width=6, height=4):
    raw = b"".join(b"\x00" + b"\xcc\x22\x22" * width for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


root = "/notebooks"
with open(f"{root}/dot.png", "wb") as f:
    f.write(png())
nb = new_notebook(
    cells=[
        new_markdown_cell("# Shared analysis\nA *shared* notebook, with math $E = m_1 c^2$ and a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |"),
        new_code_cell('print("hello from the kernel")'),
        new_code_cell('from IPython.display import Image\nImage(filename="/notebooks/dot.png")'),
        new_code_cell("6 * 7"),
        new_code_cell("1 / 0"),
    ],
    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
)
nbformat.write(nb, f"{root}/analysis.ipynb")
subprocess.run(
    ["jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace", "--allow-errors", f"{root}/analysis.ipynb"],
    check=True,
)
os.makedirs(f"{root}/older", exist_ok=True)
for minor in (0, 2, 4):
    old = nbformat.read(f"{root}/analysis.ipynb", as_version=4)
    old.nbformat_minor = minor
    for cell in old.cells:
        cell.pop("id", None)
    nbformat.write(old, f"{root}/older/minor{minor}.ipynb")
with open(f"{root}/notes.md", "w") as f:
    f.write("# Notes\n\nPlain *markdown*.\n")
with open(f"{root}/helper.py", "w") as f:
    f.write("def answer():\n    return 42  # the answer\n")
print("ok")
