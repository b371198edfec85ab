//! gRPC services over the node runtime, and the mapping of errors to status codes.
