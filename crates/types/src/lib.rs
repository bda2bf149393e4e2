//! The domain model of nodeagent: what an object is, what it asks for, what a sample and an event
//! carry, and the parsers for the quantities in a spec. Nothing here does I/O, so every other
//! crate (and the fuzz/property tests) can depend on it cheaply.

pub mod error;
pub mod event;
pub mod kind;
pub mod object;
pub mod quantity;
pub mod report;
pub mod sample;
pub mod spec;
pub mod time;

pub use error::{ApiError, ErrorCode};
pub use event::{Event, EventKind};
pub use kind::{Kind, Status};
pub use object::{
    is_object_id, new_object_id, ContainerStatus, HelmRevision, HelmStatus, K8sResource, K8sState,
    K8sStatus, Object, ObjectId, ObjectPatch, SyncState, VmStatus, HOST_ID,
};
pub use quantity::{parse_cpuset, parse_duration, parse_memory, CpuSet, Duration, Memory};
pub use report::ReportMode;
pub use sample::{CpuModes, DeviceCounters, HostStats, Sample};
pub use spec::{
    is_dns_label, is_dns_subdomain, CgroupSpec, CollectSpec, ContainerNetwork, ContainerSpec,
    Document, HelmSpec, K8sSpec, K8sWait, KindSection, KindSpec, Manifest, Mount, ObjectSpec,
    ProcessSpec, Resources, RestartPolicy, SectionOf, VmSpec, K8S_LABEL_ID,
};
pub use time::Timestamp;
