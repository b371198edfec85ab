//! Conversions between the scaling types and their gRPC messages.
