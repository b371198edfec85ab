//! Node-to-node transport over ractor_cluster: one gateway actor per node, envelopes, deadlines.
