//! Local delivery through an MDA command (`local_delivery: {"mda": [...]}`).
