"""The committed protobuf classes are exactly what protos/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_regeneration_changes_nothing(tmp_path: Path) -> None:
    """Running protoc on protos/ reproduces nri_podres/_proto byte for byte."""
    protos = sorted(p.name for p in (REPO / "protos").glob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO / "protos"), f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", *protos],
        check=True,
        cwd=REPO / "protos",
    )
    generated = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in (REPO / "nri_podres" / "_proto").iterdir() if p.name != "__init__.py" and p.suffix in {".py", ".pyi"})
    assert generated == committed
    for name in generated:
        assert (tmp_path / name).read_bytes() == (REPO / "nri_podres" / "_proto" / name).read_bytes(), f"{name} is stale: run tools/gen-protos.sh"
