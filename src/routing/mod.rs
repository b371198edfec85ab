//! Load-balanced routing of client calls over gateway nodes, with circuit breaking.
