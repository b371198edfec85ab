//! Tables of cases for the routing cores: strategies, breaker, retry budget and config.
