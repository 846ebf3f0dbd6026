"""Generated from proto/ps.proto by grpc_tools.protoc (see the command there); do not edit."""
