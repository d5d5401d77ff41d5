//! `hooks/post-data` (SPEC §9): run for every message received on port 25, with chasquid's
//! environment variables, so that chasquid's example hook runs unchanged.
