//! The engine: managers (one per kind) that act through drivers, the collector that samples
//! every object from one scheduler thread, the sinks that reports go to, and the Prometheus
//! exposition of the latest samples. Network sinks write through a disk [`spool`] and speak the
//! [`upstream`] protocol.

pub mod collector;
pub mod events;
pub mod kinds;
pub mod policy;
pub mod prometheus;
pub mod record;
pub mod series;
pub mod sinks;
pub mod spool;
pub mod upstream;

pub use events::EventLog;
pub use series::{Series, SeriesMap};
