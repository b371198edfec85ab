//! Assembly of a node: membership, transport, grains, directory and API wired together.
