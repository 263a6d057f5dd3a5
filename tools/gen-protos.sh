#!/usr/bin/env bash
# Regenerate nri_podres/_proto/ from protos/. The output is committed; CI
# regenerates it and fails if anything changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
out=nri_podres/_proto
rm -f "$out"/*_pb2.py "$out"/*_pb2.pyi
"$python" -m grpc_tools.protoc -I protos --python_out="$out" --pyi_out="$out" protos/api.proto protos/ttrpc.proto
