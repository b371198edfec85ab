//! Grain directory: which node holds the one activation of each grain.
