"""The README's layer example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README has no python example"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    y, x = namespace["y_eval"], namespace["x"]
    assert y.shape == x.shape
    assert float(namespace["stats"]["aux_loss"]) > 0
