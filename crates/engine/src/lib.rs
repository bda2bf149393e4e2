//! The engine: managers (one per kind) that act through drivers, the collector that samples
//! every object from one scheduler thread, the sinks that reports go to, and the Prometheus
//! exposition of the latest samples.

pub mod collector;
pub mod events;
pub mod managers;
pub mod prometheus;
pub mod series;
pub mod sinks;

pub use events::EventLog;
pub use series::{Series, SeriesMap};
