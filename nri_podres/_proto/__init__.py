"""Generated protobuf classes. Do not edit; regenerate with tools/gen-protos.sh."""
