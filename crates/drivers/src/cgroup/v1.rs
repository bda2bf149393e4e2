//! cgroup v1 backend (to be written).
#![allow(unused_variables)]

use super::*;

#[derive(Debug)]
pub struct V1 {}

impl V1 {
    pub fn new(root: &Path, proc_root: &Path, parent: Parent) -> Result<V1> {
        unimplemented!()
    }
}

impl CgroupManager for V1 {
    fn version(&self) -> CgroupVersion { unimplemented!() }
    fn create(&self, cg: &CgroupRef) -> Result<()> { unimplemented!() }
    fn remove(&self, cg: &CgroupRef) -> Result<()> { unimplemented!() }
    fn exists(&self, cg: &CgroupRef) -> bool { unimplemented!() }
    fn apply(&self, cg: &CgroupRef, res: &Resources) -> Result<()> { unimplemented!() }
    fn read_limits(&self, cg: &CgroupRef) -> Result<Limits> { unimplemented!() }
    fn freeze(&self, cg: &CgroupRef, frozen: bool) -> Result<()> { unimplemented!() }
    fn add_pid(&self, cg: &CgroupRef, pid: u32) -> Result<()> { unimplemented!() }
    fn procs(&self, cg: &CgroupRef) -> Result<Vec<u32>> { unimplemented!() }
    fn procs_files(&self, cg: &CgroupRef) -> Vec<PathBuf> { unimplemented!() }
    fn dirs(&self, cg: &CgroupRef) -> Vec<(String, PathBuf)> { unimplemented!() }
    fn path(&self, cg: &CgroupRef) -> String { unimplemented!() }
    fn stat_reader(&self, cg: &CgroupRef) -> Result<StatReader> { unimplemented!() }
}
