//! The measured phases, one module each, named as `--phases` names them (`baseline` is
//! phase `pgbench`); `served` runs the three that need the service and adds the memory row;
//! `trigger`, `templates` and `cap` start their own service (and database) each.

pub mod baseline;
pub mod campaign;
pub mod cap;
pub mod claim;
pub mod import;
pub mod ingest;
pub mod million;
pub mod pool;
pub mod served;
pub mod soak;
pub mod templates;
pub mod trigger;
