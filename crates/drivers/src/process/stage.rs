//! A word of memory shared with the forked child, so that the parent can tell which step of the
//! child's setup failed when `spawn` reports only an errno.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// The child has not reached the `pre_exec` closure: a failure was std's (stdio, `chdir`) or
/// `fork`'s.
pub(super) const BEFORE_HOOK: u32 = 0;
/// `setsid` was called.
pub(super) const SETSID: u32 = 1;
/// Writing to `cgroup.procs` file `i` is stage `CGROUP + i`.
pub(super) const CGROUP: u32 = 2;
/// The closure is done: what fails now is `execve`.
pub(super) const EXEC: u32 = u32::MAX;

/// An anonymous `MAP_SHARED` mapping holding one `AtomicU32`. A mapping made before `fork` stays
/// shared with the child, unlike ordinary memory, which the child gets a copy of.
pub(super) struct SharedStage {
    ptr: NonNull<AtomicU32>,
}

impl SharedStage {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping, not aliasing anything; the arguments are valid.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<AtomicU32>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The mapping is page-aligned and zero-filled: a valid AtomicU32 holding BEFORE_HOOK.
        let ptr = NonNull::new(p.cast::<AtomicU32>()).ok_or_else(io::Error::last_os_error)?;
        Ok(SharedStage { ptr })
    }

    /// A handle the `pre_exec` closure can carry into the child.
    pub(super) fn slot(&self) -> StageSlot {
        StageSlot(self.ptr)
    }

    pub(super) fn get(&self) -> u32 {
        // SAFETY: `ptr` points into our mapping, which lives as long as `self`.
        unsafe { self.ptr.as_ref() }.load(Ordering::SeqCst)
    }
}

impl Drop for SharedStage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no reference into it outlives `self`
        // (a `StageSlot` is only dereferenced in the child, before `spawn` returns).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), std::mem::size_of::<AtomicU32>());
        }
    }
}

/// A copy of the mapping's address for the child. Only [`StageSlot::set`] dereferences it, and
/// only in the forked child while `spawn` runs, when the [`SharedStage`] is still alive.
#[derive(Clone, Copy)]
pub(super) struct StageSlot(NonNull<AtomicU32>);

// SAFETY: the slot is only an address of shared memory accessed atomically; it is moved into the
// `pre_exec` closure (which std requires to be Send + Sync) and only used in the child.
unsafe impl Send for StageSlot {}
// SAFETY: as above; all accesses are atomic.
unsafe impl Sync for StageSlot {}

impl StageSlot {
    /// Records `stage`: a plain atomic store, async-signal-safe and allocation-free.
    ///
    /// # Safety
    /// The [`SharedStage`] this came from must still be alive (true inside `pre_exec` during
    /// the `spawn` call it was made for).
    pub(super) unsafe fn set(self, stage: u32) {
        // SAFETY: the caller guarantees the mapping is alive.
        unsafe { self.0.as_ref() }.store(stage, Ordering::SeqCst);
    }
}
